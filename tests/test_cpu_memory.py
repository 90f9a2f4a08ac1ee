"""Huge-page memory for the CPU kernels' packed weights (nybble.kernels.cpu_memory)."""
import gc

import pytest
import torch

from nybble.kernels import cpu_memory as M


@pytest.mark.parametrize("dtype", [torch.uint8, torch.bfloat16, torch.int32])
def test_to_hugepages_copies_exactly_and_stays_alive(dtype):
    n = (M.MIN_BYTES * 3 + 4096) // torch.empty(0, dtype=dtype).element_size()  # ragged end
    src = torch.randint(0, 100, (n // 64, 64), dtype=torch.int32).to(dtype)
    out = M.to_hugepages(src)
    assert out.shape == src.shape and out.dtype == dtype and out.is_contiguous()
    assert out.data_ptr() != src.data_ptr()
    assert out.data_ptr() % M.HUGE_PAGE == 0  # own 2 MiB-aligned mapping
    del src
    gc.collect()  # the tensor alone keeps its mapping alive
    ref = torch.randint(0, 100, (n // 64, 64), dtype=torch.int32, generator=torch.Generator().manual_seed(0)).to(dtype)
    out.copy_(ref)
    gc.collect()
    assert torch.equal(out.clone(), ref)
    out.add_(1)  # writable
    assert torch.equal(out, ref + 1)


def test_small_arrays_stay_on_torch_memory():
    t = torch.arange(1000, dtype=torch.int32)
    assert M.to_hugepages(t) is t
    e = M.hugepage_empty((10, 3), torch.float32)
    assert e.shape == (10, 3) and e.dtype == torch.float32


def test_prepacked_weight_in_hugepage_memory_computes_the_same():
    """A layer large enough for huge pages gives the same output as its packed arrays copied to
    ordinary memory (the kernels only see addresses)."""
    from nybble.kernels import registry
    from nybble.kernels.base import LinearSpec
    from nybble.plain import PlainInt4Weight
    g = torch.Generator().manual_seed(1)
    n, k = 2080, 2048  # qw: 130 blocks x 16 KiB = 2.1 MiB
    qdata = torch.randint(-2**31, 2**31 - 1, (n, k // 8), dtype=torch.int32, generator=g)
    scale = ((torch.rand(n, k // 128, generator=g) + 0.5) / 64).bfloat16()
    zp = torch.randint(0, 16, (n, k // 128), dtype=torch.int8, generator=g)
    plain = PlainInt4Weight(qdata, scale, zp, 128, (n, k))
    spec = LinearSpec.for_weight(plain, "a16", name="hp")
    kern = registry.choose(spec, force="nybble_cpu")(spec)
    packed = kern.prepack(plain)
    assert packed["qw"].data_ptr() % M.HUGE_PAGE == 0
    ordinary = {name: t.clone() for name, t in packed.items()}
    x = torch.randn(3, k, generator=g).bfloat16()
    assert torch.equal(kern.apply(x, packed, None), kern.apply(x, ordinary, None))
    ref = torch.ops.nybble.reference_a16w4(x.float(), qdata, scale.float(), zp, 128, None)
    assert torch.allclose(kern.apply(x, packed, None).float(), ref, rtol=2e-2, atol=2e-2)
