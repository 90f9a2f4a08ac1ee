"""Device-neutral benchmark helpers: timing with a time budget, weight rotation, result tables.

Used by :mod:`nybble.bench.cpu`, :mod:`nybble.bench.e2e_cpu` and the GPU benchmark. Nothing here
touches a device: callers pass a ``sync`` callable (e.g. ``torch.cuda.synchronize``) when the work
is asynchronous.

Conventions: times are microseconds (``*_us``); bandwidths GB/s with GB = 1e9 bytes; sizes in bytes.
"""
from __future__ import annotations

import csv
import datetime as _dt
import math
import os
import platform
import statistics
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

# ---------------------------------------------------------------------------------------------
# timing
# ---------------------------------------------------------------------------------------------


@dataclass
class Timing:
    """Per-call wall times of one benchmark cell, in microseconds (warm-up calls excluded).

    ``next_index``: the rotation index after the last call; ``estimate_s``: the slowest warm-up
    call in seconds (pass both to a later :func:`time_calls` to continue the same cell)."""

    samples_us: list[float] = field(default_factory=list)
    next_index: int = 0
    estimate_s: float = 0.0

    @property
    def n(self) -> int:
        return len(self.samples_us)

    @property
    def median_us(self) -> float:
        return statistics.median(self.samples_us)

    @property
    def min_us(self) -> float:
        return min(self.samples_us)

    def quantile_us(self, q: float) -> float:
        """Nearest-rank quantile ``q`` in [0, 1]."""
        s = sorted(self.samples_us)
        return s[min(len(s) - 1, max(0, math.ceil(q * len(s)) - 1))]

    def extend(self, other: "Timing") -> "Timing":
        """Append ``other``'s samples (a later round of the same cell)."""
        self.samples_us.extend(other.samples_us)
        self.next_index = other.next_index
        self.estimate_s = max(self.estimate_s, other.estimate_s)
        return self


def time_calls(fn: Callable[[int], object], *, budget_s: float = 1.0, min_reps: int = 3,
               max_reps: int = 50, warmup: int = 1, sync: Callable[[], None] | None = None,
               start: int = 0, estimate_s: float | None = None,
               clock: Callable[[], float] = time.perf_counter) -> Timing:
    """Time ``fn(i)`` call by call; ``i`` counts up from ``start`` (use it to rotate weight copies).

    Runs ``warmup`` untimed calls, then as many timed calls as fit in ``budget_s`` (estimated from
    the slowest warm-up call, or ``estimate_s`` when given), clamped to ``[min_reps, max_reps]``.
    Slow cells thus get ``min_reps`` calls and fast ones up to ``max_reps``. ``warmup=0`` is allowed
    only with ``estimate_s``. ``sync`` is called after every call (before the clock stops) for
    asynchronous devices.
    """
    if min_reps < 1 or max_reps < min_reps:
        raise ValueError(f"need 1 <= min_reps <= max_reps, got min_reps={min_reps} max_reps={max_reps}")
    if warmup < 1 and estimate_s is None:
        raise ValueError("warmup=0 needs estimate_s (the expected seconds per call)")
    i = start
    est = 0.0
    for _ in range(warmup):
        t0 = clock()
        fn(i)
        if sync is not None:
            sync()
        est = max(est, clock() - t0)
        i += 1
    if estimate_s is not None:
        est = max(est, estimate_s) if warmup else estimate_s
    reps = int(budget_s / est) if est > 0 else max_reps
    reps = max(min_reps, min(max_reps, reps))
    out = Timing(estimate_s=est)
    for _ in range(reps):
        t0 = clock()
        fn(i)
        if sync is not None:
            sync()
        out.samples_us.append((clock() - t0) * 1e6)
        i += 1
    out.next_index = i
    return out


def copies_for(bytes_per_copy: int, cache_bytes: int, factor: float = 4.0, min_copies: int = 2,
               max_copies: int = 256) -> int:
    """How many copies of a ``bytes_per_copy`` operand to rotate through so that together they
    exceed ``factor`` x ``cache_bytes`` (so each call reads its operand from DRAM, not cache)."""
    if bytes_per_copy <= 0:
        raise ValueError(f"bytes_per_copy must be positive, got {bytes_per_copy}")
    need = math.floor(factor * cache_bytes / bytes_per_copy) + 1
    return max(min_copies, min(max_copies, need))


def gbps(nbytes: int | float, us: float) -> float:
    """Bytes moved per second in GB/s (1e9) for ``nbytes`` in ``us`` microseconds."""
    return nbytes / (us * 1e-6) / 1e9


def gflops(m: int, n: int, k: int, us: float) -> float:
    """GFLOP/s of an (M, K) x (K, N) matmul (2*M*N*K flops) taking ``us`` microseconds."""
    return 2.0 * m * n * k / (us * 1e-6) / 1e9


# ---------------------------------------------------------------------------------------------
# the machine
# ---------------------------------------------------------------------------------------------


def cpu_cache_bytes(level: int | None = None) -> int:
    """Size in bytes of CPU 0's last-level cache (or of ``level``), from sysfs, then ``lscpu``.

    Raises RuntimeError when neither source says.
    """
    base = Path("/sys/devices/system/cpu/cpu0/cache")
    best: tuple[int, int] | None = None
    for idx in sorted(base.glob("index*")):
        try:
            lvl = int((idx / "level").read_text())
            typ = (idx / "type").read_text().strip()
            size = _parse_size((idx / "size").read_text().strip())
        except (OSError, ValueError):
            continue
        if typ == "Instruction" or (level is not None and lvl != level):
            continue
        if best is None or lvl > best[0]:
            best = (lvl, size)
    if best is not None:
        return best[1]
    want = f"L{level or 3}"
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        out = ""
    for line in out.splitlines():
        if line.startswith(want):
            return _parse_size(line.split(":", 1)[1].split("(")[0].strip())
    raise RuntimeError(f"cannot read the CPU cache size ({want}) from sysfs or lscpu")


def _parse_size(text: str) -> int:
    """``"32768K"``, ``"32 MiB"``, ``"1024"`` -> bytes."""
    t = text.replace(" ", "").upper().removesuffix("B").removesuffix("I")
    mult = {"K": 2**10, "M": 2**20, "G": 2**30}
    if t and t[-1] in mult:
        return int(float(t[:-1]) * mult[t[-1]])
    return int(t)


def cpu_model_name() -> str:
    """The CPU's model name from /proc/cpuinfo (falls back to ``platform.processor()``)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def git_commit(path: str | Path | None = None) -> str:
    """Short commit of the repository holding ``path`` (default: this file), ``+dirty`` if modified."""
    cwd = Path(path or __file__).resolve().parent
    try:
        sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=cwd, capture_output=True,
                             text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd,
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return (sha or "unknown") + ("+dirty" if sha and dirty else "")


def environment() -> dict[str, str]:
    """Facts worth printing next to any result: date (UTC), CPU, load average, versions, commit."""
    import torch
    env = {
        "date_utc": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"),
        "cpu": cpu_model_name(),
        "logical_cpus": str(os.cpu_count()),
        "torch": torch.__version__,
        "torch_threads": str(torch.get_num_threads()),
        "python": platform.python_version(),
        "git_commit": git_commit(),
    }
    try:
        env["load_average"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        pass
    return env


def rss_bytes() -> tuple[int, int]:
    """``(current RSS, peak RSS since start or the last reset_peak_rss())`` of this process, bytes
    (Linux /proc/self/status VmRSS / VmHWM)."""
    cur = peak = 0
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            cur = int(line.split()[1]) * 1024
        elif line.startswith("VmHWM:"):
            peak = int(line.split()[1]) * 1024
    return cur, peak


def reset_peak_rss() -> bool:
    """Reset this process's peak RSS (VmHWM) to its current RSS (Linux ``clear_refs`` 5)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


# ---------------------------------------------------------------------------------------------
# arguments and tables
# ---------------------------------------------------------------------------------------------


def parse_int_list(text: str) -> list[int]:
    """``"1,2,4"`` -> ``[1, 2, 4]`` (ValueError naming the bad item)."""
    out = []
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        try:
            v = int(item)
        except ValueError:
            raise ValueError(f"expected a comma-separated list of integers, got {item!r} in {text!r}") from None
        if v <= 0:
            raise ValueError(f"expected positive integers, got {v} in {text!r}")
        out.append(v)
    if not out:
        raise ValueError(f"empty list {text!r}")
    return out


def parse_shapes(text: str) -> list[tuple[int, int]]:
    """``"4096x4096,4096x14336"`` -> ``[(K, N), ...]`` (K = input features, N = output features)."""
    out = []
    for item in text.split(","):
        item = item.strip().lower()
        if not item:
            continue
        parts = item.split("x")
        try:
            k, n = (int(p) for p in parts)
        except ValueError:
            raise ValueError(f"shape {item!r} must look like KxN, e.g. 4096x14336") from None
        if k <= 0 or n <= 0:
            raise ValueError(f"shape {item!r}: K and N must be positive")
        out.append((k, n))
    if not out:
        raise ValueError(f"no shapes in {text!r}")
    return out


def parse_choices(text: str, allowed: Sequence[str], what: str) -> list[str]:
    """``"a,b"`` -> ``["a", "b"]``, each checked against ``allowed`` (``"all"`` = every one)."""
    items = [s.strip() for s in text.split(",") if s.strip()]
    if items == ["all"]:
        return list(allowed)
    bad = [s for s in items if s not in allowed]
    if bad or not items:
        raise ValueError(f"unknown {what} {bad or text!r}; allowed: {', '.join(allowed)} (or 'all')")
    return items


@dataclass(frozen=True)
class Column:
    """One table column: ``key`` in the row dicts, ``title`` to print, ``fmt`` for numbers."""

    key: str
    title: str
    fmt: str = "{}"

    def render(self, row: dict) -> str:
        v = row.get(self.key)
        if v is None or (isinstance(v, float) and math.isnan(v)):
            return "-"
        try:
            return self.fmt.format(v)
        except (ValueError, TypeError):
            return str(v)


def text_table(rows: Iterable[dict], columns: Sequence[Column]) -> str:
    """Rows as an aligned plain-text table (numbers right-aligned)."""
    rows = list(rows)
    cells = [[c.title for c in columns]] + [[c.render(r) for c in columns] for r in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(columns))]
    lines = []
    for j, line in enumerate(cells):
        parts = []
        for i, cell in enumerate(line):
            num = j > 0 and _looks_numeric(cell)
            parts.append(cell.rjust(widths[i]) if num else cell.ljust(widths[i]))
        lines.append("  ".join(parts).rstrip())
        if j == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def markdown_table(rows: Iterable[dict], columns: Sequence[Column]) -> str:
    """Rows as a GitHub markdown table."""
    out = ["| " + " | ".join(c.title for c in columns) + " |",
           "|" + "|".join("---:" if c.fmt != "{}" else "---" for c in columns) + "|"]
    for r in rows:
        out.append("| " + " | ".join(c.render(r) for c in columns) + " |")
    return "\n".join(out)


def _looks_numeric(s: str) -> bool:
    try:
        float(s.rstrip("x%").replace(",", ""))
        return True
    except ValueError:
        return s == "-"


def write_csv(rows: Sequence[dict], path: str | Path, keys: Sequence[str] | None = None) -> Path:
    """Write ``rows`` (dicts) to ``path`` with a header; ``keys`` fixes the column order (default:
    every key in first-seen order). Floats are written with 6 significant digits."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if keys is None:
        keys = list(dict.fromkeys(k for r in rows for k in r))
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(keys)
        for r in rows:
            w.writerow(["" if r.get(k) is None else (f"{r[k]:.6g}" if isinstance(r[k], float) else r[k])
                        for k in keys])
    return path


def plot_grid(rows: Sequence[dict], path: str | Path, *, x: str, ys: Sequence[tuple[str, str]], panel: str,
              series: str, title: str, xlabel: str, ylabel: str, logx: bool = True, logy: bool = False,
              hline: float | None = 1.0) -> Path | None:
    """A grid of line charts saved as PNG (matplotlib, Agg backend): one column per distinct
    ``row[panel]``, one row per ``(key, subtitle)`` in ``ys``, one line per distinct ``row[series]``
    through the points ``(row[x], row[key])`` (None/NaN skipped). Returns None when matplotlib is
    missing."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.ticker import ScalarFormatter
    except ImportError:
        return None
    panels = list(dict.fromkeys(r[panel] for r in rows))
    names = list(dict.fromkeys(r[series] for r in rows))
    fig, axes = plt.subplots(len(ys), len(panels), figsize=(5.0 * len(panels) + 1, 3.4 * len(ys) + 0.6),
                             squeeze=False, sharex=True)
    markers = "os^vD<>ph*"
    for i, (key, subtitle) in enumerate(ys):
        for ax, p in zip(axes[i], panels):
            for j, name in enumerate(names):
                pts = sorted((r[x], r[key]) for r in rows if r[panel] == p and r[series] == name
                             and r.get(key) is not None and not (isinstance(r[key], float) and math.isnan(r[key])))
                if pts:
                    ax.plot([a for a, _ in pts], [b for _, b in pts], marker=markers[j % len(markers)], label=name)
            if hline is not None:
                ax.axhline(hline, color="grey", lw=0.8, ls="--")
            if logx:
                ax.set_xscale("log", base=2)
                ax.xaxis.set_major_formatter(ScalarFormatter())
            if logy:
                ax.set_yscale("log", base=2)
                ax.yaxis.set_major_formatter(ScalarFormatter())
            ax.grid(True, alpha=0.3, which="both")
            ax.set_title(f"{p}: {subtitle}", fontsize=9)
            if i == len(ys) - 1:
                ax.set_xlabel(xlabel)
        axes[i][0].set_ylabel(ylabel)
    labelled = [ax for row in axes for ax in row if ax.get_legend_handles_labels()[0]]
    if labelled:
        best = max(labelled, key=lambda ax: len(ax.get_legend_handles_labels()[0]))
        best.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
