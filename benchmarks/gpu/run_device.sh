#!/bin/bash
# One call on the lent GPU machine: environment probe, GPU tests, benchmark (+ autotuned table).
# Usage (repo root):  bash benchmarks/gpu/run_device.sh [tests|bench|all|small] [extra bench args...]
#   small: the small-M sweep (sweep_small_m.py: table configs vs the de-interleaved GEMV, winners into
#          the config cache), then the GPU tests, then the benchmark at M <= 16 with the sweep's winners
#   mma:   the Triton kernel tests, then sweep_mma.py (A16W4 mma.sync GEMV configs vs the table at M <= 16)
what=${1:-all}; shift || true
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
export PYTHONPATH=$PWD/src:$PYTHONPATH PYTHONUNBUFFERED=1 TRITON_CACHE_DIR=/tmp/triton-cache
export NYBBLE_CACHE_DIR=/tmp/nybble-cache
{ nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.mem --format=csv
  python3 -c "import torch, triton, transformers; print('torch', torch.__version__, 'triton', triton.__version__, 'transformers', transformers.__version__, torch.cuda.get_device_name(0), torch.cuda.get_device_properties(0))"
  nproc; } 2>&1 | tee "$OUT/env.txt"
if [[ $what == small ]]; then
  { cat "$OUT/env.txt"; timeout ${SWEEP_TIMEOUT:-300} python3 benchmarks/gpu/sweep_small_m.py --out "$OUT/sweep.csv" \
      --table "$OUT/tuned_small_m.json"; } 2>&1 | tee "$OUT/sweep.log" | grep -v "^  skip" | tail -n 40
  rm -f "$OUT/env.txt"
  t0=$(date +%s)
  env -u NYBBLE_CACHE_DIR timeout ${TEST_TIMEOUT:-300} python3 -m pytest -q -p no:cacheprovider -n ${NJOBS:-16} tests/gpu -rfE \
      2>&1 | tee "$OUT/pytest.log" | grep -E "passed|failed|FAILED|ERROR" | tail -n 25
  echo "tests took $(( $(date +%s) - t0 )) s"
  timeout ${BENCH_TIMEOUT:-300} python3 -m nybble.bench.gpu --m 1,2,4,8,16 --no-plot --out-dir "$OUT/bench" "$@" \
      2>&1 | tee -a "$OUT/sweep.log" | tail -n 24
fi
if [[ $what == mma ]]; then
  # A16W4 mma.sync GEMV: kernel tests (TESTS, default the Triton kernel tests), then the small-M sweep
  t0=$(date +%s)
  timeout ${TEST_TIMEOUT:-240} python3 -m pytest -q -p no:cacheprovider -n ${NJOBS:-16} ${TESTS:-tests/gpu/test_triton_kernels.py} -rfE -x \
      2>&1 | tee "$OUT/pytest.log" | grep -E "passed|failed|FAILED|ERROR|Error" | tail -n 25
  echo "tests took $(( $(date +%s) - t0 )) s"
  timeout ${SWEEP_TIMEOUT:-300} python3 benchmarks/gpu/sweep_mma.py --out "$OUT/sweep_mma.csv" --table "$OUT/tuned_mma.json" \
      ${SWEEP_ARGS:-} 2>&1 | tee "$OUT/sweep_mma.log" | grep -v "^  skip" | tail -n 40
  if [[ -n ${PROFILE:-} ]]; then  # Nsight Compute on the small-M kernels of 8192x28672
    timeout ${PROFILE_TIMEOUT:-120} ncu --section SpeedOfLight --section MemoryWorkloadAnalysis --section WarpStateStats \
        --section LaunchStats --section Occupancy -k regex:"mma_gemv|gemv_kernel" -c 6 \
        python3 benchmarks/gpu/profile_m1.py > "$OUT/ncu_small_m.txt" 2>&1
    grep -E "mma_gemv|gemv_kernel|DRAM Throughput|Compute \(SM\) Throughput|Achieved Occupancy|Registers Per|Duration|Stall Long|Issued Ipc|No Eligible|One or More" "$OUT/ncu_small_m.txt" | head -n 60
  fi
fi
if [[ $what == tests || $what == all ]]; then
  t0=$(date +%s)
  # -v: every result is logged as it completes ("[gwN] FAILED tests/...::name"), so a run cut by the
  # timeout still names its failures (the -rfE summary comes only at the very end); TESTS narrows it
  # KEXPR: a pytest -k expression, e.g. "not test_triton_kernels or a8" (the suite needs ~530 s: split it)
  timeout ${TEST_TIMEOUT:-480} python3 -m pytest -v -p no:cacheprovider -p no:benchmark -n ${NJOBS:-16} ${TESTS:-tests/gpu} \
      ${KEXPR:+-k "$KEXPR"} -rfE > "$OUT/pytest.log" 2>&1
  grep -E "FAILED|ERROR" "$OUT/pytest.log" | head -n 40; tail -n 3 "$OUT/pytest.log"
  echo "$(grep -c " PASSED" "$OUT/pytest.log") passed, $(grep -c " FAILED" "$OUT/pytest.log") failed lines"
  echo "tests took $(( $(date +%s) - t0 )) s"
fi
if [[ $what == bench || $what == all ]]; then
  timeout ${BENCH_TIMEOUT:-420} python3 -m nybble.bench.gpu --out-dir "$OUT/bench" --tune-table "$OUT/tuned_table.json" "$@" 2>&1 | tee "$OUT/bench.log"

fi
ls -la "$OUT" "$OUT/bench" 2>/dev/null
