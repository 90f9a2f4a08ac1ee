"""Shared helpers of the fourth-session paired A/B scripts (same method as ../stream-ab/ab4.py).

* ``report(label, weight_bytes, res)``: per round, each mode's time divided into the probe call of
  the same round (the DRAM regime flips within seconds); medians of those ratios, split into rounds
  whose probe read > 55 GB/s ("fast") or not ("slow").
* ``run_modes(modes, rounds)``: every mode once per round, in an order rotating by round.
* ``mk(k, n, act, dtype, copies)``: a nybble_cpu kernel and ``copies`` prepacked random weights
  (group 128, int zero points), the weight's int4 bytes.
* ``thp_copy(t)``: ``t`` copied into a 2 MiB-aligned private mapping advised for huge pages.
"""
import ctypes
import mmap
import statistics
import time

import torch


def report(label, wb, res):
    pr = res['probe']
    fast = [i for i in range(len(pr)) if wb / pr[i] / 1e9 > 55]
    slow = [i for i in range(len(pr)) if wb / pr[i] / 1e9 <= 55]
    out = [f"{label} probe med {wb / statistics.median(pr) / 1e9:.1f} GB/s ({len(fast)} fast/{len(slow)} slow rounds)"]
    for m in res:
        if m == 'probe':
            continue
        r_all = [pr[i] / res[m][i] for i in range(len(pr))]
        s = f"  {m:10s} all {100 * statistics.median(r_all):5.1f}%"
        for nm, idx in (("fast", fast), ("slow", slow)):
            if len(idx) >= 5:
                s += f" {nm} {100 * statistics.median([r_all[i] for i in idx]):5.1f}%"
        s += f"  ({wb / statistics.median(res[m]) / 1e9:.1f} GB/s)"
        out.append(s)
    print("\n".join(out), flush=True)


def run_modes(modes, rounds):
    res = {m: [] for m in modes}
    names = list(modes)
    i = 0
    for f in modes.values():
        for _ in range(3):
            f(i)
            i += 1
    for r in range(rounds):
        for m in names[r % len(names):] + names[:r % len(names)]:
            t0 = time.perf_counter()
            modes[m](i)
            res[m].append(time.perf_counter() - t0)
            i += 1
    return res


_G = torch.Generator().manual_seed(0)


def mk(k, n, act, dtype, copies):
    from nybble.bench.cpu import _random_plain
    from nybble.kernels import registry
    from nybble.kernels.base import LinearSpec
    p0 = _random_plain(n, k, 128, "int", dtype, _G)
    spec = LinearSpec.for_weight(p0, act, name="ab")
    kern = registry.choose(spec, force="nybble_cpu")(spec)
    packs = [kern.prepack(p0 if c == 0 else _random_plain(n, k, 128, "int", dtype, _G)) for c in range(copies)]
    return kern, packs, p0.nbytes()


def med(f, reps):
    ts = []
    for i in range(reps):
        t0 = time.perf_counter()
        f(i)
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


_libc = ctypes.CDLL(None)
_libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
_KEEP = []


def thp_copy(t):
    H = 2 << 20
    nbytes = t.numel() * t.element_size()
    size = (nbytes + H - 1) // H * H
    m = mmap.mmap(-1, size + H, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    base = ctypes.addressof(ctypes.c_char.from_buffer(m))
    off = (-base) % H
    _libc.madvise(base + off, size, 14)
    _KEEP.append(m)
    u = torch.frombuffer(m, dtype=torch.uint8, count=nbytes, offset=off).view(t.dtype).view(t.shape)
    u.copy_(t)
    return u
