"""The tinygemm wrapper (``torch_int4_cuda``) against the reference kernel, and its refusals."""
from __future__ import annotations

import pytest
import torch

from nybble.kernels.base import LinearSpec
from nybble.kernels.torch_int4_cuda import TorchInt4CudaKernel

from gpu_util import random_plain, reference_out

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


@pytest.mark.parametrize("m", [1, 3, 17, 257])
@pytest.mark.parametrize("group,k", [(32, 288), (64, 576), (128, 640), (256, 768), (-1, 384)])
def test_matches_reference(group, k, m):
    plain = random_plain(200, k, group, "none", torch.bfloat16)
    spec = LinearSpec.for_weight(plain, "a16")
    ok, why = TorchInt4CudaKernel.is_supported("cuda")
    assert ok, why
    ok, why = TorchInt4CudaKernel.can_implement(spec)
    assert ok, why
    kern = TorchInt4CudaKernel(spec)
    packed = kern.prepack(plain)
    x = torch.randn(m, k, device="cuda").to(torch.bfloat16)
    bias = torch.randn(200, device="cuda").to(torch.bfloat16)
    y = kern.apply(x, packed, bias)
    ref = reference_out(x, plain, "a16", bias)
    # tinygemm dequantizes in its own bf16 arithmetic: allow a little more than the Triton kernels
    err = (y.float() - ref.float()).abs().max().item()
    assert err <= 2 ** -5 * ref.float().abs().max().item(), err
    back = kern.unpack(packed)
    assert torch.equal(back.qdata, plain.qdata) and torch.equal(back.scale, plain.scale)


def test_refusals():
    int_spec = LinearSpec.for_weight(random_plain(64, 256, 128, "int", torch.bfloat16), "a16")
    ok, why = TorchInt4CudaKernel.can_implement(int_spec)
    assert not ok and "zero_point='none'" in why
    fp16 = LinearSpec.for_weight(random_plain(64, 256, 128, "none", torch.float16), "a16")
    assert not TorchInt4CudaKernel.can_implement(fp16)[0]
    a8 = LinearSpec.for_weight(random_plain(64, 256, 128, "none", torch.bfloat16), "a8_sym")
    assert not TorchInt4CudaKernel.can_implement(a8)[0]


def test_under_torch_compile_and_in_a_cuda_graph():
    """The tinygemm baseline works where nybble's own kernels must: ``torch.compile(fullgraph=True)``
    (its torch op and fake) and CUDA-graph capture, with the same bits as the eager call."""
    plain = random_plain(200, 640, 128, "none", torch.bfloat16)
    kern = TorchInt4CudaKernel(LinearSpec.for_weight(plain, "a16"))
    packed = kern.prepack(plain)
    bias = torch.randn(200, device="cuda").to(torch.bfloat16)
    x = torch.randn(5, 640, device="cuda").to(torch.bfloat16)
    eager = kern.apply(x, packed, bias)
    ref = reference_out(x, plain, "a16", bias)  # tinygemm's own bf16 dequantization: test_matches_reference's bound
    assert (eager.float() - ref.float()).abs().max().item() <= 2 ** -5 * ref.float().abs().max().item()
    torch._dynamo.reset()
    compiled = torch.compile(lambda t: kern.apply(t, packed, bias), fullgraph=True)
    assert torch.equal(compiled(x), eager)
    xs = x.clone()
    kern.apply(xs, packed, bias)  # warm-up outside the capture
    torch.cuda.synchronize()
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        out = kern.apply(xs, packed, bias)
    for scale in (1.0, 0.5):
        xs.copy_(x * scale)
        g.replay()
        torch.cuda.synchronize()
        assert torch.equal(out, kern.apply(x * scale, packed, bias))
