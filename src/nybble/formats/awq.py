"""AWQ checkpoints (AutoAWQ GEMM, ``quant_method: awq``, ``version: gemm``): import.

Per quantized linear ``p`` with N outputs, K inputs, G groups:

* ``p.qweight``: int32 ``(K, N/8)``, packed along N; nibble ``i`` (bits ``4i``) of word ``[k, j]``
  holds the code of column ``8j + [0, 2, 4, 6, 1, 3, 5, 7][i]`` (see :mod:`nybble.formats.packing`).
* ``p.qzeros``: int32 ``(G, N/8)``, packed the same way; zero points stored as they are (0..15).
* ``p.scales``: ``(G, N)`` float (fp16).
* ``p.bias`` optional.

Dequantization: ``w[n, k] = (q - zero[k // g, n]) * scales[k // g, n]``. AWQ's activation scales are
already folded into the previous layers by AutoAWQ, so nothing else is stored.
"""
from __future__ import annotations

import torch

from ..plain import PlainInt4Weight
from ..types import ActMode
from . import packing
from .qweight_importer import QweightImporter, required_tensors
from .safetensors_io import CheckpointError

QUANT_METHOD = "awq"
SUFFIXES = ("qweight", "qzeros", "scales", "bias")


def parse_config(qcfg: dict, where: str) -> dict:
    bits = qcfg.get("bits", qcfg.get("w_bit"))
    if bits != 4:
        raise CheckpointError(f"{where}: AWQ checkpoint with bits={bits!r}; nybble reads only 4-bit AWQ")
    gs = qcfg.get("group_size", qcfg.get("q_group_size", 128))
    if not isinstance(gs, int) or not (gs == -1 or (gs > 0 and gs % 8 == 0)):
        raise CheckpointError(f"{where}: AWQ group_size {gs!r}; expected -1 or a positive multiple of 8")
    version = str(qcfg.get("version", "gemm")).lower()
    if version != "gemm":
        raise CheckpointError(f"{where}: AWQ version {qcfg.get('version')!r} is not supported; nybble reads "
                              "the GEMM packing (version 'gemm')")
    if not qcfg.get("zero_point", True):
        raise CheckpointError(f"{where}: AWQ with zero_point=false is not supported; nybble reads "
                              "asymmetric (zero_point=true) AWQ checkpoints")
    return {"group_size": gs, "modules_to_not_convert": qcfg.get("modules_to_not_convert") or []}


def plain_from_awq(t: dict[str, torch.Tensor], prefix: str, group_size: int, where: str,
                   expect_nk: tuple[int, int] | None) -> PlainInt4Weight:
    qweight, qzeros, scales = required_tensors(t, prefix, ("qweight", "qzeros", "scales"), where, "AWQ")
    if qweight.dtype != torch.int32 or qweight.dim() != 2:
        raise CheckpointError(f"{where}: {prefix}.qweight must be a 2-D int32 tensor (K, N/8), "
                              f"got {qweight.dtype} {tuple(qweight.shape)}")
    k, n = qweight.shape[0], qweight.shape[1] * 8
    if expect_nk is not None and (n, k) != tuple(expect_nk):
        raise CheckpointError(f"{where}: {prefix}.qweight has shape {tuple(qweight.shape)} = (K, N/8) for "
                              f"N={n} K={k}, but the model's layer is N={expect_nk[0]} K={expect_nk[1]}")
    gl = k if group_size == -1 else group_size
    if k % gl or k % 8:
        raise CheckpointError(f"{where}: {prefix}: K={k} is not divisible by group_size {group_size} and 8")
    g = k // gl
    if not scales.is_floating_point() or tuple(scales.shape) != (g, n):
        raise CheckpointError(f"{where}: {prefix}.scales must be float of shape {(g, n)} (K/group, N), "
                              f"got {scales.dtype} {tuple(scales.shape)}")
    if qzeros.dtype != torch.int32 or tuple(qzeros.shape) != (g, n // 8):
        raise CheckpointError(f"{where}: {prefix}.qzeros must be int32 of shape {(g, n // 8)} "
                              f"(K/group, N/8), got {qzeros.dtype} {tuple(qzeros.shape)}")
    codes = packing.awq_unpack(qweight).t().contiguous()          # (N, K)
    zero = packing.awq_unpack(qzeros).t().to(torch.int8).contiguous()   # (N, G)
    return PlainInt4Weight.from_codes(codes, scales.t().contiguous(), zero, group_size)


class AwqImporter(QweightImporter):
    """Reads AutoAWQ GEMM checkpoints."""

    method = QUANT_METHOD
    suffixes = SUFFIXES
    parse_config = staticmethod(parse_config)

    @staticmethod
    def describe(cfg: dict) -> dict:
        return {"awq_version": "gemm"}

    def build(self, prefix, tensors, module, dtype, device):
        from .loader import make_layer
        where = self.where.removesuffix("config.json").rstrip("/") or self.where
        plain = plain_from_awq(tensors, prefix, self.cfg["group_size"], where,
                               (module.out_features, module.in_features))
        return make_layer(prefix, plain, None, tensors.get("bias"), ActMode.A16, dtype, device, self.force_kernel)

    def describe_layers(self, files) -> list:
        from .inspect import LayerDesc, tensor_bytes
        out = []
        for prefix in self.layer_prefixes(files):
            k, n8 = files.shapes[f"{prefix}.qweight"]
            nbytes = sum(tensor_bytes(files, f"{prefix}.{s}") for s in SUFFIXES if f"{prefix}.{s}" in files)
            out.append(LayerDesc(prefix, n8 * 8, k, self.cfg["group_size"], False, ActMode.A16, False, nbytes))
        return out
