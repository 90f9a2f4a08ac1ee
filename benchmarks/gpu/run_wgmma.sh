#!/bin/bash
# The Gluon wgmma GEMM on the lent H100 (fifth session): its GPU tests, a sweep of its configs against
# the table at large M (sweep_gemm.py --ops a16wg), and with BENCH=1 the benchmark with the sweep's
# winners in the config cache.  Usage (repo root):  OUT=$OUT [WG_M=512,2048] [V=v6] [BENCH=1] bash benchmarks/gpu/run_wgmma.sh
export PYTHONPATH=$PWD/src PYTHONUNBUFFERED=1 TRITON_CACHE_DIR=/tmp/triton-cache NYBBLE_CACHE_DIR=/tmp/nybble-cache
V=${V:-v6}
nvidia-smi --query-gpu=name,clocks.sm --format=csv,noheader
timeout ${TEST_TIMEOUT:-200} python3 -m pytest -q -p no:cacheprovider -p no:benchmark -n 16 tests/gpu/test_triton_wgmma.py -rfE \
    > $OUT/gpu_tests_wgmma_$V.log 2>&1; tail -n 3 $OUT/gpu_tests_wgmma_$V.log
timeout ${SWEEP_TIMEOUT:-200} python3 benchmarks/gpu/sweep_gemm.py --ops a16wg --m ${WG_M:-64,128,512,2048} \
    --out $OUT/sweep_wg_$V.csv --table $OUT/tuned_wg_$V.json > $OUT/sweep_wg_$V.log 2>&1
sed -n '/best per key/,$p' $OUT/sweep_wg_$V.log
if [[ -n ${BENCH:-} ]]; then
  mkdir -p $NYBBLE_CACHE_DIR/triton
  python3 -c "import json,sys; t=json.load(open('$OUT/tuned_wg_$V.json')); json.dump({'gpu': 'nvidia_h100_80gb_hbm3', 'configs': t['configs']}, open('$NYBBLE_CACHE_DIR/triton/nvidia_h100_80gb_hbm3.json', 'w'))"
  timeout ${BENCH_TIMEOUT:-200} python3 -m nybble.bench.gpu --out-dir $OUT/bench > $OUT/bench.log 2>&1
  grep -E "M=  512|M= 2048" $OUT/bench.log | cut -c1-140; rm -f $OUT/bench/meta.json $OUT/tuned_wg_$V.json
fi
