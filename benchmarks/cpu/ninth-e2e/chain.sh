#!/usr/bin/env bash
# The ninth session's e2e sequence after default-1: default-2, the shim-off control, default-3, then the bf16-ratio
# run of nybble.bench.e2e_cpu (under the exclusive lock, with uptime before / after). Library defaults (no
# NYBBLE_CPU_SHIM, no --shim) except the control's harness argument 0.
set -u
cd "$(dirname "$0")/../../.."
H=benchmarks/cpu/ninth-e2e
bash $H/run_paired.sh default-2 20 12 0 240 1
bash $H/run_paired.sh noshim-control 20 12 0 240 1 0
bash $H/run_paired.sh default-3 20 12 0 240 1
stamp=$(date -u +%H%M)
{
  echo "command: flock -x /tmp/nybble_bench.lock python -m nybble.bench.e2e_cpu --compile 1 --attention nybble --fuse 1 --decode-tokens 48 --profile-steps 0 --out $H/e2e-default-$stamp"
  echo "start $(date -u +%H:%M:%S) UTC, uptime: $(uptime)"
  start=$(date +%s)
  flock -x /tmp/nybble_bench.lock sh -c "echo \"lock taken \$(date -u +%H:%M:%S) UTC, uptime: \$(uptime)\"; /work/venv/bin/python -m nybble.bench.e2e_cpu --compile 1 --attention nybble --fuse 1 --decode-tokens 48 --profile-steps 0 --out $H/e2e-default-$stamp; echo \"exit \$? at \$(date -u +%H:%M:%S) UTC, uptime: \$(uptime)\""
  echo "total $(( $(date +%s) - start )) s"
} > $H/logs/e2e-default-$stamp.log 2>&1
