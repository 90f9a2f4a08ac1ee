export PYTHONPATH=$PWD/src PYTHONUNBUFFERED=1 TRITON_CACHE_DIR=/tmp/triton-cache NYBBLE_CACHE_DIR=/tmp/nybble-cache
for M in 2048 512; do
A16_M=$M A16_CFG=3x128x64x256x8x20 timeout 200 ncu --section SpeedOfLight --section WarpStateStats --section MemoryWorkloadAnalysis \
  -k regex:"wgmma" -s 1 -c 1 \
  --metrics "regex:smsp__average_warps_issue_stalled_.*_per_issue_active\.ratio,regex:sm__pipe_.*tensor.*_cycles_active\.avg\.pct_of_peak_sustained_active,regex:sm__inst_executed_pipe_.*gmma.*\.sum,smsp__issue_active.avg.pct_of_peak_sustained_active" \
  python3 benchmarks/gpu/profile_gemm.py > $OUT/ncu_wg_$M.txt 2>&1
grep -E "Duration|tensor|gmma|Throughput|stalled|issue_active" $OUT/ncu_wg_$M.txt | awk '$NF+0 > 0.05 || /Duration|Throughput|tensor/' | head -40
done
