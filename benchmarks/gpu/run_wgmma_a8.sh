#!/bin/bash
# The A8W4 Gluon int8 wgmma GEMM on the lent H100 (seventh session): its GPU tests, a sweep of its
# configs against the table (sweep_gemm.py --ops a8wg), and with BENCH=1 the benchmark with the
# sweep's winners in the config cache.  Usage (repo root):
#   OUT=$OUT [A8_M=128,512,2048] [V=v1] [BENCH=1] [TESTS=tests/gpu/test_triton_wgmma_a8.py] bash benchmarks/gpu/run_wgmma_a8.sh
export PYTHONPATH=$PWD/src PYTHONUNBUFFERED=1 TRITON_CACHE_DIR=/tmp/triton-cache NYBBLE_CACHE_DIR=/tmp/nybble-cache
V=${V:-v1}
nvidia-smi --query-gpu=name,clocks.sm --format=csv,noheader
if [[ -n ${TESTS-tests/gpu/test_triton_wgmma_a8.py} ]]; then
  timeout ${TEST_TIMEOUT:-200} python3 -m pytest -q -p no:cacheprovider -p no:benchmark -n 16 \
      ${TESTS:-tests/gpu/test_triton_wgmma_a8.py} -rfE -x > $OUT/gpu_tests_wgmma_a8_$V.log 2>&1
  tail -n 25 $OUT/gpu_tests_wgmma_a8_$V.log | cut -c1-400
fi
timeout ${SWEEP_TIMEOUT:-240} python3 benchmarks/gpu/sweep_gemm.py --ops a8wg --m ${A8_M:-128,512,2048} \
    --out $OUT/sweep_a8wg_$V.csv --table $OUT/tuned_a8wg_$V.json > $OUT/sweep_a8wg_$V.log 2>&1
grep -E "K=|a8_table|a8_wg" $OUT/sweep_a8wg_$V.log | head -120 | cut -c1-110
sed -n '/best per key/,$p' $OUT/sweep_a8wg_$V.log
if [[ -n ${BENCH:-} ]]; then
  mkdir -p $NYBBLE_CACHE_DIR/triton
  python3 -c "import json,sys; t=json.load(open('$OUT/tuned_a8wg_$V.json')); json.dump({'gpu': 'nvidia_h100_80gb_hbm3', 'configs': t['configs']}, open('$NYBBLE_CACHE_DIR/triton/nvidia_h100_80gb_hbm3.json', 'w'))"
  timeout ${BENCH_TIMEOUT:-200} python3 -m nybble.bench.gpu --out-dir $OUT/bench > $OUT/bench.log 2>&1
  grep -E "M=  512|M= 2048" $OUT/bench.log | cut -c1-140; rm -f $OUT/bench/meta.json
fi
