"""The compressed-tensors ``pack-quantized`` format (what vLLM and transformers load).

Per quantized linear with prefix ``p`` (N outputs, K inputs, G groups along K):

* ``p.weight_packed``: int32 ``(N, K/8)``; element k of row n in word k//8 at bits ``4*(k%8)``; the
  stored nibble is the signed int4 value + 8. That is exactly nybble's plain ``qdata`` (codes 0..15).
* ``p.weight_scale``: ``(N, G)`` in the model dtype (``G = 1`` for the ``channel`` strategy).
* ``p.weight_zero_point`` (asymmetric only): int32 ``(ceil(N/8), G)``, packed along N: zero point of
  row n, group j sits in word ``[n//8, j]`` at bits ``4*(n%8)``, stored as signed zero point + 8
  (= nybble's unsigned zero point 0..15); rows past N are padding (0).
* ``p.weight_shape``: int64 ``[N, K]``.
* ``p.weight_g_idx`` (optional, activation-ordered groups): int32 ``(K,)``, group of each input.

Dequantization in both conventions: ``w = (q_signed - z_signed) * s = (code - zero) * s``.
``quantization_config`` holds ``config_groups`` (schemes with ``targets``), ``ignore`` and ``format``.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import torch
from torch import nn

from .. import primitives as P
from ..plain import PlainInt4Weight
from ..types import ActMode
from .safetensors_io import CheckpointError

QUANT_METHOD = "compressed-tensors"
FORMAT = "pack-quantized"
#: the compressed-tensors release whose format nybble writes (and was checked against)
CT_VERSION = "0.20.0"
SUFFIXES = ("weight_packed", "weight_scale", "weight_zero_point", "weight_shape", "weight_g_idx", "bias")


# -- packing of the zero point along N ---------------------------------------------------------
def pack_zero_point(zero: torch.Tensor) -> torch.Tensor:
    """nybble zero point int8 ``(N, G)`` 0..15 -> compressed-tensors int32 ``(ceil(N/8), G)`` packed along N."""
    n, g = zero.shape
    pad = (-n) % 8
    z = zero.to(torch.int32)
    if pad:
        z = torch.cat([z, torch.zeros(pad, g, dtype=torch.int32)], 0)
    return P.pack_int32(z.t().contiguous()).t().contiguous()


def unpack_zero_point(packed: torch.Tensor, n: int) -> torch.Tensor:
    """Inverse of :func:`pack_zero_point`: int32 ``(ceil(N/8), G)`` -> int8 ``(N, G)`` in 0..15."""
    return P.unpack_int32(packed.t().contiguous()).t()[:n].to(torch.int8).contiguous()


# -- schemes ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Scheme:
    """What one ``config_groups`` entry says about its layers."""

    group_size: int          # -1 = channel strategy
    symmetric: bool
    act_mode: ActMode
    #: groups given by ``weight_g_idx`` (activation order) instead of contiguous runs of K. Written as
    #: ``"actorder": "group"`` (the format's meaning of ``weight_g_idx``); compressed-tensors 0.20's config
    #: validator no longer accepts that value, so only nybble and older readers load such checkpoints -
    #: export them with ``nybble export --format gptq`` (desc_act) for other tools.
    act_order: bool = False

    def to_json(self, targets: list[str]) -> dict:
        w = {"num_bits": 4, "type": "int", "symmetric": self.symmetric,
             "group_size": None if self.group_size == -1 else self.group_size,
             "strategy": "channel" if self.group_size == -1 else "group", "dynamic": False}
        if self.act_order:
            w["actorder"] = "group"
        ia = None
        if self.act_mode.is_a8:
            ia = {"num_bits": 8, "type": "int", "symmetric": self.act_mode is ActMode.A8_SYM,
                  "group_size": None, "strategy": "token", "dynamic": True}
        return {"targets": targets, "weights": w, "input_activations": ia, "output_activations": None,
                "format": FORMAT}

    @classmethod
    def from_json(cls, d: dict, where: str) -> "Scheme":
        w = d.get("weights")
        if not isinstance(w, dict):
            raise CheckpointError(f"{where}: scheme has no 'weights' section; nybble reads int4 weight schemes")
        if w.get("num_bits") != 4 or w.get("type", "int") != "int":
            raise CheckpointError(f"{where}: weights are {w.get('num_bits')}-bit {w.get('type')}; "
                                  "nybble reads only 4-bit int weights")
        strategy = w.get("strategy")
        if strategy == "group":
            gs = w.get("group_size")
            if not isinstance(gs, int) or gs <= 0 or gs % 8:
                raise CheckpointError(f"{where}: group strategy with group_size {gs!r}; expected a positive "
                                      "multiple of 8")
        elif strategy == "channel":
            gs = -1
        else:
            raise CheckpointError(f"{where}: weight strategy {strategy!r} is not supported; "
                                  "expected 'group' or 'channel'")
        if w.get("dynamic") not in (False, None):
            raise CheckpointError(f"{where}: dynamic weight quantization is not a stored int4 weight")
        ia = d.get("input_activations")
        if ia is None:
            act = ActMode.A16
        else:
            if ia.get("num_bits") != 8 or ia.get("type", "int") != "int" or ia.get("strategy") != "token" \
                    or not ia.get("dynamic"):
                raise CheckpointError(f"{where}: input activations {ia} are not supported; nybble runs "
                                      "dynamic per-token 8-bit int activations or none")
            act = ActMode.A8_SYM if ia.get("symmetric", True) else ActMode.A8_ASYM
        if d.get("output_activations") is not None:
            raise CheckpointError(f"{where}: output activation quantization is not supported")
        return cls(gs, bool(w.get("symmetric", True)), act, w.get("actorder") == "group")


def _target_matches(target: str, name: str, module: nn.Module | None) -> bool:
    if target.startswith("re:"):
        return re.match(target[3:], name) is not None
    if target == name:
        return True
    return module is not None and target in {c.__name__ for c in type(module).__mro__}


def parse_config(qcfg: dict, where: str) -> tuple[list[tuple[list[str], Scheme]], list[str]]:
    """Check a compressed-tensors ``quantization_config``; returns ``([(targets, scheme)], ignore)``."""
    fmt = qcfg.get("format")
    groups = qcfg.get("config_groups")
    if not isinstance(groups, dict) or not groups:
        raise CheckpointError(f"{where}: quantization_config has no 'config_groups'")
    out = []
    for gname, g in groups.items():
        gfmt = g.get("format") or fmt
        if gfmt != FORMAT:
            raise CheckpointError(f"{where}: config group {gname!r} has format {gfmt!r}; nybble reads "
                                  f"only {FORMAT!r}")
        targets = g.get("targets") or []
        out.append((list(targets), Scheme.from_json(g, f"{where}: config group {gname!r}")))
    ignore = list(qcfg.get("ignore") or [])
    return out, ignore


def scheme_for(name: str, module: nn.Module | None, groups, ignore: list[str]) -> Scheme | None:
    """The scheme of layer ``name`` (None when ignored or not targeted)."""
    if any(_target_matches(t, name, None) for t in ignore):
        return None
    for targets, scheme in groups:
        if any(_target_matches(t, name, module) for t in targets):
            return scheme
    return None


# -- tensors ------------------------------------------------------------------------------------
def to_ct_tensors(plain: PlainInt4Weight) -> dict[str, torch.Tensor]:
    """nybble plain -> ``{suffix: tensor}`` for ``weight_packed``/``weight_scale``/``weight_shape``
    (+ ``weight_zero_point`` in the ``int`` domain)."""
    out = {"weight_packed": plain.qdata, "weight_scale": plain.scale,
           "weight_shape": torch.tensor([plain.n, plain.k], dtype=torch.int64)}
    if plain.zero_point is not None:
        out["weight_zero_point"] = pack_zero_point(plain.zero_point)
    return out


def from_ct_tensors(t: dict[str, torch.Tensor], scheme: Scheme, prefix: str, where: str,
                    expect_nk: tuple[int, int] | None) -> tuple[PlainInt4Weight, torch.Tensor | None]:
    """``{suffix: tensor}`` of one layer -> ``(PlainInt4Weight, g_idx or None)``, checking every shape.

    Raises CheckpointError naming ``where`` and ``prefix.<suffix>`` with the expected shape/dtype.
    """
    def need(s):
        if s not in t:
            raise CheckpointError(f"{where}: tensor {prefix}.{s} is missing (needed by the pack-quantized "
                                  f"layer {prefix})")
        return t[s]

    packed, scale, shape_t = need("weight_packed"), need("weight_scale"), need("weight_shape")
    if shape_t.numel() != 2 or shape_t.is_floating_point():
        raise CheckpointError(f"{where}: {prefix}.weight_shape must be an integer tensor [N, K], "
                              f"got {shape_t.dtype} {tuple(shape_t.shape)}")
    n, k = (int(v) for v in shape_t.tolist())
    if expect_nk is not None and (n, k) != tuple(expect_nk):
        raise CheckpointError(f"{where}: {prefix}.weight_shape is {[n, k]} but the model's layer is "
                              f"{list(expect_nk)} (out_features, in_features)")
    if k % 8:
        raise CheckpointError(f"{where}: {prefix}: in_features K={k} is not a multiple of 8")
    if packed.dtype != torch.int32 or tuple(packed.shape) != (n, k // 8):
        raise CheckpointError(f"{where}: {prefix}.weight_packed must be int32 of shape {(n, k // 8)}, "
                              f"got {packed.dtype} {tuple(packed.shape)}")
    gs = scheme.group_size
    if gs != -1 and k % gs:
        raise CheckpointError(f"{where}: {prefix}: K={k} is not divisible by group_size {gs}")
    g = 1 if gs == -1 else k // gs
    if not scale.is_floating_point() or tuple(scale.shape) != (n, g):
        raise CheckpointError(f"{where}: {prefix}.weight_scale must be float of shape {(n, g)}, "
                              f"got {scale.dtype} {tuple(scale.shape)}")
    zero = None
    if not scheme.symmetric:
        zp = need("weight_zero_point")
        want = ((n + 7) // 8, g)
        if zp.dtype != torch.int32 or tuple(zp.shape) != want:
            raise CheckpointError(f"{where}: {prefix}.weight_zero_point must be int32 of shape {want} "
                                  f"(packed along N), got {zp.dtype} {tuple(zp.shape)}")
        zero = unpack_zero_point(zp, n)
    g_idx = t.get("weight_g_idx")
    if g_idx is not None:
        if tuple(g_idx.shape) != (k,) or g_idx.is_floating_point():
            raise CheckpointError(f"{where}: {prefix}.weight_g_idx must be an integer tensor of shape "
                                  f"{(k,)}, got {g_idx.dtype} {tuple(g_idx.shape)}")
    plain = PlainInt4Weight(packed.contiguous(), scale.contiguous(), zero, gs, (n, k))
    return plain, g_idx


def quantization_config(schemes: dict[Scheme, list[str]], all_quantized: bool, ignore: list[str]) -> dict:
    """Build the ``quantization_config`` dict. ``schemes`` maps each scheme to its layer names;
    with a single scheme covering every quantized layer the target is the class ``Linear``."""
    groups = {}
    for i, (scheme, names) in enumerate(schemes.items()):
        targets = ["Linear"] if (len(schemes) == 1 and all_quantized) else sorted(names)
        groups[f"group_{i}"] = scheme.to_json(targets)
    return {"quant_method": QUANT_METHOD, "format": FORMAT, "config_groups": groups,
            "ignore": sorted(ignore), "quantization_status": "compressed", "version": CT_VERSION,
            "kv_cache_scheme": None, "global_compression_ratio": None, "sparsity_config": {},
            "transform_config": {}}


# -- importer -----------------------------------------------------------------------------------
class CompressedTensorsImporter:
    """Reads ``pack-quantized`` checkpoints (nybble's own and those of llm-compressor / compressed-tensors)."""

    method = QUANT_METHOD
    suffixes = SUFFIXES + ("nybble_input_scale",)

    def __init__(self, qcfg: dict, where: str, force_kernel: str | None = None):
        self.groups, self.ignore = parse_config(qcfg, where)
        self.where, self.force_kernel = where, force_kernel
        self.aliases: dict[str, str] = {}
        self.info: dict = {"format": FORMAT, "ct_version": qcfg.get("version")}
        nyb = qcfg.get("nybble")
        if nyb is not None:
            from .checkpoint import check_nybble_section
            check_nybble_section(nyb, where)
            self.aliases = dict(nyb.get("aliases") or {})
            self.info.update({k: nyb.get(k) for k in ("algorithm", "version", "format_version")})

    def layer_prefixes(self, files) -> list[str]:
        return [n.rpartition(".")[0] for n in files.names() if n.endswith(".weight_packed")]

    def build(self, prefix, tensors, module, dtype, device):
        from .loader import make_layer
        scheme = scheme_for(prefix, module, self.groups, self.ignore)
        if scheme is None:
            raise CheckpointError(f"{self.where}: layer {prefix} has packed weights but no config group "
                                  "targets it (or it is in 'ignore')")
        where = self.where.replace("config.json", "") or self.where
        plain, g_idx = from_ct_tensors(tensors, scheme, prefix, where,
                                       (module.out_features, module.in_features))
        perm = None
        from .permuted import is_trivial_g_idx
        if g_idx is not None and not is_trivial_g_idx(g_idx, plain.group_size):
            from .permuted import regroup
            plain, perm = regroup(plain.codes(), plain.scale, plain.zero_point, plain.group_size, g_idx,
                                  f"{where}: {prefix}.weight_g_idx")
        return make_layer(prefix, plain, perm, tensors.get("bias"), scheme.act_mode, dtype, device,
                          self.force_kernel, tensors.get("nybble_input_scale"))

    def describe_layers(self, files) -> list:
        """:class:`~nybble.formats.inspect.LayerDesc` of every quantized layer, from headers only."""
        from .inspect import LayerDesc, tensor_bytes
        linear = nn.Linear(1, 1, device="meta")
        out = []
        for prefix in self.layer_prefixes(files):
            scheme = scheme_for(prefix, linear, self.groups, self.ignore)
            if scheme is None:
                continue
            n, k8 = files.shapes[f"{prefix}.weight_packed"]
            nbytes = sum(tensor_bytes(files, f"{prefix}.{s}") for s in self.suffixes if f"{prefix}.{s}" in files)
            out.append(LayerDesc(prefix, n, k8 * 8, scheme.group_size, scheme.symmetric, scheme.act_mode,
                                 f"{prefix}.weight_g_idx" in files, nbytes))
        return out
