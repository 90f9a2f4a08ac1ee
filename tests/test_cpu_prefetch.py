"""nybble._C's cross-op weight prefetch (csrc/prefetch.h): results unchanged, learnt call order,
stale addresses harmless, the NYBBLE_CPU_PREFETCH switch."""
import gc
import os
import subprocess
import sys

import pytest
import torch

ops = pytest.importorskip("nybble.kernels.cpu_ops")
_C = ops._C

from nybble.bench.cpu import _random_plain  # noqa: E402
from nybble.kernels import registry  # noqa: E402
from nybble.kernels.base import LinearSpec  # noqa: E402


def _layers(shapes, act, dtype, seed=0, domain="int"):
    """[(kernel, packed)] of random int4 weights (group 128) for (K, N) shapes, prepacked for nybble_cpu."""
    gen = torch.Generator().manual_seed(seed)
    out = []
    for k, n in shapes:
        plain = _random_plain(n, k, 128, domain, dtype, gen)
        spec = LinearSpec.for_weight(plain, act, name=f"t{k}x{n}")
        kern = registry.choose(spec, force="nybble_cpu")(spec)
        out.append((kern, kern.prepack(plain)))
    return out


def _chain(layers, xs):
    """Each layer applied to its own input (M, K); outputs in call order."""
    return [kern.apply(x, packed, None) for (kern, packed), x in zip(layers, xs)]


@pytest.fixture(autouse=True)
def _restore():
    info = _C.prefetch_info()
    yield
    _C.prefetch_drain()
    _C.prefetch_configure(enabled=int(info["enabled"]), cap=info["cap"],
                          hint=["t0", "t1", "t2", "nta", "w"].index(info["hint"]), spin_us=info["spin_us"],
                          pace_gbps=info["pace_gbps"])
    _C.prefetch_reset()


@pytest.mark.parametrize("act,dtype,domain", [("a16", torch.bfloat16, "int"), ("a16", torch.float32, "none"),
                                               ("a8_sym", torch.bfloat16, "int"), ("a8_asym", torch.float32, "int")])
@pytest.mark.parametrize("m", [1, 3])
def test_bit_identical_on_and_off(act, dtype, domain, m):
    shapes = [(256, 96), (384, 256), (256, 520)]
    layers = _layers(shapes, act, dtype, domain=domain)
    gen = torch.Generator().manual_seed(1)
    xs = [torch.randn(m, k, generator=gen).to(dtype) for k, _ in shapes]
    _C.prefetch_configure(enabled=0)
    off = _chain(layers, xs)
    _C.prefetch_configure(enabled=1, cap=1 << 20, hint=1, pace_gbps=0)
    _C.prefetch_reset()
    before = _C.prefetch_info()
    for hint in range(5):  # every prefetch instruction
        _C.prefetch_configure(hint=hint)
        for _ in range(3):  # the order is learnt by the second pass, prefetches posted from then on
            on = _chain(layers, xs)
            for a, b in zip(on, off):
                assert torch.equal(a, b)
    _C.prefetch_drain()
    after = _C.prefetch_info()
    assert after["calls"] - before["calls"] == 15 * len(layers)
    # the learnt order lives in a direct-mapped table keyed by weight address: a slot collision between two
    # layers (addresses differ per run) only loses predictions, never correctness
    predicted = after["predicted"] - before["predicted"]
    if _distinct_slots(layers):
        assert predicted >= 14 * len(layers) - 1
    else:
        assert 0 < predicted <= 15 * len(layers)
    if after["threads"] >= 2:
        assert after["posted"] > before["posted"]
    # and against the reference kernel, so the comparison is not between two wrong results
    kern, packed = layers[0]
    ref = kern.unpack(packed)
    if act == "a16":
        want = torch.ops.nybble.reference_a16w4(xs[0].float(), ref.qdata, ref.scale.float(), ref.zero_point, 128,
                                                None)
        torch.testing.assert_close(off[0].float(), want, rtol=2e-2, atol=2e-2)
    else:
        want = torch.ops.nybble.reference_a8w4(xs[0], ref.qdata, ref.scale, ref.zero_point, 128,
                                               act == "a8_asym", None)
        torch.testing.assert_close(off[0].float(), want.float(), rtol=2e-2, atol=2e-2)


def _key(layer):
    return layer[1]["qw"].data_ptr()


def _slot(key):
    """The learnt-order table slot of a weight address (csrc/prefetch.h, Prefetcher::slot; 1024 slots)."""
    return ((((key >> 6) * 0x9E3779B97F4A7C15) & (2**64 - 1)) >> 54) & 1023


def _distinct_slots(layers):
    """Do the layers' weights use different slots (the table is direct-mapped: a collision, which
    depends on the addresses of a run, only loses predictions)?"""
    return len({_slot(_key(layer)) for layer in layers}) == len(layers)


def test_learnt_order_follows_a_changed_order():
    attempts = [_layers([(256, 64), (256, 128), (256, 192)], "a16", torch.bfloat16)]
    while not _distinct_slots(attempts[-1]) and len(attempts) < 20:  # (kept alive: new addresses)
        attempts.append(_layers([(256, 64), (256, 128), (256, 192)], "a16", torch.bfloat16))
    layers = attempts[-1]
    assert _distinct_slots(layers)
    a, b, c = layers
    x = torch.randn(1, 256).to(torch.bfloat16)
    _C.prefetch_configure(enabled=1)
    _C.prefetch_reset()
    for _ in range(2):
        for kern, packed in (a, b, c):
            kern.apply(x, packed, None)
    assert _C.prefetch_next(_key(a)) == _key(b)
    assert _C.prefetch_next(_key(b)) == _key(c)
    assert _C.prefetch_next(_key(c)) == _key(a)  # the next pass starts with a
    for kern, packed in (a, c, b, a):
        kern.apply(x, packed, None)
    assert _C.prefetch_next(_key(a)) == _key(c)
    assert _C.prefetch_next(_key(c)) == _key(b)
    assert _C.prefetch_next(_key(b)) == _key(a)
    # prefill-sized calls (M > 4) neither learn nor post
    big = torch.randn(8, 256).to(torch.bfloat16)
    b[0].apply(big, b[1], None)
    a[0].apply(big, a[1], None)
    assert _C.prefetch_next(_key(b)) == _key(a)
    # switched off: nothing is learnt
    _C.prefetch_configure(enabled=0)
    _C.prefetch_reset()
    for kern, packed in (a, b):
        kern.apply(x, packed, None)
    assert _C.prefetch_next(_key(a)) == 0


def test_freed_weights_then_another_model():
    _C.prefetch_configure(enabled=1, cap=8 << 20, hint=4, pace_gbps=64)
    _C.prefetch_reset()
    x = torch.randn(1, 512).to(torch.bfloat16)
    first = _layers([(512, 4096), (512, 4096)], "a16", torch.bfloat16, seed=3)
    for _ in range(2):
        for kern, packed in first:
            kern.apply(x, packed, None)
    stale = _key(first[1])
    keep = first[0]
    del first
    gc.collect()
    # keep's successor is the freed layer: calling keep posts a prefetch of freed memory (harmless)
    assert _C.prefetch_next(_key(keep)) == stale
    for _ in range(5):
        keep[0].apply(x, keep[1], None)
    second = _layers([(512, 2048), (512, 1024)], "a8_sym", torch.bfloat16, seed=4)
    for _ in range(3):
        for kern, packed in second:
            y = kern.apply(x, packed, None)
    _C.prefetch_drain()
    assert torch.isfinite(y).all()


def test_switch_by_environment():
    code = ("import torch, nybble.kernels.cpu_ops as o, nybble._C as C; "
            "from test_cpu_prefetch import _layers; "
            "ls = _layers([(256, 64), (256, 64)], 'a16', torch.bfloat16); x = torch.randn(1, 256).bfloat16(); "
            "[k.apply(x, p, None) for _ in range(3) for k, p in ls]; i = C.prefetch_info(); "
            "print(i['enabled'], i['calls'], i['posted'])")
    for value, want in (("0", ["False", "0", "0"]), (None, ["False", "0", "0"]), ("1", ["True", "6"])):
        env = {k: v for k, v in os.environ.items() if k != "NYBBLE_CPU_PREFETCH"}
        env["PYTHONPATH"] = os.path.dirname(os.path.abspath(__file__))
        if value is not None:  # default (unset): off
            env["NYBBLE_CPU_PREFETCH"] = value
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        assert out.stdout.split()[:len(want)] == want


def test_state_line_for_nybble_info():
    from nybble.commands.info import cpu_isa_line
    from nybble.kernels.cpu import prefetch_state
    _C.prefetch_configure(enabled=0)
    assert prefetch_state().startswith("off")
    assert "cross-op prefetch: off" in cpu_isa_line()
    _C.prefetch_configure(enabled=1, cap=3 << 20, hint=4)
    assert prefetch_state() == "on (cap 3072 KiB, prefetchw)"
