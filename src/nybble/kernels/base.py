"""The kernel interface: what a layer needs (LinearSpec) and what a kernel provides (LinearKernel)."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..plain import PlainInt4Weight
from ..types import ActMode, ZeroPointDomain, dtype_name

#: a kernel's own layout of one weight: named tensors made by ``prepack`` (never saved)
PackedWeight = dict[str, torch.Tensor]


@dataclass(frozen=True)
class LinearSpec:
    """Everything a kernel needs to decide whether it can run a layer.

    ``n``/``k``: output/input features; ``group_size``: 32/64/128/256 or -1 (per-channel);
    ``dtype``: activation dtype (also the scale and output dtype); ``device_type``: ``"cpu"``,
    ``"cuda"``...; ``name``: the layer's qualified name, for messages.
    """

    n: int
    k: int
    group_size: int
    domain: ZeroPointDomain
    act_mode: ActMode
    dtype: torch.dtype
    device_type: str
    name: str = "<linear>"

    def __post_init__(self):
        object.__setattr__(self, "domain", ZeroPointDomain(self.domain))
        object.__setattr__(self, "act_mode", ActMode(self.act_mode))
        object.__setattr__(self, "device_type", torch.device(self.device_type).type)

    @classmethod
    def for_weight(cls, plain: PlainInt4Weight, act_mode: ActMode | str, device: torch.device | str | None = None,
                   name: str = "<linear>") -> "LinearSpec":
        device = torch.device(device) if device is not None else plain.device
        return cls(plain.n, plain.k, plain.group_size, plain.domain, ActMode(act_mode), plain.dtype,
                   device.type, name)

    @property
    def group_len(self) -> int:
        return self.k if self.group_size == -1 else self.group_size

    def describe(self) -> str:
        gs = "per-channel" if self.group_size == -1 else f"group {self.group_size}"
        return (f"{self.name}: N={self.n} K={self.k} {gs} zero_point={self.domain.value} "
                f"act={self.act_mode.value} dtype={dtype_name(self.dtype)} device={self.device_type}")


class LinearKernel:
    """One way to run an int4 linear on one device type.

    Subclasses set ``name`` and ``device_types`` and implement the four methods. A kernel instance
    is bound to one ``LinearSpec``; it never mutates modules and never looks parameters up by name.
    """

    name: str = "abstract"
    #: device types (``torch.device.type``) this kernel may run on
    device_types: tuple[str, ...] = ()
    #: on CUDA: the lowest compute capability the kernel needs (None: no CUDA requirement)
    min_cuda_capability: tuple[int, int] | None = None

    def __init__(self, spec: LinearSpec):
        self.spec = spec

    @classmethod
    def is_supported(cls, device: torch.device | str) -> tuple[bool, str | None]:
        """Can this kernel run at all on ``device`` (ISA, GPU capability, libraries)? ``(ok, reason)``."""
        device = torch.device(device)
        if device.type not in cls.device_types:
            return False, f"runs on {'/'.join(cls.device_types)} only, not {device.type}"
        if device.type == "cuda" and cls.min_cuda_capability is not None:
            if not torch.cuda.is_available():
                return False, "no CUDA device is available"
            found = torch.cuda.get_device_capability()
            if found < cls.min_cuda_capability:
                need = ".".join(map(str, cls.min_cuda_capability))
                return False, f"needs compute capability >= {need}, found {found[0]}.{found[1]}"
        return True, None

    @classmethod
    def can_implement(cls, spec: LinearSpec) -> tuple[bool, str | None]:
        """Can it run this layer (dtypes, group size, N/K divisibility, domain, act mode)? ``(ok, reason)``."""
        raise NotImplementedError

    def prepack(self, plain: PlainInt4Weight) -> PackedWeight:
        """Plain layout -> this kernel's layout (a dict of tensors on the layer's device). Done once."""
        raise NotImplementedError

    def unpack(self, packed: PackedWeight) -> PlainInt4Weight:
        """Exact inverse of ``prepack`` (used for state_dict, saving and moving between devices)."""
        raise NotImplementedError

    def apply(self, x: torch.Tensor, packed: PackedWeight, bias: torch.Tensor | None) -> torch.Tensor:
        """``y = x @ W.T + bias``. ``x``: ``(..., K)`` in ``spec.dtype``; returns ``(..., N)`` in ``spec.dtype``."""
        raise NotImplementedError

    def eager_entry(self):
        """Optional shortcut for eager calls, or None (the default): a callable ``f(x) -> y or None``
        that computes ``apply(x, packed, bias)`` for the packed tensors and bias of the last ``apply``
        call, or returns None when it cannot (then ``apply`` is called).  ``Int4Linear`` calls it
        directly while the layer's tensors are the same objects as at that call and the layer has no
        input scale, saving the per-call Python of ``forward``/``apply`` (~5 us at M = 1 on a GPU)."""
        return None

    @property
    def display_name(self) -> str:
        """Name shown to users (kernels may add detail such as the chosen ISA path)."""
        return self.name

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.display_name})"
