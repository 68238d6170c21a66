#!/bin/bash
# Submit the sampling array and the dependent merge-and-FID job with the same settings:
#   CONFIG=lsun_church CACHE_INTERVAL=2 REFERENCE=checkpoints/church_stats.npz scripts/slurm/submit.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
mkdir -p logs
export CONFIG CACHE_INTERVAL NUM_SAMPLES OUTDIR EXTRA_ARGS REFERENCE
job=$(sbatch --parsable --export=ALL scripts/slurm/sample_array.sbatch)
sbatch --dependency="afterok:${job}" --export=ALL scripts/slurm/merge_fid.sbatch
echo "sampling array ${job}; FID runs after it"
