#!/bin/bash
# One call on the lent GPU machine for the large-M GEMMs: their kernel tests, then sweep_gemm.py.
# Usage (repo root):  OUT=... [TESTS=...] [SWEEP_ARGS=...] bash benchmarks/gpu/run_gemm.sh
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
export PYTHONPATH=$PWD/src:$PYTHONPATH PYTHONUNBUFFERED=1 TRITON_CACHE_DIR=/tmp/triton-cache
export NYBBLE_CACHE_DIR=/tmp/nybble-cache
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,temperature.gpu,power.draw --format=csv,noheader
t0=$(date +%s)
if [[ ${TESTS:-x} != none ]]; then
  timeout ${TEST_TIMEOUT:-240} python3 -m pytest -q -p no:cacheprovider -n ${NJOBS:-16} ${TESTS:-tests/gpu/test_triton_gemm.py} -rfE -x \
      2>&1 | tee "$OUT/pytest_gemm.log" | grep -E "passed|failed|FAILED|ERROR|Error" | tail -n 20
  echo "tests took $(( $(date +%s) - t0 )) s"
fi
timeout ${SWEEP_TIMEOUT:-420} python3 benchmarks/gpu/sweep_gemm.py --out "$OUT/sweep_gemm.csv" --table "$OUT/tuned_gemm.json" \
    ${SWEEP_ARGS:-} 2>&1 | tee "$OUT/sweep_gemm.log" | grep -v "^  skip" | tail -n 60
echo "total $(( $(date +%s) - t0 )) s"
if [[ -n ${PROFILE:-} ]]; then  # Nsight Compute on the large-M kernels (profile_gemm.py)
  timeout ${PROFILE_TIMEOUT:-150} ncu --section SpeedOfLight --section ComputeWorkloadAnalysis --section WarpStateStats \
      --section LaunchStats --section Occupancy --section MemoryWorkloadAnalysis -k regex:"a8w4_gemm|a16w4_kernel" -s 2 -c 2 \
      --metrics "regex:smsp__average_warps_issue_stalled_.*_per_issue_active\.ratio,regex:sm__pipe_.*tensor.*_cycles_active\.avg\.pct_of_peak_sustained_active,regex:sm__inst_executed_pipe_.*gmma.*\.sum" \
      python3 benchmarks/gpu/profile_gemm.py > "$OUT/ncu_gemm.txt" 2>&1
  grep -E "a8w4_gemm|a16w4_kernel|stalled|tensor|gmma|Throughput|Achieved Occupancy|Registers Per|Duration|Stall|Issued Ipc|Issue Slots|No Eligible|One or More|Pipe|Theoretical Occ|Block Limit" "$OUT/ncu_gemm.txt" | head -n 80
fi
