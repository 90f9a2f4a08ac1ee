"""``Int4Linear``: the int4 layer that replaces ``nn.Linear``.

It holds the weight in its kernel's layout only (``packed_*`` buffers, never saved); the plain
layout is recovered exactly with ``kernel.unpack`` whenever it is needed (``state_dict``, saving,
moving to another device or dtype, slicing). This keeps one copy of the weight in memory.

A module rather than a tensor subclass: HF models call ``self.q_proj(x)``, so a module is all the
dispatch they need; it composes with ``torch.compile`` (the kernel is one opaque ``nybble`` op) and
with ``.to()``/``state_dict`` without ``__torch_dispatch__`` plumbing.
"""
from __future__ import annotations

from operator import itemgetter

import torch
from torch import nn

from .kernels import registry
from .kernels.base import LinearKernel, PackedWeight
from .plain import PlainInt4Weight
from .types import ActMode, dtype_name

_PACKED_PREFIX = "packed_"


class Int4Linear(nn.Module):
    """``y = (x / input_scale) @ W.T + bias`` with an int4 ``W``.

    Args:
        plain: the weight in the plain layout (see :class:`PlainInt4Weight`); its scale dtype is the
            layer's activation dtype.
        bias: ``(N,)`` float or None.
        act_mode: ``a16`` (weight-only), ``a8_sym`` or ``a8_asym`` (dynamic int8 activations).
        name: qualified name of the layer in its model, used in messages.
        force_kernel: pick this kernel by name instead of the registry's first choice.
        input_scale: optional ``(K,)`` float divisor of the activations (AWQ scales that could
            not be folded into a previous layer).

    State dict keys: ``qdata`` int32 (N, K/8), ``scale`` (N, G), ``zero_point`` int8 (N, G) in the
    ``int`` domain, ``bias`` (N,) if any, ``input_scale`` (K,) if any.
    """

    def __init__(self, plain: PlainInt4Weight, bias: torch.Tensor | None = None,
                 act_mode: ActMode | str = ActMode.A16, name: str = "<linear>",
                 force_kernel: str | None = None, input_scale: torch.Tensor | None = None):
        super().__init__()
        plain.validate(name)
        self.name = name
        self.in_features, self.out_features = plain.k, plain.n
        self.group_size = plain.group_size
        self.act_mode = ActMode(act_mode)
        self.force_kernel = force_kernel
        self.bias = None if bias is None else nn.Parameter(bias.detach().to(plain.device, plain.dtype),
                                                           requires_grad=False)
        self.register_buffer("input_scale", None if input_scale is None
                             else input_scale.detach().to(plain.device, plain.dtype))
        self._packed_names: tuple[str, ...] = ()
        self.kernel: LinearKernel
        self._install(plain)

    # -- kernel layout ---------------------------------------------------------------------
    def _install(self, plain: PlainInt4Weight) -> None:
        """Choose a kernel for ``plain``'s device/dtype and store its packed layout as buffers."""
        from .kernels.base import LinearSpec
        spec = LinearSpec.for_weight(plain, self.act_mode, name=self.name)
        kernel = registry.choose(spec, force=self.force_kernel)(spec)
        packed = kernel.prepack(plain)
        for n in self._packed_names:
            delattr(self, _PACKED_PREFIX + n)
        for n, t in packed.items():
            self.register_buffer(_PACKED_PREFIX + n, t, persistent=False)
        self._packed_names = tuple(packed)
        self.kernel = kernel
        # the kernel's eager shortcut (``LinearKernel.eager_entry``), set by ``forward``, and what it was made
        # for: ``(entry, getter of the packed buffers + input_scale, their ids, id of the bias)``; a new
        # kernel drops the old one's (its buffer names may differ)
        self.__dict__["_eager"] = None

    def packed(self) -> PackedWeight:
        """The kernel-layout tensors, by name."""
        buffers = self._buffers  # direct: nn.Module.__getattr__ costs ~1 us per name on every forward
        return {n: buffers[_PACKED_PREFIX + n] for n in self._packed_names}

    def plain(self) -> PlainInt4Weight:
        """The weight in the plain layout (exact inverse of the kernel's prepack)."""
        return self.kernel.unpack(self.packed())

    def dequantize(self) -> torch.Tensor:
        """Dense ``(N, K)`` weight in the layer's dtype (input scale folded back in)."""
        w = self.plain().dequantize(torch.float32)
        if self.input_scale is not None:
            w = w / self.input_scale.float()
        return w.to(self.dtype)

    @property
    def dtype(self) -> torch.dtype:
        return self.kernel.spec.dtype

    @property
    def device(self) -> torch.device:
        return self.packed()[self._packed_names[0]].device

    @property
    def kernel_name(self) -> str:
        return self.kernel.display_name

    def repack(self, force_kernel: str | None = None) -> "Int4Linear":
        """Choose the kernel again (e.g. after changing ``NYBBLE_DISABLED_KERNELS`` or to force one)."""
        self.force_kernel = force_kernel
        self._install(self.plain())
        return self

    # -- forward -----------------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        compiling = torch.compiler.is_compiling()  # first: traced code never reads ``_eager`` (no guard on it)
        if not compiling:
            eager = self.__dict__.get("_eager")  # (absent in layers unpickled from before it existed)
            if eager is not None and type(x) is torch.Tensor:
                # the kernel's shortcut, while the layer's tensors are those it was made for (any
                # reassignment, .to(), load_state_dict or repack replaces one of them)
                entry, getter, ids, bias_id = eager
                try:
                    same = id(self.bias) == bias_id and tuple(map(id, getter(self._buffers))) == ids
                except KeyError:  # a buffer was deleted
                    same = False
                if same:
                    y = entry(x)
                    if y is not None:
                        return y
        if x.shape[-1] != self.in_features:
            raise ValueError(f"{self.name}: input has {x.shape[-1]} features, layer expects {self.in_features}")
        if x.dtype != self.dtype:
            x = x.to(self.dtype)
        input_scale = self._buffers["input_scale"]
        if input_scale is not None:
            x = x / input_scale
        bias = self.bias
        y = self.kernel.apply(x, self.packed(), bias)
        if not compiling and input_scale is None:
            entry = self.kernel.eager_entry()
            d = self.__dict__  # direct: nn.Module.__setattr__ costs ~1 us
            if entry is not None:
                getter = itemgetter(*(_PACKED_PREFIX + n for n in self._packed_names), "input_scale")
                d["_eager"] = (entry, getter, tuple(map(id, getter(self._buffers))), id(bias))
            elif d.get("_eager") is not None:
                d["_eager"] = None
        return y

    # -- moving, saving, slicing -------------------------------------------------------------
    def _apply(self, fn, recurse=True):
        plain = self.plain()
        probe = fn(torch.empty(0, dtype=plain.dtype, device=plain.device))
        if self.bias is not None:
            self.bias = nn.Parameter(fn(self.bias.data), requires_grad=False)
        if self.input_scale is not None:
            self.input_scale = fn(self.input_scale)
        if probe.device != plain.device or probe.dtype != plain.dtype:
            dtype = probe.dtype if probe.is_floating_point() else None
            self._install(plain.to(probe.device, dtype))
        return self

    def _save_to_state_dict(self, destination, prefix, keep_vars):
        super()._save_to_state_dict(destination, prefix, keep_vars)
        plain = self.plain()
        destination[prefix + "qdata"] = plain.qdata
        destination[prefix + "scale"] = plain.scale
        if plain.zero_point is not None:
            destination[prefix + "zero_point"] = plain.zero_point

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs):
        keys = {k: prefix + k for k in ("qdata", "scale", "zero_point")}
        if keys["qdata"] in state_dict and keys["scale"] in state_dict:
            cur = self.plain()
            zp = state_dict.get(keys["zero_point"])
            plain = PlainInt4Weight(state_dict[keys["qdata"]].to(cur.device), state_dict[keys["scale"]].to(cur.device),
                                    None if zp is None else zp.to(cur.device), self.group_size,
                                    (self.out_features, self.in_features))
            try:
                plain.validate(f"{self.name} ({prefix.rstrip('.') or 'state_dict'})")
            except ValueError as exc:
                error_msgs.append(str(exc))
            else:
                self._install(plain)
        elif strict:
            missing_keys.extend(k for k in (keys["qdata"], keys["scale"]) if k not in state_dict)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)
        for k in keys.values():
            if k in unexpected_keys:
                unexpected_keys.remove(k)

    def narrow_out(self, start: int, length: int) -> "Int4Linear":
        """A new layer computing output features ``start:start+length`` (any boundary)."""
        bias = None if self.bias is None else self.bias[start:start + length]
        return Int4Linear(self.plain().narrow_rows(start, length), bias, self.act_mode,
                          f"{self.name}[out {start}:{start + length}]", self.force_kernel, self.input_scale)

    def narrow_in(self, start: int, length: int) -> "Int4Linear":
        """A new layer over input features ``start:start+length``; both must be multiples of the
        group size (groups cannot be split). The bias is not included (it belongs to one shard)."""
        g = self.group_size
        if g == -1 or start % g or length % g:
            raise ValueError(f"{self.name}: slices along K must start and end on group boundaries "
                             f"(group_size {g}); got start={start} length={length}"
                             + (" (per-channel weights cannot be sliced along K)" if g == -1 else ""))
        if start < 0 or start + length > self.in_features:
            raise ValueError(f"{self.name}: K slice [{start}:{start + length}] out of range for K={self.in_features}")
        p = self.plain()
        gs, ge = start // g, (start + length) // g
        zp = None if p.zero_point is None else p.zero_point[:, gs:ge].contiguous()
        sub = PlainInt4Weight(p.qdata[:, start // 8:(start + length) // 8].contiguous(),
                              p.scale[:, gs:ge].contiguous(), zp, g, (p.n, length))
        ins = None if self.input_scale is None else self.input_scale[start:start + length]
        return Int4Linear(sub, None, self.act_mode, f"{self.name}[in {start}:{start + length}]",
                          self.force_kernel, ins)

    def extra_repr(self) -> str:
        gs = "per-channel" if self.group_size == -1 else f"group_size={self.group_size}"
        domain = "int" if "zero_point" in self.plain_keys() else "none"
        return (f"in_features={self.in_features}, out_features={self.out_features}, int4 {gs}, "
                f"zero_point={domain}, act={self.act_mode.value}, dtype={dtype_name(self.dtype)}, "
                f"bias={self.bias is not None}, kernel={self.kernel_name}")

    def plain_keys(self) -> tuple[str, ...]:
        return ("qdata", "scale") + (("zero_point",) if self.kernel.spec.domain.value == "int" else ())

    def nbytes(self) -> int:
        """Bytes of the persistent int4 state (plain codes, scales, zero points, bias, input scale)."""
        n = self.plain().nbytes()
        for t in (self.bias, self.input_scale):
            if t is not None:
                n += t.numel() * t.element_size()
        return n
