#!/bin/bash
# Per-instruction (SASS) warp-stall samples of the A8W4 / A16W4 M = 1 GEMVs (GPU machine, twelfth session):
# Nsight Compute's source page of profile_a8_m1.py's launches, as CSV, plus the 40 most-sampled instructions.
# Usage (repo root): OUT=... [K=4096 N=4096] bash benchmarks/gpu/ncu_source_a8_m1.sh
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"; K=${K:-4096}; N=${N:-4096}
export PYTHONPATH=$PWD/src PYTHONUNBUFFERED=1 TRITON_CACHE_DIR=/tmp/triton-cache NYBBLE_CACHE_DIR=/tmp/nybble-cache
K=$K N=$N timeout 240 ncu --set full -k regex:mma_gemv -c 4 -f -o "$OUT/a8m1_${K}x${N}" \
    python3 benchmarks/gpu/profile_a8_m1.py > "$OUT/ncu_run_${K}x${N}.log" 2>&1
tail -3 "$OUT/ncu_run_${K}x${N}.log"
for id in 1 3; do  # launch 1: A16W4 (second call), 3: A8W4 (second call)
  ncu -i "$OUT/a8m1_${K}x${N}.ncu-rep" --page source --csv --print-source sass --launch-skip $id --launch-count 1 \
      > "$OUT/sass_${K}x${N}_launch$id.csv" 2> "$OUT/sass_${K}x${N}_launch$id.err" \
    || ncu -i "$OUT/a8m1_${K}x${N}.ncu-rep" --page source --csv --print-source sass > "$OUT/sass_${K}x${N}_all.csv" 2>&1
  python3 - "$OUT/sass_${K}x${N}_launch$id.csv" <<'PY'
import csv, sys
lines = open(sys.argv[1]).read().splitlines()
rows = list(csv.DictReader(lines[1:]))  # line 1: "Kernel Name", the kernel
key = "Warp Stall Sampling (All Samples)"
num = lambda v: float(v.replace(",", "")) if v not in ("", "-", None) else 0.0
tot = sum(num(r[key]) for r in rows) or 1.0
hm = [i for i, r in enumerate(rows) if "HMMA" in r["Source"]]
print(sys.argv[1], "samples", tot)
for name, rg in (("before the first HMMA", range(0, hm[0])), ("first..last HMMA", range(hm[0], hm[-1] + 1)),
                 ("after the last HMMA", range(hm[-1] + 1, len(rows)))):
    reasons = {}
    for i in rg:
        for c in rows[i]:
            if c.startswith("stall_") and "Not Issued" not in c:
                reasons[c[6:]] = reasons.get(c[6:], 0) + num(rows[i][c])
    top = sorted(reasons.items(), key=lambda kv: -kv[1])[:4]
    print(f"  {name:22s} {sum(num(rows[i][key]) for i in rg) / tot * 100:5.1f}%",
          [(k, round(v / tot * 100, 1)) for k, v in top])
for i in sorted(sorted(range(len(rows)), key=lambda i: -num(rows[i][key]))[:15]):
    print(f"  {i:4d} {num(rows[i][key]) / tot * 100:5.1f}%  {rows[i]['Source'].strip()[:80]}")
PY
done
