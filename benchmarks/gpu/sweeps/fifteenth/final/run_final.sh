#!/bin/bash
# Fifteenth session, final checks on the GPU machine (repo root): OUT=$OUT bash .../run_final.sh bench|part1|kwarps
#   bench:  nybble bench gpu, then the GPU tests "(test_triton_kernels and not a8 and not k_warps) or test_table_choice_is_kept"
#   part1:  the GPU tests "not test_triton_kernels or a8"
#   kwarps: the GPU tests "k_warps or split_k_repeated"
set -u
export PYTHONPATH=$PWD/src:${PYTHONPATH:-} PYTHONUNBUFFERED=1 TRITON_CACHE_DIR=/tmp/triton-cache NYBBLE_CACHE_DIR=/tmp/nybble-cache
nvidia-smi --query-gpu=name,clocks.sm,clocks.mem --format=csv > "$OUT/env.txt" 2>&1
tests() {  # log timeout expr
  local t0=$(date +%s)
  timeout $2 python3 -m pytest -v -p no:cacheprovider -p no:benchmark -n 16 tests/gpu -k "$3" -rfE > "$OUT/$1" 2>&1
  grep -E "FAILED|ERROR" "$OUT/$1" | head -20; tail -n 1 "$OUT/$1"
  echo "tests took $(( $(date +%s) - t0 )) s"
}
case $1 in
bench)
  mkdir -p $OUT/bench
  t0=$(date +%s)
  timeout 200 python3 -m nybble.bench.gpu --out-dir $OUT/bench > $OUT/bench.log 2>&1
  echo "bench rc $? took $(( $(date +%s) - t0 )) s"; grep -E "one-pass|a16 .*%" $OUT/bench.log | head -12
  tests gpu_tests_part2.log ${T2:-330} "(test_triton_kernels and not a8 and not k_warps) or test_table_choice_is_kept" ;;
part1) tests gpu_tests_part1.log 560 "not test_triton_kernels or a8" ;;
kwarps) tests gpu_tests_kwarps.log 300 "k_warps or split_k_repeated" ;;
esac
