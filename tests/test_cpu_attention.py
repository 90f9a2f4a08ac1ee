"""nybble.kernels.cpu_attention (decode attention in C++) against an fp64 reference, on every ISA
path, and its transformers attention function against transformers' own ``sdpa`` in a small
random Llama (decode steps equal within bf16 rounding, prefill unchanged: it falls back)."""
from __future__ import annotations

import math

import pytest
import torch

cpu = pytest.importorskip("nybble.kernels.cpu")
if not cpu.available_isas():
    pytest.skip("nybble._C is not available", allow_module_level=True)
from nybble.kernels import cpu_attention as A  # noqa: E402

ISAS = cpu.available_isas()
EPS = {torch.float32: 2.0**-23, torch.bfloat16: 2.0**-8, torch.float16: 2.0**-11}


def reference(q, k, v, scale, mask=None):
    """fp64 softmax attention, (1, H, 1, D) x (1, Hkv, L, D) -> (1, 1, H, D)."""
    g = q.shape[1] // k.shape[1]
    kk = k.double().repeat_interleave(g, 1)
    vv = v.double().repeat_interleave(g, 1)
    s = q.double() @ kk.transpose(-1, -2) * scale
    if mask is not None:
        s = s + mask.double() if mask.dtype != torch.bool else s.masked_fill(~mask, -math.inf)
    return (torch.softmax(s, -1) @ vv).transpose(1, 2)


def check(y, ref, dtype):
    # one rounding of the output to the dtype plus fp32 sums over L and D
    tol = 2 * EPS[dtype] * ref.abs().max() + 1e-5
    assert y.dtype == dtype and y.shape == ref.shape
    assert (y.double() - ref).abs().max() <= tol


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("h,hkv,length,d", [(32, 8, 37, 64), (4, 4, 1, 16), (6, 2, 100, 80), (8, 1, 300, 128)])
def test_against_reference(isa, dtype, h, hkv, length, d):
    g = torch.Generator().manual_seed(h * 1000 + length)
    q = torch.randn(1, h, 1, d, generator=g).to(dtype)
    k = torch.randn(1, hkv, length, d, generator=g).to(dtype)
    v = torch.randn(1, hkv, length, d, generator=g).to(dtype)
    with cpu.use_isa(isa):
        y = A.decode_attention(q, k, v, 0.3)
    check(y, reference(q, k, v, 0.3), dtype)


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("threads", [1, 2])
def test_masked_positions_are_skipped(isa, threads):
    """A static cache's masked tail (here filled with NaN / inf garbage) is never read: a bool mask, the
    same as a float mask with -inf, gives the attention over the valid positions only, and equals the
    call on the valid prefix alone; a float mask's finite entries still count; all masked gives NaN."""
    g = torch.Generator().manual_seed(11)
    h, hkv, cap, d, valid = 32, 8, 64, 64, 23
    q = torch.randn(1, h, 1, d, generator=g).bfloat16()
    k = torch.randn(1, hkv, cap, d, generator=g).bfloat16()
    v = torch.randn(1, hkv, cap, d, generator=g).bfloat16()
    keep = torch.zeros(1, 1, 1, cap, dtype=torch.bool)
    keep[..., :valid] = True
    keep[..., 5] = False  # a hole inside the valid part too
    k[:, :, valid:], v[:, :, valid:] = float("nan"), float("inf")
    k[:, :, 5], v[:, :, 5] = float("inf"), float("nan")
    fmask = torch.zeros(1, 1, 1, cap).masked_fill(~keep, -math.inf)
    fmask[..., :valid][keep[..., :valid]] = torch.randn(int(keep.sum()), generator=g)
    idx = keep.reshape(-1).nonzero().reshape(-1)
    prev = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with cpu.use_isa(isa):
            yb = A.decode_attention(q, k, v, 0.125, keep)
            yf = A.decode_attention(q, k, v, 0.125, fmask)
            yp = A.decode_attention(q, k[:, :, idx], v[:, :, idx], 0.125)  # the attended rows alone
            ypf = A.decode_attention(q, k[:, :, idx], v[:, :, idx], 0.125, fmask[..., idx])
            none = A.decode_attention(q, k, v, 0.125, torch.zeros(1, 1, 1, cap, dtype=torch.bool))
    finally:
        torch.set_num_threads(prev)
    assert torch.isfinite(yb).all() and torch.isfinite(yf).all()
    assert torch.equal(yb, yp) and torch.equal(yf, ypf)
    check(yb, reference(q[..., :], k[:, :, idx], v[:, :, idx], 0.125), torch.bfloat16)
    check(yf, reference(q, k[:, :, idx], v[:, :, idx], 0.125, fmask[..., idx]), torch.bfloat16)
    assert none.shape == yb.shape and torch.isnan(none).all()


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("threads", [1, 2])
def test_strided_masked_threads(isa, threads):
    """Non-contiguous K/V (a cache slice), a boolean and a float mask, 1 and 2 threads."""
    g = torch.Generator().manual_seed(7)
    h, hkv, length, d = 16, 4, 200, 64
    q = torch.randn(1, 1, h, d, generator=g).bfloat16().transpose(1, 2)  # (1, H, 1, D), head stride D
    big = torch.randn(1, hkv, length + 50, d, generator=g).bfloat16()
    k, v = big[:, :, 10:10 + length], big.flip(2)[:, :, :length]
    assert not k.is_contiguous()
    keep = torch.rand(1, 1, 1, length, generator=g) > 0.3
    fmask = torch.randn(1, 1, 1, length, generator=g)
    prev = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with cpu.use_isa(isa):
            for mask in (None, keep, fmask):
                check(A.decode_attention(q, k, v, None, mask), reference(q, k, v, 1 / math.sqrt(d), mask), torch.bfloat16)
    finally:
        torch.set_num_threads(prev)


def test_rejects_bad_input():
    q = torch.randn(1, 6, 1, 16)
    with pytest.raises(ValueError, match="multiple"):
        A.decode_attention(q, torch.randn(1, 4, 5, 16), torch.randn(1, 4, 5, 16))
    with pytest.raises(ValueError, match="query"):
        A.decode_attention(torch.randn(1, 4, 2, 16), torch.randn(1, 4, 5, 16), torch.randn(1, 4, 5, 16))
    with pytest.raises(TypeError, match="dtype"):
        A.decode_attention(q.bfloat16(), torch.randn(1, 2, 5, 16), torch.randn(1, 2, 5, 16))
    with pytest.raises(ValueError, match="mask"):
        A.decode_attention(q, torch.randn(1, 2, 5, 16), torch.randn(1, 2, 5, 16), mask=torch.ones(1, 1, 1, 4, dtype=torch.bool))


def test_llama_decode_matches_sdpa():
    """A small random bf16 Llama: greedy decode logits with the nybble attention function equal the
    sdpa ones within bf16 rounding; the prefill (falls back to sdpa) is bit-identical."""
    transformers = pytest.importorskip("transformers")
    cfg = transformers.LlamaConfig(hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                                   num_attention_heads=8, num_key_value_heads=2, vocab_size=500)
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(cfg).to(torch.bfloat16).eval()
    ids = torch.randint(0, 500, (1, 12))

    def run(impl):
        model.set_attn_implementation(impl)
        with torch.inference_mode():
            out = model(input_ids=ids, use_cache=True)
            logits = [out.logits[:, -1].float()]
            tok = out.logits[:, -1:].argmax(-1)
            for _ in range(5):
                out = model(input_ids=tok, past_key_values=out.past_key_values, use_cache=True)
                logits.append(out.logits[:, -1].float())
                tok = ids[:, len(logits):len(logits) + 1]  # the same tokens for both runs
        return logits

    ref = run("sdpa")
    got = run(A.register())
    assert torch.equal(got[0], ref[0])  # prefill: the sdpa fallback
    for a, b in zip(got[1:], ref[1:]):
        assert (a - b).abs().max() <= 0.05 * b.abs().max()
    calls = []
    orig = A._run
    try:
        A._run = lambda *a, **k: calls.append(1) or orig(*a, **k)
        run(A.NAME)
    finally:
        A._run = orig
    assert len(calls) == 5 * cfg.num_hidden_layers  # every decode step of every layer took the fast path
