# Sourced by the GPU-machine run scripts (repo root): the output folder $OUT (default /tmp/out), the
# package and the sweep helpers on PYTHONPATH, Triton's and nybble's caches in /tmp, and the GPU's name and
# clocks in $OUT/env.txt.
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
export PYTHONPATH=$PWD/src:$PWD/benchmarks/gpu:${PYTHONPATH:-} PYTHONUNBUFFERED=1 TRITON_CACHE_DIR=/tmp/triton-cache
export NYBBLE_CACHE_DIR=/tmp/nybble-cache
nvidia-smi --query-gpu=name,clocks.sm,clocks.mem --format=csv > "$OUT/env.txt" 2>&1
