#!/bin/bash
# One call on the lent GPU machine: some mma GEMV tests, optionally Nsight Compute on given A16W4
# configs, then the M = 1 sweep (sweep_m1_floor.py).
# Usage (repo root):
#   OUT=$OUT [KEXPR="shared_code_row"] [PROFILE="2x64x512x2x4x1 ..."] [A8=1] [SHAPES=KxN,..] \
#       [SWEEP_ARGS="--shared-codes --no-pdl --a16-table-only"] bash benchmarks/gpu/run_m1_sweep.sh
source benchmarks/gpu/device_env.sh
if [[ -n ${PROFILE:-} ]]; then  # Nsight Compute: the given A16W4 configs (8192x28672, M = 1)
  timeout ${PROFILE_TIMEOUT:-150} ncu --section SpeedOfLight --section MemoryWorkloadAnalysis --section WarpStateStats \
      --section Occupancy --section LaunchStats -k regex:mma_gemv python3 benchmarks/gpu/profile_mma_configs.py $PROFILE \
      > "$OUT/ncu_m1.txt" 2>&1
  grep -E "TileConfig|DRAM Throughput|Duration|Registers Per|Achieved Occupancy|Theoretical Occupancy|Block Limit|Issued Ipc|L1/TEX Hit|L2 Hit|Mem Busy|Max Bandwidth|Shared Memory Config" "$OUT/ncu_m1.txt" | head -n 90
fi
source benchmarks/gpu/kernel_tests.sh
if [[ -n ${KEXPR:-} ]]; then
  run_kernel_tests pytest_m1.log "$KEXPR" "${TEST_TIMEOUT:-200}"
fi
timeout ${SWEEP_TIMEOUT:-360} python3 benchmarks/gpu/sweep_m1_floor.py --out "$OUT/m1_sweep.csv" \
    ${SWEEP_ARGS:---shared-codes --no-pdl --a16-table-only} $([[ -z ${A8:-} ]] && echo --no-a8) ${SHAPES:+--shapes $SHAPES} \
    2>&1 | tee "$OUT/m1_sweep.log" | grep -v "^  skip" | tail -n 30
