"""Sibling fusion: int4 layers that read the same input (q/k/v, gate/up) computed by one kernel call.

At decode each ``Int4Linear`` call costs a fixed ~5 us of Python plus the kernel's own start-up,
and small layers (2048x512 k/v projections: 0.5 MiB) stream their bytes at well under the DRAM rate.
One call over the concatenated weight (N = sum of the siblings' N) reads the same bytes once,
quantizes an A8W4 input once instead of three / two times, and pays one call's fixed costs
(benchmarks/cpu/NOTES.md, fifth session: q/k/v of the 0.85B Llama 110 -> 87 us, gate/up 319 -> 302
us per layer, A8W4, 2 threads).

:func:`fuse_siblings` (opt-in, inference only) replaces each group of sibling ``Int4Linear`` children
of a module (same K, group size, activation mode, dtype, zero-point domain and kernel, no bias or a
bias on every member, no ``input_scale``) by one :class:`FusedInt4Linear` holding the concatenated
weight, and each member by a :class:`SiblingOutput` that returns its columns of the fused result.
HF models call ``q_proj(x)``, ``k_proj(x)``, ``v_proj(x)`` in turn on one ``x``: the first call
computes all members' outputs and keeps the others' until they are asked for. A later member call
uses the kept output only when its input is the same tensor, unchanged (same version counter; for
inference tensors, which have none, equal content against a saved copy); otherwise it computes the
fused layer again on its own input (always correct, only slower). Outputs are views of columns of
one (..., sum N) result.

Under ``torch.compile`` (dynamo tracing, e.g. ``e2e_cpu --compile 1``) the same happens in the traced
graph: the first member call puts ONE fused op in the graph and the other members whose input is the
same traced tensor take their columns of it (:meth:`FusedInt4Linear._traced_member_output`), so a
compiled fused q/k/v or gate/up group is one kernel call, as in eager mode.

The fused module has its own state dict (the concatenated weight): call :func:`unfuse_siblings`
before saving, moving to another device or quantizing again; it restores the original
``Int4Linear`` members exactly (the plain weights are split back by rows, bit for bit).
"""
from __future__ import annotations

import torch
from torch import nn

from ..plain import PlainInt4Weight
from ..tensor import Int4Linear

def _libc_memcmp():
    import ctypes
    fn = ctypes.CDLL(None).memcmp
    fn.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t]
    fn.restype = ctypes.c_int
    return fn


_memcmp = _libc_memcmp()

#: sibling groups looked for by default (child names; the first one computes the group)
DEFAULT_GROUPS: tuple[tuple[str, ...], ...] = (("q_proj", "k_proj", "v_proj"), ("gate_proj", "up_proj"))


class FusedInt4Linear(nn.Module):
    """One ``Int4Linear`` over the members' weights concatenated along N (rows), plus the kept outputs.

    ``names``: the members' child names; ``splits``: their N; ``linear``: the fused layer
    (weight ``(sum N, K)``). :meth:`member_output` returns member ``i``'s ``(..., N_i)`` columns of
    ``linear(x)``.
    """

    def __init__(self, linear: Int4Linear, names: tuple[str, ...], splits: tuple[int, ...]):
        super().__init__()
        self.linear = linear
        self.names = names
        self.splits = splits
        self.offsets = tuple(sum(splits[:i]) for i in range(len(splits)))
        # a plain attribute (object.__setattr__) and direct _modules lookups: nn.Module.__setattr__ /
        # __getattr__ cost ~2-4 us per access, more than the rest of a decode-time member call
        object.__setattr__(self, "_kept", None)  # {"x", "check", "y", "left": member indices not yet served}
        # the same under torch.compile (a dict mutated in place, so that dynamo tracks it as a side
        # effect): {"x": traced input, "y": members' column views, "left": indices not yet served};
        # emptied when the last member takes its output, so nothing outlives the traced call
        object.__setattr__(self, "_traced", {})

    @staticmethod
    def _fingerprint(x: torch.Tensor):
        if x.is_inference():
            return x.detach().clone()  # no version counter: compare content
        return x._version

    @staticmethod
    def _unchanged(x: torch.Tensor, check) -> bool:
        if isinstance(check, torch.Tensor):
            if check.shape != x.shape or check.dtype != x.dtype:
                return False
            if x.is_cpu and x.is_contiguous() and check.is_contiguous():
                # the same bytes (~0.5 us; torch.equal costs ~2 us at decode sizes)
                return _memcmp(check.data_ptr(), x.data_ptr(), x.numel() * x.element_size()) == 0
            return torch.equal(check, x)
        return not x.is_inference() and x._version == check

    def _traced_member_output(self, i: int, x: torch.Tensor) -> torch.Tensor:
        """:meth:`member_output` while dynamo traces: one fused call per group in the graph.

        The first member call of a group puts the fused op in the graph and keeps the other members'
        column views in ``_traced``; a later member whose input is the same traced tensor (``is``:
        the same value in the graph) takes its view from there, any other input gets a fused call of
        its own. The last member to take its view empties ``_traced``, so the state dynamo writes
        back after the call is empty (no tensor is kept between compiled calls).

        Limits (traced path only): an in-place change of the input between two member calls is not
        seen (dynamo traces no version counter of inference tensors); HF attention / MLP never do
        that. A compiled call that asks only some members of a group for their output leaves the
        others' views in ``_traced`` (dynamo writes the dict back); they can only be served to a later
        traced call on that very tensor object, and the next eager member call drops them."""
        kept = self._traced
        if kept and kept["x"] is x and i in kept["left"]:
            left = [j for j in kept["left"] if j != i]
            ys = kept["y"]
            if left:
                kept["left"] = left
            else:
                kept.clear()
            return ys[i]
        y = self._modules["linear"](x)
        ys = y.split(self.splits, -1)
        left = [j for j in range(len(self.splits)) if j != i]
        kept.clear()
        if left:
            kept.update(x=x, y=ys, left=left)
        return ys[i]

    def member_output(self, i: int, x: torch.Tensor) -> torch.Tensor:
        if torch.compiler.is_compiling():
            return self._traced_member_output(i, x)
        if self._traced:  # left by a compiled call in which a member was not asked for
            self._traced.clear()
        kept = self._kept
        if kept is not None and i in kept["left"] and kept["x"] is x and self._unchanged(x, kept["check"]):
            kept["left"].discard(i)
            if not kept["left"]:
                object.__setattr__(self, "_kept", None)
            return kept["y"][i]
        y = self._modules["linear"](x)
        # keep the result for the other members (dropped once all have taken theirs, or on the next call)
        left = set(range(len(self.splits)))
        left.discard(i)
        ys = y.split(self.splits, -1)  # all members' column views at once
        object.__setattr__(self, "_kept", {"x": x, "check": self._fingerprint(x), "y": ys, "left": left} if left else None)
        return ys[i]

    def extra_repr(self) -> str:
        return f"members={list(zip(self.names, self.splits))}"


class SiblingOutput(nn.Module):
    """Stands in for member ``index`` of a :class:`FusedInt4Linear` (``forward(x)`` -> its columns)."""

    def __init__(self, fused: FusedInt4Linear, index: int):
        super().__init__()
        object.__setattr__(self, "fused", fused)  # not a child: the parent module owns the fused layer
        self.index = index
        self.in_features = fused.linear.in_features
        self.out_features = fused.splits[index]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fused.member_output(self.index, x)

    def extra_repr(self) -> str:
        return f"{self.fused.names[self.index]} of {'+'.join(self.fused.names)}, out_features={self.out_features}"


def _fusable(members: list[Int4Linear]) -> bool:
    first = members[0]
    spec0 = first.kernel.spec
    for m in members:
        s = m.kernel.spec
        if (s.k, s.group_size, s.act_mode, s.dtype, s.domain) != (spec0.k, spec0.group_size, spec0.act_mode,
                                                                   spec0.dtype, spec0.domain):
            return False
        if type(m.kernel) is not type(first.kernel) or m.force_kernel != first.force_kernel:
            return False
        if m.input_scale is not None or (m.bias is None) != (first.bias is None):
            return False
    return True


def fuse_siblings(model: nn.Module, groups: tuple[tuple[str, ...], ...] = DEFAULT_GROUPS) -> int:
    """Fuse every group of sibling ``Int4Linear`` children named as in ``groups`` (all names of a
    group present in one module and fusable, see the module docstring); returns how many groups
    were fused. The fused layer is the child ``"+".join(names)`` of that module."""
    count = 0
    for parent in list(model.modules()):
        for names in groups:
            members = [getattr(parent, n, None) for n in names]
            if not all(isinstance(m, Int4Linear) for m in members) or not _fusable(members):
                continue
            plains = [m.plain() for m in members]
            p0 = plains[0]
            cat = PlainInt4Weight(torch.cat([p.qdata for p in plains]), torch.cat([p.scale for p in plains]),
                                  None if p0.zero_point is None else torch.cat([p.zero_point for p in plains]),
                                  p0.group_size, (sum(p.n for p in plains), p0.k))
            bias = None if members[0].bias is None else torch.cat([m.bias.detach() for m in members])
            fused_name = "+".join(names)
            linear = Int4Linear(cat, bias, members[0].act_mode, name=f"{members[0].name}[{fused_name}]",
                                force_kernel=members[0].force_kernel)
            fused = FusedInt4Linear(linear, tuple(names), tuple(p.n for p in plains))
            fused.member_names = tuple(m.name for m in members)
            parent.add_module(fused_name, fused)
            for i, n in enumerate(names):
                setattr(parent, n, SiblingOutput(fused, i))
            count += 1
    return count


def unfuse_siblings(model: nn.Module) -> int:
    """Undo :func:`fuse_siblings`: each member is again its own ``Int4Linear`` with its original
    plain weight (rows of the fused one, exact) and bias; returns how many groups were split."""
    count = 0
    for parent in list(model.modules()):
        for child_name, fused in list(parent.named_children()):
            if not isinstance(fused, FusedInt4Linear):
                continue
            plain = fused.linear.plain()
            lin = fused.linear
            for i, n in enumerate(fused.names):
                rows = slice(fused.offsets[i], fused.offsets[i] + fused.splits[i])
                p = PlainInt4Weight(plain.qdata[rows].clone(), plain.scale[rows].clone(),
                                    None if plain.zero_point is None else plain.zero_point[rows].clone(),
                                    plain.group_size, (fused.splits[i], plain.k))
                bias = None if lin.bias is None else lin.bias.detach()[rows].clone()
                setattr(parent, n, Int4Linear(p, bias, lin.act_mode, name=fused.member_names[i],
                                              force_kernel=lin.force_kernel))
            delattr(parent, child_name)
            count += 1
    return count


__all__ = ["DEFAULT_GROUPS", "FusedInt4Linear", "SiblingOutput", "fuse_siblings", "unfuse_siblings"]
