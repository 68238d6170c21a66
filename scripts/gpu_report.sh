#!/bin/bash
# Every GPU check and benchmark of the project, in one run (about 10 minutes on an H100).
#   OUT=results/gpu scripts/gpu_report.sh
# Writes device.txt, fastpaths_*.json, bench_*.{json,md} and log.txt into $OUT.
set -uo pipefail
OUT=${OUT:-results/gpu}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
cd "$(dirname "$0")/.."
{
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())"
} > "$OUT/device.txt" 2>&1
cat "$OUT/device.txt"
step() { local start=$SECONDS; echo "== $1"; shift; "$@"; local rc=$?; echo "   ($((SECONDS - start)) s, exit $rc)"; }

# 1. Fast paths against eager fp32 (random weights; compiled graphs land in the inductor cache).
step "fast paths, CIFAR-10 U-Net, batch 64" timeout 200 python3 scripts/check_fast_paths.py --config cifar10 \
  --device cuda --batch-size 64 --branches 0 --variants eager:fp16,eager:bf16,reduce-overhead:fp16 \
  --out "$OUT/fastpaths_cifar10.json"
step "fast paths, LDM-4-G U-Net, batch 2" timeout 90 python3 scripts/check_fast_paths.py --config cin256-v2 \
  --device cuda --batch-size 2 --branches 0 --variants eager:fp16,eager:bf16 --out "$OUT/fastpaths_cin256.json"

# 2. CIFAR-10 architecture, batch 64, shallowest branch, N = 5, 100 quad DDIM steps.
step "benchmark CIFAR-10 b64" timeout 200 python3 scripts/benchmark.py --config cifar10 --random-init --device cuda \
  --batch-size 64 --intervals 5 --branches 0 --variants eager:fp32,eager:fp16,reduce-overhead:fp16 --repeats 3 \
  --out "$OUT/bench_cifar10_b64"

# 3. LDM-4-G, batch 16 with guidance 1.5, N = 5 and 10, 250 DDIM steps.
step "benchmark LDM-4-G b16" timeout 260 python3 scripts/benchmark.py --config cin256-v2 --random-init --device cuda \
  --batch-size 16 --intervals 5,10 --branches 0 --variants eager:fp32,eager:fp16 --repeats 2 \
  --out "$OUT/bench_cin256_b16"
