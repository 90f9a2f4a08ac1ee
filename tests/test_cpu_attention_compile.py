"""nybble's CPU decode attention under torch.compile: the ``nybble::cpu_decode_attention`` op."""
from __future__ import annotations

import pytest
import torch

from nybble.kernels import cpu_attention as A

pytestmark = pytest.mark.skipif(not hasattr(torch.ops.nybble, "cpu_decode_attention"), reason="no nybble._C")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_op_matches_the_function_and_fp64(dtype):
    g = torch.Generator().manual_seed(3)
    q = torch.randn(1, 8, 1, 64, generator=g).to(dtype)
    k = torch.randn(1, 2, 37, 64, generator=g).to(dtype)
    v = torch.randn(1, 2, 37, 64, generator=g).to(dtype)
    mask = torch.rand(1, 1, 1, 37, generator=g) > 0.3
    mask[..., 0] = True
    got = torch.ops.nybble.cpu_decode_attention(q, k, v, 0.125, mask)
    assert torch.equal(got, A.decode_attention(q, k, v, 0.125, mask))
    kk = k.double().repeat_interleave(4, dim=1)
    vv = v.double().repeat_interleave(4, dim=1)
    s = (q.double() @ kk.transpose(-1, -2)) * 0.125
    s = s.masked_fill(~mask, float("-inf"))
    ref = (s.softmax(-1) @ vv).transpose(1, 2)  # (1, 1, H, D)
    tol = 1e-5 if dtype == torch.float32 else 1e-2
    torch.testing.assert_close(got.double(), ref, atol=tol, rtol=tol)
    # the fake implementation gives the same shape and dtype
    from torch._subclasses.fake_tensor import FakeTensorMode
    with FakeTensorMode() as mode:
        fq, fk, fv = (mode.from_tensor(t) for t in (q, k, v))
        out = torch.ops.nybble.cpu_decode_attention(fq, fk, fv, 0.125, None)
    assert out.shape == got.shape and out.dtype == dtype


def test_compiled_llama_decode_uses_the_op_and_matches_eager():
    """A tiny Llama with nybble's decode attention, decoded through a compiled step with a static
    cache: the op is in the one graph, and the tokens equal transformers' eager sdpa decode."""
    from nybble.bench.e2e_cpu import Decoder, build_model
    torch._dynamo.reset()
    m = build_model(2, 128, 256, 4, 2, 512).float()
    graphs = []

    def backend(gm, example_inputs):
        graphs.append(gm)
        return gm.forward
    ids = torch.randint(0, 512, (1, 6), generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        ref = Decoder(m)
        want = [ref.start(ids)]
        for _ in range(5):
            want.append(ref.step(want[-1]))
        A.use_decode_attention(m)
        dec = Decoder(m, compile=True, max_len=16, backend=backend)
        got = [dec.start(ids)]
        for _ in range(5):
            got.append(dec.step(got[-1]))
    m.set_attn_implementation("sdpa")
    assert [int(t) for t in got] == [int(t) for t in want]
    assert len(graphs) == 1
    targets = [str(n.target) for n in graphs[0].graph.nodes if n.op == "call_function"]
    assert sum("cpu_decode_attention" in t for t in targets) == 2, targets  # one per layer
    assert not any("scaled_dot_product" in t for t in targets)
