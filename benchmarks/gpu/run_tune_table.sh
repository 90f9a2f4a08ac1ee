#!/bin/bash
# One call on the lent GPU machine: optionally GPU tests (TESTS, a pytest selection; KEXPR narrows it),
# then tune_table.py for each "SHAPES|MS" run in RUNS (space-separated; each gets its own table / CSV / log).
# Usage (repo root):
#   OUT=$OUT [TESTS="tests/gpu/test_bench_gpu.py"] [KEXPR=..] RUNS="4096x1024,8192x1024|1,2,4 4096x4096|256,1024" \
#       [BUDGET=300] bash benchmarks/gpu/run_tune_table.sh
source benchmarks/gpu/device_env.sh
if [[ -n ${TESTS:-} ]]; then
  t0=$(date +%s)
  timeout ${TEST_TIMEOUT:-240} python3 -m pytest -v -p no:cacheprovider -p no:benchmark -n 16 $TESTS \
      ${KEXPR:+-k "$KEXPR"} -rfE > "$OUT/pytest.log" 2>&1
  grep -E "FAILED|ERROR" "$OUT/pytest.log" | head -n 30; tail -n 2 "$OUT/pytest.log"
  echo "$(grep -c " PASSED" "$OUT/pytest.log") passed, $(grep -c " FAILED" "$OUT/pytest.log") failed lines;" \
       "tests took $(( $(date +%s) - t0 )) s"
fi
i=0
for run in ${RUNS:-}; do
  i=$((i + 1))
  timeout ${RUN_TIMEOUT:-400} python3 benchmarks/gpu/tune_table.py --shapes "${run%%|*}" --m "${run##*|}" \
      --out "$OUT/table$i.json" --csv "$OUT/tune$i.csv" --budget-s ${BUDGET:-300} > "$OUT/tune$i.log" 2>&1
  grep -v "^   " "$OUT/tune$i.log" | tail -n 60
done
