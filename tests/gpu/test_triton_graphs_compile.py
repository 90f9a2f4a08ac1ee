"""The Triton kernels under CUDA-graph capture and torch.compile (through ``Int4Linear``)."""
from __future__ import annotations

import pytest
import torch

from nybble.tensor import Int4Linear

from gpu_util import assert_close_to_reference, random_plain, reference_out

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

ACTS = ["a16", "a8_sym", "a8_asym"]


@pytest.mark.parametrize("m", [1, 16, 200])
@pytest.mark.parametrize("act", ACTS)
def test_cuda_graph_capture_and_replay(act, m):
    plain = random_plain(384, 1024, 64, "int", torch.bfloat16)
    bias = torch.randn(384, device="cuda").to(torch.bfloat16)
    layer = Int4Linear(plain, bias, act_mode=act, force_kernel="triton")
    x = torch.randn(m, 1024, device="cuda").to(torch.bfloat16)
    layer(x)  # compile + choose configs outside the capture
    torch.cuda.synchronize()
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        y = layer(x)
    for _ in range(2):  # new data in the same buffer: the replay must compute on it
        x.copy_(torch.randn(m, 1024, device="cuda"))
        g.replay()
        torch.cuda.synchronize()
        assert_close_to_reference(y, reference_out(x, plain, act, bias), f"graph {act} M={m}")


@pytest.mark.parametrize("act", ACTS)
def test_torch_compile_fullgraph(act):
    torch._dynamo.reset()
    plain = random_plain(256, 512, 128, "none", torch.float16)
    layer = Int4Linear(plain, None, act_mode=act, force_kernel="triton")
    model = torch.nn.Sequential(torch.nn.LayerNorm(512).cuda().half(), layer, torch.nn.GELU())
    compiled = torch.compile(model, fullgraph=True, dynamic=False)
    with torch.no_grad():  # inference kernels: the ops have no autograd formula
        for m in (1, 33):
            x = torch.randn(m, 512, device="cuda").half()
            assert_close_to_reference(compiled(x), model(x), f"compile {act} M={m}")


def test_torch_compile_reduce_overhead_cudagraphs():
    torch._dynamo.reset()
    plain = random_plain(256, 512, 32, "int", torch.bfloat16)
    layer = Int4Linear(plain, None, act_mode="a16", force_kernel="triton")
    compiled = torch.compile(layer, mode="reduce-overhead", fullgraph=True)
    x = torch.randn(4, 512, device="cuda").to(torch.bfloat16)
    with torch.no_grad():
        for _ in range(3):
            y = compiled(x).clone()
    assert_close_to_reference(y, reference_out(x, plain, "a16", None), "reduce-overhead")


def test_fake_impls_shapes():
    from torch._subclasses.fake_tensor import FakeTensorMode
    import nybble.kernels.triton.ops  # noqa: F401
    with FakeTensorMode():
        x = torch.empty(5, 256, dtype=torch.bfloat16, device="cuda")
        qw = torch.empty(40, 32, dtype=torch.int32, device="cuda")
        s = torch.empty(2, 40, dtype=torch.bfloat16, device="cuda")
        ws = torch.empty(2, 40, dtype=torch.int32, device="cuda")
        assert torch.ops.nybble.triton_a16w4(x, qw, s, None, 128, None).shape == (5, 40)
        assert torch.ops.nybble.triton_a8w4(x, qw, s, None, ws, 128, True, None).shape == (5, 40)
        q, sa, za = torch.ops.nybble.triton_quantize_act(x, True)
        assert q.shape == (5, 256) and q.dtype == torch.int8 and sa.shape == (5,) and za.dtype == torch.int32
