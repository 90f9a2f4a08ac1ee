#!/bin/bash
# Fifteenth session, one call on the GPU machine: M = 1 sweeps of the mma GEMV with and without the scale
# words (layout.mma_scale_words, SZW) in the same process, then GPU tests (KEXPR).
# Usage (repo root): OUT=$OUT [PARTS="1 2 3 4"] [KEXPR=...] bash benchmarks/gpu/sweeps/fifteenth/run_szw.sh
source benchmarks/gpu/device_env.sh
sweep() {  # name shape [args...]
  local name=$1 shape=$2; shift 2
  timeout ${SWEEP_TIMEOUT:-200} python3 benchmarks/gpu/sweep_m1_floor.py --out "$OUT/$name.csv" --no-pdl --scale-words \
      --shapes "$shape" "$@" > "$OUT/$name.log" 2>&1
  grep -v "^  skip\|^precompiled" "$OUT/$name.log" | tail -n 5
}
for part in ${PARTS:-1 2 3 4}; do
  case $part in
  1) sweep z1_4096x4096 4096x4096 --configs 2x16x512x1x8x12289,2x16x256x1x8x12289,2x32x512x1x8x8193 \
       --a8-configs 2x128x256x8x8x2049,2x16x256x1x8x14977 ;;
  2) sweep z2_4096x14336 4096x14336 --configs 2x16x512x1x4x8193,2x16x256x1x4x8193,2x32x512x1x4x4097,2x16x512x1x8x12289 \
       --a8-configs 2x64x512x1x8x10369 ;;
  3) sweep z3_14336x4096 14336x4096 --configs 2x32x512x8x4x4097,2x32x512x7x4x4097,2x16x512x7x4x8193,2x64x512x14x4x1,2x16x512x4x8x12289 \
       --a8-configs 2x128x256x8x8x129,2x128x256x8x8x2689 ;;
  4) sweep z4_8192x28672 8192x28672 --no-a8 --configs 2x16x512x1x4x8193,2x32x512x1x4x4097,2x16x512x1x8x12289,2x16x256x1x4x8193,2x32x512x1x4x8193 ;;
  esac
done
source benchmarks/gpu/kernel_tests.sh
if [[ -n ${KEXPR:-} ]]; then
  run_kernel_tests pytest.log "$KEXPR" "${TEST_TIMEOUT:-250}"
fi
