"""Where the eager M = 1 call of an ``Int4Linear`` on CUDA spends its CPU time (issue 6: <= 15 us).

Wall-clock us per call (best of 3 loops of REPS calls, synchronized at the end of each loop, like
``nybble.bench.gpu``'s eager rows) of the whole module call and of each layer under it, on a
1024 x 1024 layer (group 128, zero point int, bf16), for A16W4 and A8W4 (symmetric), with the eager
plan's launches replayed by the C plan runner (``plan_runner.py``) and by Triton's launchers; next to
them the pieces (``torch.empty``, the stream query, ``packed()``, the bias lookup) and the references
``F.linear`` / ``nn.Linear`` of the same size.

Usage (GPU machine): ``PYTHONPATH=src python3 benchmarks/gpu/eager_breakdown.py [REPS]``.
"""
from __future__ import annotations

import sys

import torch
import torch.nn.functional as F

from nybble.bench.gpu import _wall_per_call_rounds


def per_call_us(fn, reps: int) -> float:
    """Best of 3 loops of ``reps`` calls after 50 warm-up calls (``nybble.bench.gpu``'s timing of one path)."""
    return _wall_per_call_rounds({"fn": fn}, reps, 3, torch)[0]["fn"]


def main(reps: int = 2000) -> None:
    from nybble.kernels.triton import plan_runner
    from nybble.kernels.triton.launch import _raw_stream
    from nybble.plain import PlainInt4Weight
    from nybble.tensor import Int4Linear

    size = 1024
    torch.manual_seed(0)
    plain = PlainInt4Weight.from_float(torch.randn(size, size, device="cuda") * 0.02, 128, "int", torch.bfloat16)
    x = torch.randn(1, size, device="cuda").to(torch.bfloat16)
    rows = []
    for act in ("a16", "a8_sym"):
        layer = Int4Linear(plain, None, act_mode=act, force_kernel="triton")
        y = layer(x)
        kern = layer.kernel
        plan = kern._plans.plan_for(x.shape)
        assert plan is not None, f"{act}: no eager plan"
        native = plan.native
        print(f"{act}: launches {plan.num_launches}, C plan {'yes' if native is not None else 'NO'} "
              f"({plan_runner.status()})", flush=True)
        packed, bias = layer.packed(), layer.bias
        dt, dev, d = kern._plans.dtype, kern._plans.device, kern._plans.dev
        out = torch.empty_like(y)
        t = {}
        t["module"] = per_call_us(lambda: layer(x), reps)
        t["forward (no Module.__call__)"] = per_call_us(lambda: layer.forward(x), reps)
        t["kernel.apply"] = per_call_us(lambda: kern.apply(x, packed, bias), reps)
        t["EagerPlans(x)"] = per_call_us(lambda: kern._plans(x), reps)
        t["Plan.run (C)"] = per_call_us(lambda: plan.run(x, dt, dev, d), reps)
        if native is not None:
            t["C plan launch only"] = per_call_us(lambda: native.run(_raw_stream(d), x.data_ptr(), out.data_ptr()),
                                                  reps)
        plan.native = None
        t["Plan.run (Triton launchers)"] = per_call_us(lambda: plan.run(x, dt, dev, d), reps)
        t["module (Triton launchers)"] = per_call_us(lambda: layer(x), reps)
        plan.native = native
        if native is not None:
            assert torch.equal(plan.run(x, dt, dev, d), y), f"{act}: C plan result differs"
        shape = tuple(plan.out_shape)
        t.update({f"torch.empty(out{k})": v for k, v in _wall_per_call_rounds(
            {", shape as varargs (Plan.run since the tenth session)": lambda: torch.empty(*shape, dtype=dt, device=dev),
             ", shape as a tuple (before)": lambda: torch.empty(shape, dtype=dt, device=dev)}, reps, 5, torch)[0].items()})
        t["_raw_stream"] = per_call_us(lambda: _raw_stream(d), reps)
        t["layer.packed()"] = per_call_us(layer.packed, reps)
        t["layer.bias"] = per_call_us(lambda: layer.bias, reps)
        t["torch.compiler.is_compiling()"] = per_call_us(torch.compiler.is_compiling, reps)
        for k, v in t.items():
            rows.append((act, k, v))
    w = plain.dequantize(torch.bfloat16)
    lin = torch.nn.Linear(size, size, bias=False, device="cuda", dtype=torch.bfloat16)
    rows.append(("ref", "F.linear bf16", per_call_us(lambda: F.linear(x, w), reps)))
    rows.append(("ref", "nn.Linear bf16 module", per_call_us(lambda: lin(x), reps)))
    rows.append(("ref", "empty python loop", per_call_us(lambda: None, reps)))
    print("| act | what | us per call |\n|---|---|---:|")
    for act, k, v in rows:
        print(f"| {act} | {k} | {v:.2f} |")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 2000)
