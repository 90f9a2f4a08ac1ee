#!/bin/bash
# Sixth session: Nsight Compute on the persistent stream-K wgmma GEMM against the one-tile-per-program
# kernel and split-K.  Usage (repo root): OUT=$OUT bash benchmarks/gpu/profile_streamk.sh
export PYTHONPATH=$PWD/src PYTHONUNBUFFERED=1 TRITON_CACHE_DIR=/tmp/triton-cache NYBBLE_CACHE_DIR=/tmp/nybble-cache
run() {  # name K N M config
  K=$2 N=$3 A16_M=$4 A16_CFG=$5 timeout 150 ncu --section SpeedOfLight --section MemoryWorkloadAnalysis --section WarpStateStats \
    -k regex:"wgmma" -s 1 -c 1 \
    --metrics "lts__t_sector_hit_rate.pct,dram__bytes_read.sum,smsp__issue_active.avg.pct_of_peak_sustained_active,regex:sm__pipe_.*tensor.*_cycles_active\.avg\.pct_of_peak_sustained_active" \
    python3 benchmarks/gpu/profile_gemm.py > $OUT/ncu_$1.txt 2>&1
  echo "== $1"; grep -E "Duration|DRAM Throughput|L2 Hit|hit_rate|dram__bytes|issue_active|tensor.*pct|Stall Long|Stall Barrier|Stall Wait" $OUT/ncu_$1.txt | head -12
}
for spec in ${PROFILES:-sk_14336x4096_512:14336:4096:512:3x128x64x256x8x612 split_14336x4096_512:14336:4096:512:3x128x64x256x8x228}; do
  IFS=: read -r name k n m cfg <<< "$spec"; run $name $k $n $m $cfg
done
