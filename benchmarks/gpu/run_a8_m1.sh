#!/bin/bash
# Twelfth session: the A8W4 M = 1 ablation / variants (ablate_a8_m1.py; CASES overrides its --cases) and,
# with NCU=1, Nsight Compute of A16W4 / A8W4 at M = 1 (profile_a8_m1.py).
# Usage (repo root, GPU machine): OUT=... [CASES=...] [V=name] bash benchmarks/gpu/run_a8_m1.sh
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"; V=${V:-1}
export PYTHONPATH=$PWD/src:$PWD/benchmarks/gpu PYTHONUNBUFFERED=1 TRITON_CACHE_DIR=/tmp/triton-cache NYBBLE_CACHE_DIR=/tmp/nybble-cache
nvidia-smi --query-gpu=name,clocks.sm --format=csv,noheader
python3 benchmarks/gpu/ablate_a8_m1.py --out $OUT/ablate$V.csv --shapes ${SHAPES:-4096x4096,14336x4096,4096x14336} \
  ${CASES:+--cases $CASES} 2>&1 | tee $OUT/ablate$V.log | grep -v "^  skip"
if [[ -n ${NCU:-} ]]; then
  for s in "4096 4096" "14336 4096"; do set -- $s
    K=$1 N=$2 timeout 200 ncu --section SpeedOfLight --section MemoryWorkloadAnalysis --section WarpStateStats \
      --section SourceCounters --section Occupancy --section LaunchStats -k regex:mma_gemv -c 4 \
      python3 benchmarks/gpu/profile_a8_m1.py > $OUT/ncu_a8_m1_${1}x${2}.txt 2>&1
    grep -E "mma_gemv|Duration|DRAM Throughput|Registers Per|Achieved Occ|L2 Cache Throughput" $OUT/ncu_a8_m1_${1}x${2}.txt | head -40
  done
fi
