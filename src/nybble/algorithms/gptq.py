"""GPTQ: round a linear layer's weight column by column, pushing each column's rounding error onto
the columns not yet rounded, weighted by the inverse Hessian of the layer's inputs.

The Hessian of the layer-wise objective ``||X W^T - X Q^T||^2`` is ``H = X^T X`` (up to a factor),
``X`` being the ``(M, K)`` calibration inputs of the layer. :class:`HessianAccumulator` builds it in
fp32 over batches (no activations are kept). :func:`gptq_quantize` does the rounding:

* dead input columns (``H[k, k] == 0``: the input is always zero) get weight 0 and ``H[k, k] = 1``;
* dampening ``damp * mean(diag(H))`` is added to the diagonal; when the Cholesky factorisation still
  fails, the dampening is multiplied by 10 (up to :data:`MAX_DAMP_RETRIES` times), then a
  ``ValueError`` naming the layer is raised;
* columns are processed in blocks of ``block_size`` (lazy batch updates: inside a block the error is
  propagated column by column, to the rest of the matrix once per block);
* group parameters (scale, zero point) are chosen with :func:`nybble.primitives.choose_qparams` when
  the first column of a group is reached (from the already-updated weights), or, with
  ``act_order=True``, for every group up front from the original weights ("static groups"): columns
  are then processed in order of decreasing ``H[k, k]`` but each column keeps the parameters of its
  own group, so the stored groups stay contiguous and kernels need no ``g_idx``.

The result is plain codes/scale/zero point (the layout of :class:`nybble.plain.PlainInt4Weight`),
bit-compatible with RTN output: every kernel serves it.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .. import primitives as P
from ..types import ZeroPointDomain

#: how many times the dampening is multiplied by 10 before giving up on a non-PD Hessian
MAX_DAMP_RETRIES = 6


class HessianAccumulator:
    """Running ``H = (1/M) sum_m x_m x_m^T`` over batches of layer inputs, in fp32.

    ``add(x)`` takes ``x`` ``(M, K)`` (any float dtype; rows are tokens); ``hessian()`` returns the
    ``(K, K)`` fp32 average (zeros when nothing was added).
    """

    def __init__(self, k: int, device: torch.device | str = "cpu"):
        self.k = k
        self.h = torch.zeros(k, k, dtype=torch.float32, device=device)
        self.count = 0

    def add(self, x: torch.Tensor) -> None:
        if x.shape[-1] != self.k:
            raise ValueError(f"Hessian of K={self.k} got inputs with {x.shape[-1]} features")
        x = x.reshape(-1, self.k).to(torch.float32)
        m = x.shape[0]
        if m == 0:
            return
        if not torch.isfinite(x).all():
            raise ValueError("calibration inputs contain NaN/Inf; GPTQ needs finite activations")
        total = self.count + m
        self.h.mul_(self.count / total)
        self.h.addmm_(x.t(), x, alpha=1.0 / total)
        self.count = total

    def hessian(self) -> torch.Tensor:
        return self.h


@dataclass
class GPTQResult:
    """Plain codes ``(N, K)`` uint8 0..15, ``scale`` ``(N, G)`` (``scale_dtype``), ``zero_point``
    ``(N, G)`` int8 or None; ``damp`` the absolute dampening finally used; ``loss`` the GPTQ
    objective ``sum((w - q)^2 / Hinv_kk) / 2`` (a proxy of the output error)."""

    codes: torch.Tensor
    scale: torch.Tensor
    zero_point: torch.Tensor | None
    damp: float
    loss: float


def _inverse_cholesky_upper(h: torch.Tensor, damp: float, name: str) -> tuple[torch.Tensor, float]:
    """Upper Cholesky factor of ``(H + d I)^-1`` with ``d = damp * mean(diag H)``, retrying with 10x
    more dampening when ``H + d I`` is not positive definite."""
    k = h.shape[0]
    mean_diag = float(torch.diagonal(h).mean())
    if not (mean_diag > 0 and torch.isfinite(h).all()):
        raise ValueError(f"{name}: the input Hessian is zero or not finite; check the calibration data")
    eye = torch.eye(k, dtype=h.dtype, device=h.device)
    d = damp * mean_diag
    for _ in range(MAX_DAMP_RETRIES + 1):
        l, info = torch.linalg.cholesky_ex(h + d * eye)
        if int(info) == 0:
            hinv = torch.cholesky_inverse(l)
            u, info = torch.linalg.cholesky_ex(hinv, upper=True)
            if int(info) == 0 and torch.isfinite(u).all():
                return u, d
        d *= 10.0
    raise ValueError(f"{name}: the input Hessian is not positive definite even with dampening "
                     f"{d / 10 / mean_diag:.3g} x mean(diag); use more or more varied calibration data, "
                     f"or a larger 'damp' option")


def _column_params(w: torch.Tensor, domain: ZeroPointDomain, scale_dtype: torch.dtype
                   ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Parameters of one group from its ``(N, g)`` float32 weights: scale ``(N, 1)``, zero ``(N, 1)``."""
    return P.choose_qparams(w, -1, domain, scale_dtype)


def gptq_quantize(weight: torch.Tensor, hessian: torch.Tensor, group_size: int,
                  domain: ZeroPointDomain | str, *, damp: float = 0.01, block_size: int = 128,
                  act_order: bool = False, scale_dtype: torch.dtype | None = None,
                  name: str = "<linear>", compute_dtype: torch.dtype = torch.float32) -> GPTQResult:
    """GPTQ-round ``weight`` given the Hessian of its inputs.

    Args:
        weight: ``(N, K)`` float (any float dtype; math in fp32). Not modified.
        hessian: ``(K, K)`` fp32 ``X^T X / M`` (see :class:`HessianAccumulator`). Not modified.
        group_size: 32/64/128/256 or -1 (per output row); groups are contiguous runs along K.
        domain: ``int`` (asymmetric, zero point 0..15) or ``none`` (symmetric).
        damp: relative dampening (fraction of the mean Hessian diagonal), > 0.
        block_size: columns per lazy batch update.
        act_order: process columns by decreasing ``H[k, k]`` with static group parameters.
        scale_dtype: dtype of the stored scale (default ``weight.dtype``); the codes are rounded with
            the stored (already-rounded) scale, so dequantization reproduces exactly what GPTQ assumed.
        name: layer name for error messages.
        compute_dtype: dtype of the update arithmetic (float32; float64 for exactness tests).
    Returns:
        :class:`GPTQResult` in the plain convention.
    """
    domain = ZeroPointDomain(domain)
    n, k = weight.shape
    P.check_group_size(group_size, k, name)
    if tuple(hessian.shape) != (k, k):
        raise ValueError(f"{name}: Hessian shape {tuple(hessian.shape)} does not match K={k}")
    if not damp > 0:
        raise ValueError(f"{name}: damp must be > 0, got {damp}")
    scale_dtype = scale_dtype or weight.dtype
    g = P.group_len(group_size, k)
    ngroups = k // g

    w = weight.detach().to(compute_dtype).clone()
    h = hessian.detach().to(compute_dtype).clone()
    if not (torch.isfinite(h).all() and float(torch.diagonal(h).sum()) > 0):
        raise ValueError(f"{name}: the input Hessian is zero or not finite; check the calibration data")
    dead = torch.diagonal(h) == 0
    if bool(dead.any()):
        h[dead, dead] = 1.0
        w[:, dead] = 0.0

    scale = torch.empty(n, ngroups, dtype=scale_dtype, device=w.device)
    zero = None if domain is ZeroPointDomain.NONE else torch.empty(n, ngroups, dtype=torch.int8, device=w.device)

    def set_group(j: int, wg: torch.Tensor) -> None:
        s, z = _column_params(wg, domain, scale_dtype)
        scale[:, j] = s[:, 0]
        if zero is not None:
            zero[:, j] = z[:, 0]

    if act_order:
        for j in range(ngroups):  # static groups: parameters from the original weights
            set_group(j, w[:, j * g:(j + 1) * g])
        perm = torch.argsort(torch.diagonal(h), descending=True)
        w = w[:, perm]
        h = h[perm][:, perm]
    else:
        perm = None
    u, d_abs = _inverse_cholesky_upper(h, damp, name)
    del h

    # per-column (stored) scale and zero in fp32, gathered lazily from the group parameters
    col_group = torch.arange(k, device=w.device) // g
    if perm is not None:
        col_group = col_group[perm]

    codes = torch.empty(n, k, dtype=torch.uint8, device=w.device)
    loss = torch.zeros((), dtype=compute_dtype, device=w.device)
    for i1 in range(0, k, block_size):
        i2 = min(i1 + block_size, k)
        w1 = w[:, i1:i2].clone()
        err1 = torch.empty_like(w1)
        u1 = u[i1:i2, i1:i2]
        for i in range(i2 - i1):
            col = i1 + i
            grp = int(col_group[col])
            if perm is None and col % g == 0:
                # dynamic group parameters from the current (error-updated) weights of the group
                if col + g <= i2:
                    wg = w1[:, i:i + g]
                else:  # the group runs past this block: bring its tail up to date first
                    tail = w[:, i2:col + g] - err1[:, :i] @ u[i1:col, i2:col + g]
                    wg = torch.cat([w1[:, i:], tail], dim=1)
                set_group(grp, wg)
            s = scale[:, grp].to(compute_dtype)
            zf = P.SYMMETRIC_ZERO if zero is None else zero[:, grp].to(compute_dtype)
            x = w1[:, i]
            q = torch.clamp(torch.round(x / s) + zf, P.QMIN, P.QMAX)
            codes[:, col] = q.to(torch.uint8)
            deq = (q - zf) * s
            dinv = u1[i, i]
            e = (x - deq) / dinv
            loss += ((x - deq) ** 2).sum() / (2 * dinv * dinv)
            w1[:, i:].sub_(e.unsqueeze(1) * u1[i, i:].unsqueeze(0))
            err1[:, i] = e
        if i2 < k:
            w[:, i2:].sub_(err1 @ u[i1:i2, i2:])

    if perm is not None:
        inv = torch.argsort(perm)
        codes = codes[:, inv]
    return GPTQResult(codes.contiguous(), scale, zero, d_abs, float(loss))
