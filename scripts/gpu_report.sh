#!/bin/bash
# Every GPU check and benchmark of the project, in one run (at most 9.5 minutes: give it 590 s).
#   OUT=results/gpu scripts/gpu_report.sh
# Writes device.txt, log.txt, fastpaths_*.json and bench_*.{json,md} into $OUT: eight files (steps
# that time out leave the others' results intact).
set -uo pipefail
OUT=${OUT:-results/gpu}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
cd "$(dirname "$0")/.."
exec > >(tee "$OUT/log.txt") 2>&1
{
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())"
} > "$OUT/device.txt" 2>&1
cat "$OUT/device.txt"
step() { local start=$SECONDS; echo "== $1"; shift; "$@"; local rc=$?; echo "   ($((SECONDS - start)) s, exit $rc)"; }

# 1. Fast paths against eager fp32 (random weights); a whole-run graph also against its own loop.
#    (reduce-overhead, eager fp16 and bf16 were checked in results/gpu_h100/.)
step "fast paths, CIFAR-10 U-Net, batch 64" timeout 90 python3 scripts/check_fast_paths.py --config cifar10 \
  --device cuda --batch-size 64 --branches 0 --variants eager:fp16:graph,default:fp16:cl:graph \
  --out "$OUT/fastpaths_cifar10.json"
step "fast paths, LDM-4-G U-Net, batch 2" timeout 45 python3 scripts/check_fast_paths.py --config cin256-v2 \
  --device cuda --batch-size 2 --branches 0 --variants eager:fp16:cl:graph --out "$OUT/fastpaths_cin256.json"

# 2. CIFAR-10 architecture, batch 64, shallowest branch, N = 5, 100 quad DDIM steps.
step "benchmark CIFAR-10 b64" timeout 120 python3 scripts/benchmark.py --config cifar10 --random-init --device cuda \
  --batch-size 64 --intervals 5 --branches 0 --repeats 3 \
  --variants eager:fp32,eager:fp16:graph,default:fp16:graph,default:fp16:cl:graph --out "$OUT/bench_cifar10_b64"

# 3. LDM-4-G, batch 16 with guidance 1.5, N = 5 and 10, 250 DDIM steps (loop overhead: see results/gpu_h100/).
#    The tables are rewritten after each variant, so a time-out during compilation keeps the others.
step "benchmark LDM-4-G b16" timeout 300 python3 scripts/benchmark.py --config cin256-v2 --random-init --device cuda \
  --batch-size 16 --intervals 5,10 --branches 0 --repeats 1 --no-overhead \
  --variants eager:fp32,eager:fp16:cl:graph,default:fp16:cl:graph --out "$OUT/bench_cin256_b16"
