"""Per-round ratios of a cnaf(7)_paired.py log grouped by the round's DRAM probe (seventh session).

    python benchmarks/cpu/seventh-e2e/bands.py LOG [LOG ...]

For each round line: min of its two probe readings -> band (< 45, 45-55, 55-65, >= 65 GB/s); per band the
round count and the medians of (variant tok/s / the fastest torch int4 variant of the round) for the
nybble variants (the same per-round ratio cnaf_paired.py prints, only grouped by probe band instead of
its fast / slow / mixed labels).
"""
import re
import statistics
import sys

BANDS = [(0, 45), (45, 55), (55, 65), (65, 1e9)]
for path in sys.argv[1:]:
    rows = []
    for line in open(path):
        if not re.match(r"round\s+\d+ probe", line):
            continue
        m = re.search(r"probe\s+([\d.]+)/\s*([\d.]+)", line)
        vals = dict((n, float(v)) for n, v in re.findall(r"(\S+\+\S*)\s+([\d.]+)", line.split("|", 1)[1]))
        rows.append((min(float(m.group(1)), float(m.group(2))), vals))
    print(path)
    for lo, hi in BANDS:
        sel = [v for p, v in rows if lo <= p < hi]
        if not sel:
            continue
        ti4 = [n for n in sel[0] if n.startswith("torch_int4")]
        out = []
        for n in sel[0]:
            if n.startswith("nybble"):
                out.append(f"{n} {statistics.median(v[n] / max(v[t] for t in ti4) for v in sel):.2f}x")
        best = statistics.median(max(v[t] for t in ti4) for v in sel)
        print(f"  min probe {lo:>3}-{hi if hi < 1e9 else '':<3} GB/s: {len(sel):3d} rounds, best torch int4 {best:5.1f} tok/s; "
              + ", ".join(out))
