"""``TritonKernel``: nybble's NVIDIA GPU kernel (A16W4 and A8W4), written in Triton.

Importing this module imports triton; the registry imports it only for CUDA layers, and an import
failure becomes this kernel's refusal reason, so ``import nybble`` never needs triton.

Packed (GPU) layout, made by :meth:`TritonKernel.prepack`, never saved:

* ``qweight`` int32 ``(N/16, K8/32, 16, 32)`` ("blocked", K8 = K/8): the plain words (codes of row n
  along K, 8 per word, least significant nibble first) cut into blocks of 16 rows x 32 words (256
  K values); each block is 2 KiB contiguous and blocks run along K, then along N.  N and K8 are
  zero-padded up to the block.  A16W4 words hold their 8 codes in the "paired" nibble order of
  ``layout.PAIR_K`` (K offsets 0, 2, 4, 6, 1, 3, 5, 7 in nibbles 0..7), so that one shift and mask
  gives two codes of adjacent K (see ``mma.py``); A8W4 words keep the plain order.  A kernel tile of BLOCK_N x BLOCK_K therefore reads a few long
  contiguous runs (DRAM-friendly) with 16-byte vector loads.  ``NYBBLE_TRITON_LAYOUT=plain`` keeps
  the plain 2-D ``(N, K/8)`` words instead (for comparisons);
* ``scale`` ``(G, N)`` activation dtype; ``zero_point`` int8 ``(G, N)`` (``int`` domain only);
* A8W4 only: ``wsum`` int64 ``(G, N)`` (torch's integer sum; the kernels read it as int32: |sum| <= 15 x 256),
  the per-group sum of ``q - z`` (asymmetric activations);
* ``locks`` int32 zeros, the split-K counters of the mma.sync GEMV (``ops.mma_locks``).

``unpack`` transposes scale/zero back: exact.
"""
from __future__ import annotations

from functools import partial

import torch

from ...plain import PlainInt4Weight
from ...types import ActMode
from ..base import LinearKernel, LinearSpec, PackedWeight
from . import ops
from .checks import can_implement_spec
from .eager_plan import EagerPlans
from .layout import block_words, pair_nibbles, unblock_words, unpair_nibbles


def _use_op() -> bool:
    # Under torch.compile / export the opaque torch op is traced; in eager the layer's cached launch
    # plan (eager_plan.py) or the same launcher is called directly, which saves the custom-op
    # dispatch and the launcher's Python work (tens of microseconds per call at M=1).
    return torch.compiler.is_compiling()


class TritonKernel(LinearKernel):
    """Triton kernels for CUDA GPUs of compute capability >= 8.0 (bf16/int8 tensor cores)."""

    name = "triton"
    device_types = ("cuda",)
    min_cuda_capability = (8, 0)  # bf16 / int8 tensor cores

    @classmethod
    def can_implement(cls, spec: LinearSpec):
        return can_implement_spec(spec)

    def prepack(self, plain: PlainInt4Weight) -> PackedWeight:
        words = plain.qdata if self.spec.act_mode.is_a8 else pair_nibbles(plain.qdata)
        packed = {"qweight": block_words(words), "scale": plain.scale.t().contiguous()}
        if plain.zero_point is not None:
            packed["zero_point"] = plain.zero_point.t().contiguous()
        if self.spec.act_mode.is_a8:
            packed["wsum"] = group_weight_sums(plain)
        packed["locks"] = ops.mma_locks(self.spec.n, plain.qdata.device)
        return packed

    def unpack(self, packed: PackedWeight) -> PlainInt4Weight:
        zp = packed.get("zero_point")
        qdata = unblock_words(packed["qweight"], self.spec.n, self.spec.k // 8)
        if not self.spec.act_mode.is_a8:
            qdata = unpair_nibbles(qdata)
        return PlainInt4Weight(qdata, packed["scale"].t().contiguous(),
                               None if zp is None else zp.t().contiguous(), self.spec.group_size,
                               (self.spec.n, self.spec.k))

    #: this layer's cached eager launch plans (:class:`eager_plan.EagerPlans`), made on first use; their
    #: scratch comes from ``_scratch_pool``, which outlives them (CUDA graphs may hold its addresses)
    _plans = None

    def apply(self, x, packed, bias):
        s = self.spec
        if type(x) is torch.Tensor and not _use_op():
            # eager: the layer's cached launch plan for x's shape (built by the first call of a shape)
            plans = self._plans
            tensors = (*packed.values(), bias)
            if plans is None or not plans.matches(tensors):
                plans = self._plans = EagerPlans(partial(self._launch, packed=packed, bias=bias), tensors, s.n, s.k,
                                                 s.dtype, self.__dict__.setdefault("_scratch_pool", []))
            y = plans(x)
            if y is not None:
                return y
        x2 = x.reshape(-1, s.k)
        if not _use_op():
            return self._launch(x2, packed, bias).reshape(*x.shape[:-1], s.n)
        zp = packed.get("zero_point")
        if s.act_mode.is_a8:
            y = torch.ops.nybble.triton_a8w4(x2, packed["qweight"], packed["scale"], zp, packed["wsum"],
                                             s.group_size, s.act_mode is ActMode.A8_ASYM, bias, packed.get("locks"))
        else:
            y = torch.ops.nybble.triton_a16w4(x2, packed["qweight"], packed["scale"], zp, s.group_size, bias,
                                              packed.get("locks"))
        return y.reshape(*x.shape[:-1], s.n)

    def eager_entry(self):
        """The eager launch plans of the last ``apply`` (``EagerPlans``: ``x -> y``, or None when a call
        must take the ordinary path); see :meth:`LinearKernel.eager_entry`."""
        return self._plans

    def _launch(self, x2, packed, bias):
        """The ordinary eager path (no torch op): x2 (M, K) -> (M, N) in the spec's dtype."""
        s = self.spec
        zp = packed.get("zero_point")
        if s.act_mode.is_a8:
            return ops.launch_a8w4(x2, packed["qweight"], packed["scale"], zp, packed["wsum"], s.group_size,
                                   s.act_mode is ActMode.A8_ASYM, bias, None, packed.get("locks"))
        return ops.launch_a16w4(x2, packed["qweight"], packed["scale"], zp, s.group_size, bias, None,
                                packed.get("locks"))


def group_weight_sums(plain: PlainInt4Weight) -> torch.Tensor:
    """int64 ``(G, N)``: per group, the sum over its K entries of ``q - z`` (``z = 8`` if symmetric)."""
    g = plain.k if plain.group_size == -1 else plain.group_size
    codes = plain.codes().to(torch.int32).reshape(plain.n, plain.k // g, g).sum(-1)
    zp = 8 if plain.zero_point is None else plain.zero_point.to(torch.int32)
    return (codes - zp * g).t().contiguous()
