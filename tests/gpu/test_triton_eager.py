"""The cached eager launch plans of the Triton kernels (``eager_plan.py``): used, exact, invalidated
when the layer's tensors change, safe under CUDA-graph capture, and across changing input shapes."""
from __future__ import annotations

import pytest
import torch

from nybble.kernels.base import LinearSpec
from nybble.tensor import Int4Linear

from gpu_util import assert_close_to_reference, random_plain, reference_out

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

ACTS = ["a16", "a8_sym", "a8_asym"]


def _kernel(plain, act):
    from nybble.kernels.triton.kernel import TritonKernel
    return TritonKernel(LinearSpec.for_weight(plain, act))


def _sm90():
    return torch.cuda.get_device_capability() >= (9, 0)


@pytest.mark.parametrize("act", ACTS)
@pytest.mark.parametrize("group", [128, 32])
def test_plan_matches_ordinary_path_bit_for_bit(act, group):
    plain = random_plain(384, 1024, group, "int", torch.bfloat16)
    kern = _kernel(plain, act)
    p = kern.prepack(plain)
    bias = torch.randn(384, device="cuda").to(torch.bfloat16)
    for m in (1, 2, 5, 16):
        x = torch.randn(m, 1024, device="cuda").to(torch.bfloat16)
        first = kern.apply(x, p, bias)       # builds the plan (and runs it)
        plan = kern._plans.plan_for(x.shape)
        if m == 1 or act == "a16":
            assert plan is not None, f"{act} M={m}: no plan"
        again = kern.apply(x, p, bias)       # the cached plan
        ordinary = kern._launch(x, p, bias)  # the path the plan replaces
        assert torch.equal(first, ordinary) and torch.equal(again, ordinary), f"{act} g{group} M={m}"
        assert_close_to_reference(again, reference_out(x, plain, act, bias), f"plan {act} g{group} M={m}")
        if plan is not None and m == 1 and _sm90() and (act == "a16" or group >= 128):
            assert plan.num_launches == 1, f"{act} g{group}: {plan.num_launches} launches at M = 1"


@pytest.mark.parametrize("act", ACTS)
def test_changing_m_sequence(act):
    plain = random_plain(200, 640, 128, "int", torch.bfloat16)
    layer = Int4Linear(plain, None, act_mode=act, force_kernel="triton")
    for m in (1, 2, 1, 17, 1, 3, 1):
        x = torch.randn(m, 640, device="cuda").to(torch.bfloat16)
        assert_close_to_reference(layer(x), reference_out(x, plain, act, None), f"{act} M={m}")
        x3 = torch.randn(2, m, 640, device="cuda").to(torch.bfloat16)  # same M x 2 through a 3-D shape
        y3 = layer(x3)
        assert y3.shape == (2, m, 200)
        assert_close_to_reference(y3.reshape(-1, 200), reference_out(x3.reshape(-1, 640), plain, act, None),
                                  f"{act} 3-D M={m}")
    assert layer.kernel._plans.plan_for((1, 640)) is not None


@pytest.mark.parametrize("act", ["a16", "a8_asym"])
def test_unaligned_and_strided_inputs_take_the_ordinary_path(act):
    plain = random_plain(200, 640, 128, "none", torch.bfloat16)
    layer = Int4Linear(plain, None, act_mode=act, force_kernel="triton")
    x = torch.randn(1, 640, device="cuda").to(torch.bfloat16)
    layer(x)  # a plan for (1, 640) exists now
    buf = torch.randn(1, 641 + 640, device="cuda").to(torch.bfloat16)
    for xv in (buf[:, 1:641],                                   # 2-byte offset: not 16-byte aligned
               torch.randn(1, 1280, device="cuda").to(torch.bfloat16)[:, ::2],  # not contiguous
               buf[:, 641:].clone().float()):                  # another dtype (the layer casts it)
        assert_close_to_reference(layer(xv), reference_out(xv.to(torch.bfloat16).contiguous(), plain, act, None),
                                  f"{act} {xv.stride()} {xv.dtype}")


@pytest.mark.parametrize("act", ACTS)
def test_plan_invalidated_when_weights_change(act):
    p1 = random_plain(256, 512, 128, "int", torch.bfloat16)
    p2 = random_plain(256, 512, 128, "int", torch.bfloat16)
    layer = Int4Linear(p1, None, act_mode=act, force_kernel="triton")
    x = torch.randn(1, 512, device="cuda").to(torch.bfloat16)
    assert_close_to_reference(layer(x), reference_out(x, p1, act, None), "before")
    # load_state_dict re-prepacks (new buffers, new kernel)
    other = Int4Linear(p2, None, act_mode=act, force_kernel="triton")
    layer.load_state_dict(other.state_dict())
    assert_close_to_reference(layer(x), reference_out(x, p2, act, None), "after load_state_dict")
    # a packed buffer replaced by assignment (same kernel object): the plan must notice
    name = "packed_scale"
    old = layer._buffers[name]
    setattr(layer, name, (old * 2).contiguous())
    ref2 = reference_out(x, type(p2)(p2.qdata, p2.scale * 2, p2.zero_point, p2.group_size, (256, 512)), act, None)
    assert_close_to_reference(layer(x), ref2, "after assigning a new scale buffer")
    # a bias added afterwards
    layer.bias = torch.nn.Parameter(torch.randn(256, device="cuda").to(torch.bfloat16), requires_grad=False)
    ref3 = reference_out(x, type(p2)(p2.qdata, p2.scale * 2, p2.zero_point, p2.group_size, (256, 512)), act,
                         layer.bias)
    assert_close_to_reference(layer(x), ref3, "after adding a bias")
    # .to(fp16): new dtype, new kernel
    layer = layer.to(torch.float16)
    xh = x.half()
    assert layer(xh).dtype == torch.float16
    plain_h = layer.plain()
    assert_close_to_reference(layer(xh), reference_out(xh, plain_h, act, layer.bias), "after .to(fp16)")


def test_plan_dropped_when_dequant_variant_switches():
    from nybble.kernels.triton import ops
    plain = random_plain(200, 640, 64, "int", torch.bfloat16)
    kern = _kernel(plain, "a16")
    p = kern.prepack(plain)
    x = torch.randn(1, 640, device="cuda").to(torch.bfloat16)
    kern.apply(x, p, None)
    plans = kern._plans
    old = ops.set_use_asm(not ops.use_asm())
    try:
        y = kern.apply(x, p, None)
        assert kern._plans is not plans
        assert_close_to_reference(y, reference_out(x, plain, "a16", None), "switched variant")
    finally:
        ops.set_use_asm(old)


@pytest.mark.parametrize("act", ACTS)
@pytest.mark.parametrize("m", [1, 4])
def test_cuda_graph_of_a_layer_first_called_eagerly(act, m):
    plain = random_plain(384, 1024, 128, "int", torch.bfloat16)
    bias = torch.randn(384, device="cuda").to(torch.bfloat16)
    layer = Int4Linear(plain, bias, act_mode=act, force_kernel="triton")
    x = torch.randn(m, 1024, device="cuda").to(torch.bfloat16)
    for _ in range(3):  # eager calls: plan built and used
        layer(x)
    assert layer.kernel._plans.plan_for(x.shape) is not None
    torch.cuda.synchronize()
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        y = layer(x)
    for _ in range(2):
        x.copy_(torch.randn(m, 1024, device="cuda"))
        g.replay()
        torch.cuda.synchronize()
        assert_close_to_reference(y, reference_out(x, plain, act, bias), f"graph {act} M={m}")
        # eager calls between replays (same plan, same kept scratch) stay right, and so does the graph
        x2 = torch.randn(m, 1024, device="cuda").to(torch.bfloat16)
        assert_close_to_reference(layer(x2), reference_out(x2, plain, act, bias), f"eager between replays {act}")
    # plans dropped and rebuilt (another shape too), cached memory released: the graph's scratch
    # addresses come from the layer's pool, which outlives the plans, so the replay stays right
    from nybble.kernels.triton import eager_plan
    eager_plan.bump_epoch()
    for mm in (m, 3, m):
        xe = torch.randn(mm, 1024, device="cuda").to(torch.bfloat16)
        assert_close_to_reference(layer(xe), reference_out(xe, plain, act, bias), f"eager after rebuild {act}")
    torch.cuda.empty_cache()
    junk = [torch.full((1 << 16,), 7.0, device="cuda") for _ in range(8)]  # reuse of any freed block
    x.copy_(torch.randn(m, 1024, device="cuda"))
    g.replay()
    torch.cuda.synchronize()
    assert_close_to_reference(y, reference_out(x, plain, act, bias), f"graph after plan rebuild {act} M={m}")
    del junk


def test_no_plan_is_built_during_capture():
    plain = random_plain(256, 512, 128, "int", torch.bfloat16)
    layer = Int4Linear(plain, None, act_mode="a16", force_kernel="triton")
    x = torch.randn(2, 512, device="cuda").to(torch.bfloat16)
    layer(torch.randn(1, 512, device="cuda").to(torch.bfloat16))  # configs / compile for another shape
    layer(x)
    layer.kernel._plans.plans.clear()
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        y = layer(x)
    assert layer.kernel._plans.plan_for(x.shape) is None
    g.replay()
    torch.cuda.synchronize()
    assert_close_to_reference(y, reference_out(x, plain, "a16", None), "captured without a plan")


@pytest.mark.parametrize("act", ["a16", "a8_sym"])
def test_dependent_chain_with_and_without_pdl(act):
    """Each call reads what the previous kernel (the same layer) wrote: with programmatic dependent
    launch the kernel must wait for it before reading x, the split-K counters or the kept scratch.
    Eager (plans) and inside one CUDA graph; PDL on and off give identical results."""
    from nybble.kernels.triton import ops
    plain = random_plain(1024, 1024, 128, "int", torch.bfloat16)
    layer = Int4Linear(plain, None, act_mode=act, force_kernel="triton")
    x0 = torch.randn(1, 1024, device="cuda").to(torch.bfloat16)
    last = {}
    old = ops.set_pdl(True)
    try:
        for pdl in (False, True):
            ops.set_pdl(pdl)
            hs = [x0]
            for _ in range(4):  # back-to-back kernels of one layer, each reading the previous output
                hs.append(layer(hs[-1]))
            for a, b in zip(hs[:-1], hs[1:]):
                assert_close_to_reference(b, reference_out(a, plain, act, None), f"eager chain {act} pdl={pdl}")
            last[pdl] = hs[-1]
            xin = x0.clone()
            g = torch.cuda.CUDAGraph()
            with torch.cuda.graph(g):
                outs = [xin]
                for _ in range(4):
                    outs.append(layer(outs[-1]))
            g.replay()
            torch.cuda.synchronize()
            for a, b in zip(outs[:-1], outs[1:]):
                assert_close_to_reference(b, reference_out(a, plain, act, None), f"graph chain {act} pdl={pdl}")
        assert torch.equal(last[False], last[True])
    finally:
        ops.set_pdl(old)


@pytest.mark.parametrize("act", ACTS)
def test_c_plan_runner_replays_the_plans_bit_for_bit(act):
    """Every plan gets a C replay (``plan_runner.py``), and it gives the same bits as Triton's launchers
    for one- and two-launch plans, plans with kept and with per-call scratch (split-K partials), with
    bias, over several M; a CUDA graph captured through the C replay is right too."""
    from nybble.kernels.triton import plan_runner
    assert plan_runner.module() is not None, plan_runner.status()
    native_seen = 0
    for n, k, group in ((384, 1024, 128), (256, 8192, 64), (4096, 4096, 128)):
        plain = random_plain(n, k, group, "int", torch.bfloat16)
        bias = torch.randn(n, device="cuda").to(torch.bfloat16)
        layer = Int4Linear(plain, bias, act_mode=act, force_kernel="triton")
        for m in (1, 2, 5, 16):
            x = torch.randn(m, k, device="cuda").to(torch.bfloat16)
            first = layer(x)
            plan = layer.kernel._plans.plan_for(x.shape)
            if plan is None:
                continue
            assert plan.native is not None, f"{act} {n}x{k} M={m}: no C plan ({plan_runner.status()})"
            native_seen += 1
            via_c = layer(x)
            native, plan.native = plan.native, None
            try:
                via_triton = layer(x)
            finally:
                plan.native = native
            assert torch.equal(via_c, via_triton) and torch.equal(first, via_c), f"{act} {n}x{k} M={m}"
            assert_close_to_reference(via_c, reference_out(x, plain, act, bias), f"C plan {act} {n}x{k} M={m}")
        xg = torch.randn(1, k, device="cuda").to(torch.bfloat16)
        layer(xg)
        torch.cuda.synchronize()
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g):
            yg = layer(xg)
        xg.copy_(torch.randn(1, k, device="cuda"))
        g.replay()
        torch.cuda.synchronize()
        assert_close_to_reference(yg, reference_out(xg, plain, act, bias), f"graph through C plan {act} {n}x{k}")
    assert native_seen >= 4, f"{act}: only {native_seen} plans"


def test_c_plan_runner_off_by_env(monkeypatch):
    monkeypatch.setenv("NYBBLE_TRITON_PLAN_RUNNER", "0")
    plain = random_plain(256, 512, 128, "int", torch.bfloat16)
    layer = Int4Linear(plain, None, act_mode="a16", force_kernel="triton")
    x = torch.randn(1, 512, device="cuda").to(torch.bfloat16)
    y = layer(x)
    plan = layer.kernel._plans.plan_for(x.shape)
    assert plan is not None and plan.native is None
    assert_close_to_reference(y, reference_out(x, plain, "a16", None), "Triton launchers")
