set -x
export PYTHONPATH=$PWD/src PYTHONUNBUFFERED=1 TRITON_CACHE_DIR=/tmp/triton-cache NYBBLE_CACHE_DIR=/tmp/nybble-cache
nvidia-smi --query-gpu=name,clocks.sm --format=csv
timeout 330 python3 benchmarks/gpu/sweep_gemm.py --ops a16wg --m ${WG_M:-64,128,512,2048} --out $OUT/sweep_wg_v5.csv 2>&1 | tee $OUT/sweep_wg_v5.log | grep -v "^  skip" | tail -80
grep "skip" $OUT/sweep_wg_v5.log | head -5
timeout 200 python3 -m pytest -q -p no:cacheprovider -n 16 tests/gpu/test_triton_wgmma.py -x -rfE -p no:benchmark 2>&1 | tail -8
