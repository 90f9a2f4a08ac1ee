#!/bin/bash
# Nsight Compute metrics of every kernel behind a missed issue-6 target (GPU machine, sixteenth session):
# one `profile_targets.py` process per target (table configs, the call `nybble bench gpu` times), clocks
# left as the benchmark runs them (--clock-control none), caches flushed before each replay (ncu's
# default), then one markdown table (`summarize_ncu.py`).
# Usage (repo root): OUT=... [TARGETS="a16m1_14336x4096 read_14336x4096 ..."] bash benchmarks/gpu/profile_targets.sh
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT/ncu"
export PYTHONPATH=$PWD/src PYTHONUNBUFFERED=1 TRITON_CACHE_DIR=/tmp/triton-cache NYBBLE_CACHE_DIR=/tmp/nybble-cache
# every missed target's kernels, next to what it is measured against (the read probe, cuBLAS)
TARGETS=${TARGETS:-"a16m1_4096x4096 a16m1_4096x14336 a16m1_14336x4096 a16m1_8192x28672
  read_4096x14336 read_14336x4096 read_8192x28672 a8m1_4096x4096 a8m1_4096x14336 a8m1_14336x4096
  a8m2048_4096x4096 a8m2048_4096x14336 a8m2048_14336x4096 a8m2048_8192x28672 cublas_4096x4096 cublas_14336x4096
  cublas_8192x28672 a16m512_4096x4096 a16m512_14336x4096 cublas512_4096x4096 cublas512_14336x4096
  a16m2048_4096x14336 cublas_4096x14336"}
METRICS="gpu__time_duration.sum,dram__throughput.avg.pct_of_peak_sustained_elapsed,dram__bytes_read.sum,\
dram__bytes_write.sum,lts__t_bytes.sum,sm__throughput.avg.pct_of_peak_sustained_elapsed,sm__cycles_active.avg,\
sm__cycles_elapsed.avg,smsp__issue_active.avg.pct_of_peak_sustained_active,\
sm__warps_active.avg.pct_of_peak_sustained_active,smsp__inst_executed.sum,launch__registers_per_thread,\
launch__grid_size,launch__block_size,launch__waves_per_multiprocessor,\
regex:sm__pipe_tensor_op_.*_cycles_active\.avg\.pct_of_peak_sustained_active,\
regex:smsp__average_warps_issue_stalled_.*_per_issue_active\.ratio"
for t in $TARGETS; do
  M=${t%%_*}; CM=2048; [ "$M" = cublas512 ] && CM=512
  TARGET=${t/cublas512/cublas} CUBLAS_M=$CM timeout ${PROFILE_TIMEOUT:-90} ncu --profile-from-start off --clock-control none \
    --csv --print-units base --metrics "$METRICS" python3 benchmarks/gpu/profile_targets.py > "$OUT/ncu/$t.csv" 2> "$OUT/ncu/$t.err"
  echo "$t rc=$? $(grep -c '"' "$OUT/ncu/$t.csv") rows"
done
python3 benchmarks/gpu/summarize_ncu.py $(for t in $TARGETS; do echo "$OUT/ncu/$t.csv"; done) | tee "$OUT/ncu_targets.md"
tar czf "$OUT/ncu_csv.tgz" -C "$OUT" ncu && rm -rf "$OUT/ncu"  # the device returns at most 8 files
