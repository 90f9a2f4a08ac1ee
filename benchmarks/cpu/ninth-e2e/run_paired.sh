#!/usr/bin/env bash
# One run of default_cnaf9_paired.py with its times and load recorded (ninth session).
#   bash benchmarks/cpu/ninth-e2e/run_paired.sh LOGNAME [harness args...]
set -u
cd "$(dirname "$0")/../../.."
log="benchmarks/cpu/ninth-e2e/logs/$1.log"; shift
{
  echo "command: python benchmarks/cpu/ninth-e2e/default_cnaf9_paired.py $*"
  echo "env: NYBBLE_CPU_SHIM=${NYBBLE_CPU_SHIM-<unset>} NYBBLE_CPU_SHIM_DIR=${NYBBLE_CPU_SHIM_DIR-<unset>}"
  echo "start $(date -u +%H:%M:%S) UTC, uptime: $(uptime)"
  start=$(date +%s)
  /work/venv/bin/python benchmarks/cpu/ninth-e2e/default_cnaf9_paired.py "$@"
  echo "exit $? after $(( $(date +%s) - start )) s; end $(date -u +%H:%M:%S) UTC, uptime: $(uptime)"
} > "$log" 2>&1
