set -u
export PYTHONPATH=$PWD/src:${PYTHONPATH:-} PYTHONUNBUFFERED=1 TRITON_CACHE_DIR=/tmp/triton-cache NYBBLE_CACHE_DIR=/tmp/nybble-cache
mkdir -p $OUT/bench
t0=$(date +%s)
timeout 200 python3 -m nybble.bench.gpu --out-dir $OUT/bench > $OUT/bench.log 2>&1
echo "bench rc $? took $(( $(date +%s) - t0 )) s"; grep -E "one-pass|a16 .*%" $OUT/bench.log | head -12
t0=$(date +%s)
timeout 30 true
timeout 360 python3 -m pytest -v -p no:cacheprovider -p no:benchmark -n 16 tests/gpu -k "(test_triton_kernels and not a8) or test_table_choice_is_kept" -rfE > $OUT/pytest2.log 2>&1
grep -E "FAILED|ERROR" $OUT/pytest2.log | head -20; tail -n 2 $OUT/pytest2.log
echo "tests took $(( $(date +%s) - t0 )) s"
