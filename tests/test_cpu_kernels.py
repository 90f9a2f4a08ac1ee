"""nybble_cpu (C++ kernels) against the reference kernel, on every ISA path this CPU can run.

Covering design (the full cartesian product would take too long): for every ISA path,
``test_all_settings`` runs every op x dtype x zero-point domain x group size with a decode and a
prefill M (bias and thread count alternate so both values of each meet every path), and
``test_all_m`` runs every M in {1, 2, 3, 4, 5, 13, 64, 257} for every op with rotating settings.
Shapes: N not a multiple of the 16-column block, K a multiple of the group but not of 256
(for group 256: K = 768), and per-channel with K = 328 (not a multiple of 16). Inputs are
random normal, never zeros; some are non-contiguous and some 3-D.

Tolerances. A16W4: the reference rounds the dequantized weight to the activation dtype and both
sum in fp32 in different orders, so ``|y - ref| <= 4 eps_dtype (||x*w||_2 + |ref|)
+ 4 eps_fp32 sqrt(K) ||x*w||_2`` (``||x*w||_2`` the 2-norm of the K products, computed in
float64). A8W4: the integer group sums are exact in both, so only the fp32 rounding of the
G-term scale sum remains: ``|y - ref| <= 4 G eps_fp32 sa sum_g |acc_g sw| + eps_fp32 |bias|
+ eps_dtype |ref|`` (the last term: one ulp of the output dtype).
"""
from __future__ import annotations

import functools
import itertools

import pytest
import torch

from nybble import primitives as P
from nybble.kernels import registry
from nybble.kernels.base import LinearSpec
from nybble.kernels.reference import ReferenceKernel
from nybble.plain import PlainInt4Weight

cpu = pytest.importorskip("nybble.kernels.cpu")
if not cpu.available_isas():
    pytest.skip("nybble._C is not available", allow_module_level=True)

ISAS = cpu.available_isas()
OPS = ("a16", "a8_sym", "a8_asym")
DTYPES = (torch.float32, torch.bfloat16, torch.float16)
DOMAINS = ("none", "int")
GROUPS = (32, 64, 128, 256, -1)
MS = (1, 2, 3, 4, 5, 13, 64, 257)
#: K per group size: a multiple of the group, not of 256 (except group 256), per-channel not of 16
K_FOR_GROUP = {32: 416, 64: 448, 128: 384, 256: 768, -1: 328}
NS = (40, 17, 200, 1)


@pytest.fixture
def threads():
    old = torch.get_num_threads()
    yield lambda n: torch.set_num_threads(n)
    torch.set_num_threads(old)


def make_weight(n, k, group, domain, dtype):
    w = torch.randn(n, k) * 0.05
    return PlainInt4Weight.from_float(w, group, domain, dtype)


def make_x(shape, dtype, layout):
    """Random activations of ``shape`` (..., K): contiguous, a non-contiguous view, or 3-D."""
    *lead, k = shape
    m = 1
    for d in lead:
        m *= d
    if layout == "noncontig":  # every other column of a wider tensor
        return (torch.randn(m, 2 * k) * 2).to(dtype)[:, ::2]
    if layout == "transposed":  # a (K, M) tensor seen as (M, K)
        return (torch.randn(k, m) * 2).to(dtype).t()
    if layout == "3d":
        b = 2 if m % 2 == 0 else 1
        return (torch.randn(b, m // b, k) * 2).to(dtype)
    return (torch.randn(m, k) * 2).to(dtype)


def a16_tolerance(x, plain, y_ref):
    eps_d = torch.finfo(y_ref.dtype).eps
    eps32 = torch.finfo(torch.float32).eps
    x64 = x.reshape(-1, plain.k).double()
    w64 = plain.dequantize(torch.float32).double()
    norm = ((x64 ** 2) @ (w64 ** 2).t()).sqrt().reshape(y_ref.shape)
    return 4 * eps_d * (norm + y_ref.double().abs()) + 4 * eps32 * plain.k ** 0.5 * norm + 1e-30


def a8_tolerance(x, plain, y_ref, bias, asymmetric):
    eps_d = torch.finfo(y_ref.dtype).eps
    eps32 = torch.finfo(torch.float32).eps
    x2 = x.reshape(-1, plain.k)
    qa, sa, za = P.quantize_activations(x2, asymmetric)
    gl = P.group_len(plain.group_size, plain.k)
    g = plain.k // gl
    a = (qa - za[:, None]).double().reshape(-1, g, gl)
    zw = 8.0 if plain.zero_point is None else plain.zero_point.double().unsqueeze(-1)
    wq = plain.codes().double().reshape(plain.n, g, gl) - zw
    acc = torch.einsum("mgk,ngk->mng", a, wq)
    mag = (acc.abs() * plain.scale.double().abs()).sum(-1) * sa.double()[:, None]
    tol = 4 * g * eps32 * mag + eps_d * y_ref.double().abs().reshape(mag.shape)
    if bias is not None:
        tol = tol + eps32 * bias.double().abs()
    return tol.reshape(y_ref.shape) + 1e-30


@functools.lru_cache(maxsize=None)
def _case(op, dtype, domain, group, m, n, bias_on, layout):
    """Random weight, activations, bias, the reference output and the tolerance of one setting,
    made once and shared by every ISA path (each path is checked on the same random data)."""
    k = K_FOR_GROUP[group]
    plain = make_weight(n, k, group, domain, dtype)
    spec = LinearSpec.for_weight(plain, op, name=f"test.{op}")
    ref = ReferenceKernel(spec)
    x = make_x((m, k), dtype, layout)
    bias = (torch.randn(n) * 0.5).to(dtype) if bias_on else None
    y_ref = ref.apply(x, ref.prepack(plain), bias)
    if op == "a16":
        tol = a16_tolerance(x, plain, y_ref)
    else:
        tol = a8_tolerance(x, plain, y_ref, bias, op == "a8_asym")
    kern = cpu.NybbleCpuKernel(spec)
    return kern, kern.prepack(plain), x, bias, y_ref, tol


def check(op, isa, dtype, domain, group, m, n, bias_on, layout="contig"):
    kern, packed, x, bias, y_ref, tol = _case(op, dtype, domain, group, m, n, bias_on, layout)
    k = x.shape[-1]
    with cpu.use_isa(isa):
        y = kern.apply(x, packed, bias)
    assert y.dtype == dtype and y.shape == y_ref.shape == (*x.shape[:-1], n)
    assert torch.isfinite(y).all()
    err = (y.double() - y_ref.double()).abs()
    bad = err > tol
    assert not bad.any(), (f"{isa} {op} {dtype} {domain} g={group} M={m} N={n} K={k} bias={bias_on} {layout}: "
                           f"{int(bad.sum())} values off, max err {err.max():.3g}, "
                           f"max err/tol {(err / tol).max():.3g}")


SETTINGS = list(itertools.product(OPS, DTYPES, DOMAINS, GROUPS))


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("op,dtype,domain,group", SETTINGS,
                         ids=[f"{o}-{str(d)[6:]}-{z}-g{g}" for o, d, z, g in SETTINGS])
def test_all_settings(isa, op, dtype, domain, group, threads):
    i = SETTINGS.index((op, dtype, domain, group))
    threads(1 + i % 2)
    n = NS[i % 3]
    layout = ("contig", "noncontig", "3d", "transposed")[i % 4]
    check(op, isa, dtype, domain, group, 1, n, bias_on=i % 2 == 0, layout=layout)
    check(op, isa, dtype, domain, group, 13, n, bias_on=i % 3 != 0, layout="3d" if i % 2 else "contig")


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("m", MS)
def test_all_m(isa, op, m, threads):
    i = MS.index(m) + 3 * OPS.index(op)
    threads(1 + i % 2)
    check(op, isa, DTYPES[i % 3], DOMAINS[(i // 3) % 2], GROUPS[i % 5], m, NS[i % 4],
          bias_on=i % 2 == 1, layout=("contig", "noncontig", "3d", "transposed")[(i // 2) % 4])


@pytest.mark.parametrize("isa", ISAS)
def test_threads_and_wide_n(isa, threads):
    """Many 16-column blocks (threads split N) and 2 threads splitting M for the GEMM paths."""
    for t in (1, 2):
        threads(t)
        for op in OPS:
            check(op, isa, torch.bfloat16, "int", 128, 3, 1000, bias_on=True)
            check(op, isa, torch.float32, "none", 64, 70, 24, bias_on=False, layout="noncontig")


@pytest.mark.parametrize("isa", ISAS)
def test_decode_tile_paths(isa, threads):
    """M = 1..4 with group 128 on a wide N: the GEMV's 8-block (several tiles side by side), 4-,
    2- and 1-block paths and the narrow last tile (N = 16 * 43 + 5: 44 blocks, the last one
    partial; 21 blocks: a last tile of 1; 16 * 20 + 3: 21 blocks), 1 and 2 threads (each thread's
    own range, then the other's)."""
    for t in (1, 2):
        threads(t)
        for op in OPS:
            for n in (16 * 43 + 5, 16 * 21, 16 * 20 + 3):
                check(op, isa, torch.bfloat16, "int", 128, 1, n, bias_on=n % 2 == 1)
            check(op, isa, torch.float32, "none", 128, 2, 16 * 21, bias_on=True)
            check(op, isa, torch.bfloat16, "none", 128, 4, 16 * 43 + 5, bias_on=False)
            check(op, isa, torch.float16, "int", 128, 3, 16 * 21, bias_on=True)


def test_tile_interleaved_layout():
    """The packed arrays hold each tile of T = TILE_BLOCKS blocks (the last one narrower)
    interleaved: chunk c of block b at byte ((T t) * K/8 + c * w + (b - T t)) * 64, group g's
    scales at element ((T t) * G + g * w + (b - T t)) * 16 (t = b // T, w = the tile's width),
    as csrc/kernels.h reads them."""
    from nybble.kernels import cpu_layout as L
    T = L.TILE_BLOCKS
    n, k, gl = 16 * (4 * T) + 7, 64, 32  # 4 full tiles + a tile of 1 (partial block)
    codes = torch.randint(0, 16, (n, k), dtype=torch.uint8)
    scale = torch.rand(n, k // gl)
    qw, sp, _, _ = L.prepack(P.pack_int32(codes), scale, None, gl, False)
    nb, k8, G = L.num_blocks(n), k // 8, k // gl
    flat_q, flat_s = qw.reshape(-1), sp.reshape(-1)
    cpad = torch.cat([codes, codes.new_zeros(nb * 16 - n, k)])
    spad = torch.cat([scale, scale.new_zeros(nb * 16 - n, G)])
    for b in range(nb):
        t0 = b // T * T
        w = min(T, nb - t0)
        for c in range(k8):
            chunk = flat_q[((t0 * k8) + c * w + (b - t0)) * 64:][:64].reshape(16, 4)
            cols = cpad[b * 16:(b + 1) * 16, 8 * c:8 * c + 8]
            assert torch.equal(chunk & 0xF, cols[:, :4]) and torch.equal(chunk >> 4, cols[:, 4:])
        for g in range(G):
            i = (t0 * G + g * w + (b - t0)) * 16
            assert torch.equal(flat_s[i:i + 16], spad[b * 16:(b + 1) * 16, g])
    assert torch.equal(L.unpack_codes(qw, n), codes)


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("asymmetric", [False, True])
@pytest.mark.parametrize("group", [32, -1])
def test_activation_quantization_bit_exact(isa, asymmetric, group):
    x = torch.randn(37, 256) * torch.logspace(-3, 2, 37)[:, None]
    x[3] = 0.0  # an all-zero row gets scale 1
    x[5, :128] = 0.5 * (torch.arange(128) % 5 - 2).float() * (2.0 * 3.0 / 255.0)  # ties for rint
    x[7] = x[7].abs() + 0.1  # all positive: asymmetric zero point 0
    x[8] = -x[8].abs() - 0.1  # all negative: asymmetric zero point 255
    q, s, z, sums = cpu._ops.quantize_activations(x, asymmetric, group, isa)
    q_ref, s_ref, z_ref = P.quantize_activations(x, asymmetric)
    assert torch.equal(s, s_ref) and torch.equal(z, z_ref) and torch.equal(q, q_ref)
    gl = P.group_len(group, 256)
    assert torch.equal(sums, q_ref.reshape(37, -1, gl).sum(-1).to(torch.int32))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("domain", DOMAINS)
@pytest.mark.parametrize("group", GROUPS)
@pytest.mark.parametrize("op", ["a16", "a8_asym"])
def test_prepack_unpack_roundtrip(dtype, domain, group, op):
    n = 16 * 3 + 5
    k = K_FOR_GROUP[group]
    codes = torch.randint(0, 16, (n, k), dtype=torch.uint8)
    g = k // P.group_len(group, k)
    scale = (torch.rand(n, g) + 0.1).to(dtype)
    zp = torch.randint(0, 16, (n, g), dtype=torch.int8) if domain == "int" else None
    plain = PlainInt4Weight.from_codes(codes, scale, zp, group)
    kern = cpu.NybbleCpuKernel(LinearSpec.for_weight(plain, op))
    packed = kern.prepack(plain)
    assert ("wcomp" in packed) == (op == "a8_asym")
    back = kern.unpack(packed)
    assert torch.equal(back.qdata, plain.qdata)
    assert back.scale.dtype == dtype and torch.equal(back.scale, plain.scale)
    assert (back.zero_point is None) == (zp is None)
    if zp is not None:
        assert torch.equal(back.zero_point, zp)
    assert back.shape == plain.shape and back.group_size == group


def test_registry_first_choice_and_name():
    plain = make_weight(40, 384, 128, "none", torch.bfloat16)
    spec = LinearSpec.for_weight(plain, "a8_sym")
    assert registry.choose(spec) is cpu.NybbleCpuKernel
    kern = cpu.NybbleCpuKernel(spec)
    assert kern.display_name == f"nybble_cpu[{cpu.selected_isa()}]"
    with cpu.use_isa("scalar"):
        assert kern.display_name == "nybble_cpu[scalar]"
    assert cpu.selected_isa() == ISAS[-1] or cpu.selected_isa() == cpu.os.environ.get("NYBBLE_CPU_ISA")


def test_env_var_forcing_and_errors(monkeypatch):
    monkeypatch.setenv("NYBBLE_CPU_ISA", "scalar")
    assert cpu.selected_isa() == "scalar"
    monkeypatch.setenv("NYBBLE_CPU_ISA", "sse9")
    ok, reason = cpu.NybbleCpuKernel.is_supported("cpu")
    assert not ok and "sse9" in reason
    plain = make_weight(40, 384, 128, "none", torch.float32)
    spec = LinearSpec.for_weight(plain, "a16")
    assert registry.choose(spec) is not cpu.NybbleCpuKernel  # falls back
    with pytest.raises(registry.NoKernelError, match="sse9"):
        registry.choose(spec, force="nybble_cpu")
    # a path higher than the CPU has is an error naming what it has
    monkeypatch.setattr(cpu, "available_isas", lambda: ["scalar", "avx2"])
    monkeypatch.setenv("NYBBLE_CPU_ISA", "avx512")
    with pytest.raises(ValueError, match="not supported by this CPU"):
        cpu.selected_isa()


def test_can_implement_refusals():
    spec = LinearSpec(n=40, k=100, group_size=-1, domain=P.ZeroPointDomain.NONE,
                      act_mode=cpu.ActMode.A16, dtype=torch.float32, device_type="cpu")
    ok, reason = cpu.NybbleCpuKernel.can_implement(spec)
    assert not ok and "multiple of 8" in reason
    ok, reason = cpu.NybbleCpuKernel.is_supported("cuda")
    assert not ok


def test_torch_compile_sees_the_op():
    plain = make_weight(40, 384, 128, "int", torch.float32)
    bias = torch.randn(40)
    seen = []

    def backend(gm, example_inputs):
        seen.extend(str(node.target) for node in gm.graph.nodes if node.op == "call_function")
        return gm.forward

    for op, name in (("a16", "cpu_a16w4"), ("a8_asym", "cpu_a8w4")):
        kern = cpu.NybbleCpuKernel(LinearSpec.for_weight(plain, op))
        packed = kern.prepack(plain)

        def f(x):
            return torch.relu(kern.apply(x, packed, bias))

        torch._dynamo.reset()
        x = torch.randn(2, 5, 384)
        y = torch.compile(f, backend=backend)(x)
        assert any(f"nybble.{name}" in s for s in seen), seen
        torch.testing.assert_close(y, f(x), rtol=0, atol=0)


def test_missing_extension_only_refuses(monkeypatch):
    monkeypatch.setattr(cpu, "_ops", None)
    monkeypatch.setattr(cpu, "_IMPORT_ERROR", "nybble._C unavailable (ImportError: test)")
    ok, reason = cpu.NybbleCpuKernel.is_supported("cpu")
    assert not ok and "nybble._C unavailable" in reason
    plain = make_weight(40, 384, 128, "none", torch.float32)
    assert registry.choose(LinearSpec.for_weight(plain, "a16")) is not cpu.NybbleCpuKernel


def test_direct_eager_call_matches_dispatched_op():
    plain = make_weight(70, 384, 64, "int", torch.bfloat16)
    for op in OPS:
        kern = cpu.NybbleCpuKernel(LinearSpec.for_weight(plain, op))
        p = kern.prepack(plain)
        x = make_x((9, 384), torch.bfloat16, "contig")
        y = kern.apply(x, p, None)
        if op == "a16":
            y2 = torch.ops.nybble.cpu_a16w4(x, p["qw"], p["scale"], p["zero_point"], 70, 64, None, cpu.selected_isa())
        else:
            y2 = torch.ops.nybble.cpu_a8w4(x, p["qw"], p["scale"], p["zero_point"], p.get("wcomp"), 70, 64,
                                           op == "a8_asym", None, cpu.selected_isa())
        assert torch.equal(y, y2)


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_dtype_conversions_match_torch(isa, dtype):
    """The C++ input/output casts equal torch's casts bit for bit (incl. f16 subnormals, overflow)."""
    mags = torch.logspace(-9, 5, 1001)
    x = torch.cat([torch.randn(1001) * mags, -mags, torch.tensor([0.0, -0.0, 65504.0, 65520.0, 65519.99,
                                                                   float("inf"), -float("inf"), 1e-45])])
    kind = cpu._ops.SCALE_KIND[dtype]
    out = torch.empty(x.numel(), dtype=dtype)
    cpu._ops._C.from_f32(isa, x.data_ptr(), out.data_ptr(), kind, x.numel())
    assert torch.equal(out.view(torch.int16), x.to(dtype).view(torch.int16))
    back = torch.empty(x.numel())
    cpu._ops._C.to_f32(isa, out.data_ptr(), kind, back.data_ptr(), x.numel())
    assert torch.equal(back, out.float())


def test_empty_batch_and_concurrent_callers():
    import threading

    plain = make_weight(40, 384, 128, "int", torch.bfloat16)
    for op in OPS:
        kern = cpu.NybbleCpuKernel(LinearSpec.for_weight(plain, op))
        p = kern.prepack(plain)
        assert kern.apply(torch.randn(0, 384).bfloat16(), p, None).shape == (0, 40)
        assert kern.apply(torch.randn(2, 0, 384).bfloat16(), p, None).shape == (2, 0, 40)
    # two Python threads calling at once (the GIL is released inside): calls are serialized, results exact
    kern = cpu.NybbleCpuKernel(LinearSpec.for_weight(plain, "a8_asym"))
    p = kern.prepack(plain)
    xs = [make_x((33, 384), torch.bfloat16, "contig") for _ in range(2)]
    want = [kern.apply(x, p, None) for x in xs]
    got = [None, None]
    mismatches = []

    def work(i):
        for _ in range(20):
            got[i] = kern.apply(xs[i], p, None)
            if not torch.equal(got[i], want[i]):
                mismatches.append(i)

    ts = [threading.Thread(target=work, args=(i,)) for i in range(2)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert not mismatches and all(torch.equal(g, w) for g, w in zip(got, want))
