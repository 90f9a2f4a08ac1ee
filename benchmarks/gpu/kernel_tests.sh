# Sourced by the sweep run scripts (GPU machine): run_kernel_tests LOG KEXPR TIMEOUT runs the Triton
# kernel tests matching the pytest -k expression KEXPR (16 workers, at most TIMEOUT s) into $OUT/LOG
# and prints the failures, the summary and the time taken.
run_kernel_tests() {
  local log=$1 kexpr=$2 limit=$3 t0
  t0=$(date +%s)
  timeout "$limit" python3 -m pytest -q -p no:cacheprovider -n 16 tests/gpu/test_triton_kernels.py \
      -k "$kexpr" -rfE > "$OUT/$log" 2>&1
  grep -E "FAILED|ERROR|passed|failed" "$OUT/$log" | head -n 20
  echo "tests took $(( $(date +%s) - t0 )) s"
}
