"""The A8W4 M = 1 Gluon GEMV on a TMA weight stream (``tma_gemv_a8.py``, config ``block_m ==
TMA_GEMV_A8``) against the reference kernel on random data: every candidate config and every shipped
one, symmetric and asymmetric activations, bf16 / fp16, zero point none / int (with a bias), groups of
32 / 64 / 128, N not a multiple of the unit's rows (row groups shared by several programs and the TMA's
zero fill past N), K not a multiple of 256 (the blocked layout's padding) and K above one quantization
sweep step (two steps), and the same bits on repeated calls and CUDA-graph replays (the shared row
groups are summed in program order).  Hopper only (sm_90) except the fallback test."""
from __future__ import annotations

import pytest
import torch

from gpu_util import assert_close_to_reference, random_plain, reference_out

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

#: (group, K, N): K = 640 is 2.5 K blocks; 20480 needs two quantization sweep steps; N = 304 is 19 row
#: blocks (not a multiple of 2, 4 or 8); N = 4096 with K = 4096 spreads row groups over programs
SHAPES = ((32, 640, 304), (64, 1536, 208), (128, 4096, 4096), (128, 20480, 96), (128, 768, 1008))


def _hopper() -> bool:
    return torch.cuda.is_available() and torch.cuda.get_device_capability() == (9, 0)


def _configs():
    from nybble.kernels.triton.configs import TMA_GEMV_A8, ConfigStore, TileConfig, tma_gemv_a8_configs
    store = ConfigStore("NVIDIA H100 80GB HBM3", cache=None)
    shipped = [c for c in store.shipped.values() if c.block_m == TMA_GEMV_A8]
    extra = [TileConfig(TMA_GEMV_A8, 32, 256, 4, 4, 2)]  # many programs, two slots: every row group shared
    return list(dict.fromkeys(tma_gemv_a8_configs() + shipped + extra))


@pytest.mark.skipif(not _hopper(), reason="the TMA GEMV needs sm_90")
@pytest.mark.parametrize("group,k,n", SHAPES)
@pytest.mark.parametrize("domain", ["none", "int"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@pytest.mark.parametrize("act", ["a8_sym", "a8_asym"])
def test_tma_gemv_a8_matches_reference(act, dtype, domain, group, k, n):
    from nybble.kernels.base import LinearSpec
    from nybble.kernels.triton import ops
    from nybble.kernels.triton.kernel import TritonKernel
    asym = act == "a8_asym"
    plain = random_plain(n, k, group, domain, dtype)
    p = TritonKernel(LinearSpec.for_weight(plain, act)).prepack(plain)
    zp = p.get("zero_point")
    x = torch.randn(1, k, device="cuda").to(dtype)
    x[0, :7] *= 9.0  # a few large activations: codes at both ends of the range
    bias = torch.randn(n, device="cuda").to(dtype) if domain == "int" else None
    ref = reference_out(x, plain, act, bias)
    for cfg in _configs():
        if not ops.tma_gemv_a8_ok(x, p["qweight"], p["scale"], zp, group, cfg):
            # only 32-row units with the int8 zero points of groups of 128 (64-byte parameter boxes)
            assert cfg.block_n == 32 and group == 128 and zp is not None, cfg
            continue
        y = ops.launch_a8w4(x, p["qweight"], p["scale"], zp, p["wsum"], group, asym, bias, cfg, p["locks"])
        assert_close_to_reference(y, ref, f"TMA GEMV {act} {dtype} {domain} g{group} K={k} N={n} {cfg}")
        assert (p["locks"] == 0).all(), f"{cfg}: the row-group counters were not left at zero"


@pytest.mark.skipif(not _hopper(), reason="the TMA GEMV needs sm_90")
def test_tma_gemv_a8_is_deterministic_and_graph_safe():
    """Row groups shared by several programs are summed in program order by whichever finishes last:
    the same bits on every call and on CUDA-graph replays; the counters stay at zero."""
    from nybble.kernels.base import LinearSpec
    from nybble.kernels.triton import ops
    from nybble.kernels.triton.configs import TMA_GEMV_A8, TileConfig
    from nybble.kernels.triton.kernel import TritonKernel
    plain = random_plain(4096, 14336, 128, "int", torch.bfloat16)
    p = TritonKernel(LinearSpec.for_weight(plain, "a8_asym")).prepack(plain)
    cfg = TileConfig(TMA_GEMV_A8, 64, 256, 2, 4, 6)
    x = torch.randn(1, 14336, device="cuda", dtype=torch.bfloat16)

    def call():
        return ops.launch_a8w4(x, p["qweight"], p["scale"], p["zero_point"], p["wsum"], 128, True, None, cfg,
                               p["locks"])

    first = call()
    assert_close_to_reference(first, reference_out(x, plain, "a8_asym", None), "TMA GEMV 4096x14336")
    for _ in range(5):
        assert torch.equal(call(), first)
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        call()
    torch.cuda.current_stream().wait_stream(s)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        out = call()
    for _ in range(3):
        g.replay()
        torch.cuda.synchronize()
        assert torch.equal(out, first)
    assert (p["locks"] == 0).all()


def test_tma_gemv_a8_falls_back_where_it_cannot_run():
    """M > 1, per-channel weights, groups of 256 or N not a multiple of 16: the launcher takes another kernel (and
    gives the reference's result)."""
    from nybble.kernels.base import LinearSpec
    from nybble.kernels.triton import ops
    from nybble.kernels.triton.configs import TMA_GEMV_A8, TileConfig
    from nybble.kernels.triton.kernel import TritonKernel
    cfg = TileConfig(TMA_GEMV_A8, 64, 256, 1, 4, 6)
    for m, n, group in ((3, 256, 128), (1, 256, -1), (1, 256, 256), (1, 200, 128)):
        plain = random_plain(n, 512, group, "int", torch.bfloat16)
        p = TritonKernel(LinearSpec.for_weight(plain, "a8_sym")).prepack(plain)
        x = torch.randn(m, 512, device="cuda", dtype=torch.bfloat16)
        assert not ops.tma_gemv_a8_ok(x, p["qweight"], p["scale"], p["zero_point"], group, cfg) or not _hopper()
        y = ops.launch_a8w4(x, p["qweight"], p["scale"], p["zero_point"], p["wsum"], group, False, None, cfg,
                            p["locks"])
        assert_close_to_reference(y, reference_out(x, plain, "a8_sym", None), f"fallback M={m} N={n} g{group}")


@pytest.mark.skipif(not _hopper(), reason="the TMA GEMV needs sm_90")
def test_table_choice_is_kept_for_graph_capture(monkeypatch):
    """The H100 table takes the TMA GEMV for A8W4 at M = 1 on 8192x28672 (K x N): the first eager call runs it
    once (compiling it), later eager calls take the plannable fallback (the plan is marked eager-only),
    a CUDA-graph capture of the same layer call takes the TMA GEMV; all give the reference's result."""
    from nybble.kernels.base import LinearSpec
    from nybble.kernels.triton import ops
    from nybble.kernels.triton.configs import TMA_GEMV_A8, make_key
    from nybble.kernels.triton.kernel import TritonKernel
    if torch.cuda.get_device_name() != "NVIDIA H100 80GB HBM3":
        pytest.skip("the shipped table is the H100's")
    n, k = 28672, 8192
    cfg = ops.store_for(torch.device("cuda")).get(make_key("a8w4", n, k, 128, 1))
    assert cfg is not None and cfg.block_m == TMA_GEMV_A8
    plain = random_plain(n, k, 128, "int", torch.bfloat16)
    kern = TritonKernel(LinearSpec.for_weight(plain, "a8_sym"))
    p = kern.prepack(plain)
    x = torch.randn(1, k, device="cuda", dtype=torch.bfloat16)
    ref = reference_out(x, plain, "a8_sym", None)
    used = []
    real = ops._tma_gemv_a8
    monkeypatch.setattr(ops, "_tma_gemv_a8", lambda *a, **kw: used.append(1) or real(*a, **kw))
    ops._TMA_WARM.clear()
    y = kern.apply(x, p, None)  # the plan's warm-up call runs (compiles) the TMA GEMV, the recorded one not
    assert_close_to_reference(y, ref, "first eager call")
    assert len(used) == 1 and kern._plans.plan_for((1, k)).eager_only
    y = kern.apply(x, p, None)
    assert_close_to_reference(y, ref, "eager fallback (plan)")
    assert len(used) == 1
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        kern.apply(x, p, None)
    torch.cuda.current_stream().wait_stream(s)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        out = kern.apply(x, p, None)
    assert len(used) == 2, "the capture did not take the TMA GEMV"  # (the side-stream call used the plan)
    g.replay()
    torch.cuda.synchronize()
    assert_close_to_reference(out, ref, "captured TMA GEMV")
