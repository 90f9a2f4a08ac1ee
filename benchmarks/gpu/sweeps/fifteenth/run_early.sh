#!/bin/bash
# Fifteenth session, one call on the GPU machine: M = 1 sweeps of the mma GEMV with each warp's first K
# tile requested before the A8W4 quantization prologue (flag 512), odd split-K counts and the register
# double buffer without its load past the slice (flag 32), against the table in the same process; parts 5-7:
# the quantization kernel + PDL GEMV (flag 64) with K warps and the early first tile.
# Usage (repo root): OUT=$OUT [PARTS="1 2 3 4"] [TESTS=1] bash benchmarks/gpu/sweeps/fifteenth/run_early.sh
source benchmarks/gpu/device_env.sh
sweep() {  # name shape [args...]
  local name=$1 shape=$2; shift 2
  timeout ${SWEEP_TIMEOUT:-200} python3 benchmarks/gpu/sweep_m1_floor.py --out "$OUT/$name.csv" --no-pdl --shapes "$shape" "$@" \
      > "$OUT/$name.log" 2>&1
  grep -v "^  skip\|^precompiled" "$OUT/$name.log" | tail -n 5
}
for part in ${PARTS:-1 2 3 4}; do
  case $part in
  1) sweep s1_4096x4096 4096x4096 --a16-table-only --a8-configs \
       2x128x256x8x8x2049,2x128x256x8x8x2561,2x16x512x1x8x14849,2x16x512x1x8x14977,2x16x512x2x4x10753,2x16x512x2x4x10881,2x32x512x1x8x10753,2x32x512x1x8x10881,2x16x256x1x8x14849,2x16x256x1x8x14977 ;;
  2) sweep s2_4096x14336 4096x14336 --a16-table-only --a8-configs \
       2x64x512x1x8x10369,2x64x512x1x8x10881,2x16x512x1x4x10753,2x16x512x1x4x10881,2x32x512x1x8x10753,2x32x512x1x8x10881,2x32x512x1x4x6785,2x16x512x1x8x14977 ;;
  3) sweep s3_14336x4096 14336x4096 --configs \
       2x32x512x8x4x4097,2x32x512x7x4x4097,2x16x512x7x4x8193,2x32x256x7x8x8193,2x32x512x14x4x4097,2x32x512x8x4x4129,2x32x512x7x4x4129,2x64x512x7x8x4097 \
       --a8-configs 2x128x256x8x8x129,2x128x256x8x8x641,2x32x512x7x4x6785,2x32x512x8x4x6785,2x128x512x8x8x6785,2x16x512x7x4x10881,2x64x512x4x8x10881,2x128x256x8x8x2689 ;;
  4) sweep s4_8192x28672 8192x28672 --no-a8 --configs 2x16x512x1x4x8193,2x16x512x1x4x8225,2x16x512x1x4x8705,2x32x512x1x4x4129 ;;
  5) sweep p5_4096x14336 4096x14336 --a16-table-only --a8-configs \
       2x64x512x1x8x10369,2x16x512x1x4x8769,2x16x512x1x4x8257,2x32x512x1x4x4673,2x16x512x1x8x12865,2x64x512x1x8x8769 ;;
  6) sweep p6_14336x4096 14336x4096 --a16-table-only --a8-configs \
       2x128x256x8x8x129,2x32x512x7x4x4673,2x32x512x8x4x4673,2x16x512x7x4x8769,2x64x512x14x4x577,2x32x512x7x4x4161 ;;
  7) sweep p7_4096x4096 4096x4096 --a16-table-only --a8-configs \
       2x16x256x1x8x14977,2x16x512x1x8x12865,2x16x256x1x8x12865,2x16x512x2x4x8769,2x32x512x1x8x8769 ;;
  esac
done
source benchmarks/gpu/kernel_tests.sh
if [[ -n ${TESTS:-} ]]; then
  run_kernel_tests pytest.log "${KEXPR:-k_warps}" "${TEST_TIMEOUT:-250}"
fi
