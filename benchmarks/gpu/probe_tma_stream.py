"""Go / no-go probe for a TMA-pipelined M = 1 GEMV (issue 6: A16W4 at M = 1 >= 90% of the one-pass read).

Question: can a Gluon kernel whose loader warp streams the blocked weight words through a ring of
shared-memory slots (TMA + mbarriers, no registers held by loads in flight) read the packed bytes of
a layer faster than the benchmark's one-pass read kernel (``jit.read_kernel``, plain 16-byte loads,
best of a sweep), which is the denominator of the 90% target?  If it reads at, or faster than, the
floor, a GEMV with the same memory pipeline has room for its arithmetic; if it reads slower, the
register-fed mma GEMV (``mma.py``) stays.

The probe kernel: each program takes an equal contiguous range of "units" (``BOX_RB`` row blocks x
one 256-wide K block = ``BOX_RB`` x 2 KiB of the blocked layout ``(N/16, K8/32, 16, 32)``), its loader
warp TMAs them into ``STAGES`` slots, its 4 compute warps load each slot into registers (16-byte
shared loads), xor it into an accumulator and release the slot; one int32 per program is stored (so
nothing is optimised away).  Timed like ``nybble bench gpu`` (CUDA graph over rotated copies, median)
next to ``read_once_us`` in the same process.

    PYTHONPATH=src python3 benchmarks/gpu/probe_tma_stream.py [--csv FILE]      # on the H100
"""
from __future__ import annotations

import argparse
import csv
import sys

import torch
from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia.hopper import mbarrier, tma

from nybble.bench.gpu import _copies, graph_time_us, read_once_us
from nybble.kernels.triton.ops import _words_desc

SHAPES = [(4096, 4096), (4096, 14336), (14336, 4096), (8192, 28672)]  # K x N


@gluon.jit
def _loader(w_desc, ws, ready, empty, u0, n_units, KB, BOX_RB: gl.constexpr, STAGES: gl.constexpr):
    for i in range(n_units):
        slot = i % STAGES
        mbarrier.wait(empty.index(slot), ((i // STAGES) & 1) ^ 1, pred=i >= STAGES)
        u = u0 + i
        rb = u // KB
        kb = u - rb * KB
        mbarrier.expect(ready.index(slot), w_desc.block_type.nbytes)
        tma.async_copy_global_to_shared(w_desc, [rb * BOX_RB, kb * 16, 0], ready.index(slot), ws.index(slot))


@gluon.jit
def _consumer(ws, ready, empty, n_units, BOX_RB: gl.constexpr, STAGES: gl.constexpr):
    L: gl.constexpr = gl.BlockedLayout(size_per_thread=[1, 1, 4], threads_per_warp=[1, 4, 8],
                                       warps_per_cta=[1, 4, 1], order=[2, 1, 0])
    acc = gl.zeros([BOX_RB, 16, 32], gl.int32, layout=L)
    for i in range(n_units):
        slot = i % STAGES
        mbarrier.wait(ready.index(slot), (i // STAGES) & 1)
        acc ^= ws.index(slot).load(L)
        gl.thread_barrier()
        mbarrier.arrive(empty.index(slot))
    return (gl.sum(gl.sum(gl.sum(acc, axis=2), axis=1), axis=0), )


@gluon.jit
def tma_stream_kernel(w_desc, out_ptr, n_total, KB, BOX_RB: gl.constexpr, STAGES: gl.constexpr):
    pid = gl.program_id(0)
    nprog = gl.num_programs(0)
    u0 = (pid * n_total) // nprog
    n_units = ((pid + 1) * n_total) // nprog - u0
    ws = gl.allocate_shared_memory(gl.int32, [STAGES] + w_desc.block_type.shape, w_desc.layout)
    ready = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    empty = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    for i in gl.static_range(STAGES):
        mbarrier.init(ready.index(i), count=1)
        mbarrier.init(empty.index(i), count=1)
    (acc, ) = gl.warp_specialize([
        (_consumer, (ws, ready, empty, n_units, BOX_RB, STAGES)),
        (_loader, (w_desc, ws, ready, empty, u0, n_units, KB, BOX_RB, STAGES)),
    ], [1], [40])
    gl.store(out_ptr + pid, acc)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--csv", default=None)
    ap.add_argument("--reps", type=int, default=50)
    args = ap.parse_args(argv)
    props = torch.cuda.get_device_properties(0)
    sms, l2 = props.multi_processor_count, props.L2_cache_size
    rows = []
    for k, n in SHAPES:
        nb, kb = n // 16, k // 256
        nbytes = nb * kb * 2048
        floor, cfg = read_once_us(torch, nbytes, l2, args.reps)
        print(f"K={k} N={n}: {nbytes / 1e6:.1f} MB, read_once {floor:.2f} us {cfg}", flush=True)
        copies = [torch.randint(-2**31, 2**31 - 1, (nb, kb, 16, 32), dtype=torch.int32, device="cuda")
                  for _ in range(_copies(nbytes, l2))]
        best = None
        for box_rb in (1, 2, 4, 8):
            if nb % box_rb:
                continue
            descs = [_words_desc(w, 16 * box_rb, 256) for w in copies]  # boxes of box_rb x 2 KiB
            units = (nb // box_rb) * kb
            slot_bytes = box_rb * 2048
            for stages in (4, 8, 16, 32):
                if stages * slot_bytes > 160 * 1024:
                    continue
                for per_sm in (1, 2, 3, 4):
                    if stages * slot_bytes * per_sm > 200 * 1024:
                        continue
                    progs = min(units, sms * per_sm)
                    out = torch.empty(progs, dtype=torch.int32, device="cuda")
                    try:
                        us = graph_time_us([lambda d=d, o=out, p=progs: tma_stream_kernel[(p,)](
                            d, o, units, kb, BOX_RB=box_rb, STAGES=stages, num_warps=4) for d in descs],
                            args.reps, torch)
                    except Exception as e:  # noqa: BLE001 (report and go on: a probe)
                        print(f"  box_rb={box_rb} stages={stages} per_sm={per_sm}: {type(e).__name__}: {e}"[:300])
                        continue
                    row = dict(K=k, N=n, box_rb=box_rb, stages=stages, progs=progs, us=round(us, 2),
                               read_once_us=round(floor, 2), pct_of_read_once=round(100 * floor / us, 1))
                    rows.append(row)
                    if best is None or us < best["us"]:
                        best = row
        print(f"  best TMA stream: {best}", flush=True)
        del copies
        torch.cuda.empty_cache()
    if args.csv and rows:
        with open(args.csv, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
