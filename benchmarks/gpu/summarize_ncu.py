"""Summarise ``profile_targets.sh``'s Nsight Compute CSVs (one file per target, ``--csv --metrics``'s long
format with ``--print-units base``: one row per kernel launch and metric; durations in ns, bytes in
bytes) as one markdown table, a row per profiled kernel.

    python3 benchmarks/gpu/summarize_ncu.py OUT/ncu/*.csv
"""
import csv
import sys
from pathlib import Path

STALL = "smsp__average_warps_issue_stalled_"


def _num(v: str) -> float:
    try:
        return float(v.replace(",", ""))
    except ValueError:
        return float("nan")


def kernels(path: Path) -> list[tuple[str, dict[str, float]]]:
    """The kernels of one CSV in launch order: (name, {metric: value})."""
    lines = [ln for ln in path.read_text().splitlines() if ln.startswith('"')]
    out: dict[str, tuple[str, dict[str, float]]] = {}
    for r in csv.DictReader(lines):
        key = r.get("ID", "")
        name = r.get("Kernel Name", "?")
        out.setdefault(key, (name, {}))[1][r["Metric Name"]] = _num(r["Metric Value"])
    return [out[k] for k in sorted(out, key=lambda s: int(s) if s.isdigit() else 0)]


def row(target: str, name: str, m: dict[str, float]) -> str:
    tensor = max((v for k, v in m.items() if k.startswith("sm__pipe_tensor_op_")), default=float("nan"))
    stalls = sorted(((k[len(STALL):].split("_per_issue")[0], v) for k, v in m.items() if k.startswith(STALL)),
                    key=lambda kv: -kv[1])[:3]
    short = name.split("(")[0][:28]
    act = m.get("sm__cycles_active.avg", 0) / max(m.get("sm__cycles_elapsed.avg", 1), 1)
    return (f"| {target} | {short} | {m.get('gpu__time_duration.sum', 0) / 1e3:.1f} | "
            f"{m.get('dram__throughput.avg.pct_of_peak_sustained_elapsed', 0):.0f} | "
            f"{m.get('dram__bytes_read.sum', 0) / 1e6:.1f} | {m.get('lts__t_bytes.sum', 0) / 1e6:.0f} | "
            f"{100 * act:.0f} | {m.get('smsp__issue_active.avg.pct_of_peak_sustained_active', 0):.0f} | "
            f"{tensor:.0f} | {m.get('sm__warps_active.avg.pct_of_peak_sustained_active', 0):.0f} | "
            f"{m.get('launch__registers_per_thread', 0):.0f} | {m.get('launch__grid_size', 0):.0f} x "
            f"{m.get('launch__block_size', 0):.0f} | {m.get('launch__waves_per_multiprocessor', 0):.2f} | "
            + ", ".join(f"{k} {v:.2f}" for k, v in stalls) + " |")


def main(paths: list[str]) -> None:
    print("| target | kernel | us | DRAM % of peak | DRAM read MB | L2 MB | SM active % of elapsed | issue "
          "slots busy % | tensor pipe % | warps active % | regs | grid x block | waves | top stalls (cycles "
          "per issue) |")
    print("|" + "---|" * 14)
    for p in paths:
        path = Path(p)
        ks = kernels(path)
        if not ks:
            print(f"| {path.stem} | (no kernel profiled) |" + " |" * 12)
        for name, m in ks:
            print(row(path.stem, name, m))


if __name__ == "__main__":
    main(sys.argv[1:])
