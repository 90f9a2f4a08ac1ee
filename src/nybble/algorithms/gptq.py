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
    ``(K, K)`` fp32 average (zeros when nothing was added); ``mean()`` the ``(K,)`` fp32 mean row
    (for bias correction and centred moments, see :func:`bias_correction`).
    """

    def __init__(self, k: int, device: torch.device | str = "cpu"):
        self.k = k
        self.h = torch.zeros(k, k, dtype=torch.float32, device=device)
        self.mu = torch.zeros(k, dtype=torch.float32, device=device)
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
        self.mu.mul_(self.count / total).add_(x.sum(dim=0), alpha=1.0 / total)
        self.count = total

    def hessian(self) -> torch.Tensor:
        return self.h

    def mean(self) -> torch.Tensor:
        return self.mu


class CrossAccumulator:
    """Running ``C = (1/M) sum_m xq_m xf_m^T`` over batches of paired rows, in fp32.

    ``add(xq, xf)`` takes the quantized model's inputs ``xq`` and the float model's inputs ``xf`` of
    the same tokens (both ``(M, K)``); ``cross()`` returns the ``(K, K)`` fp32 average
    ``Xq^T Xf / M`` (used by :func:`asymmetric_target`); ``mean_float()`` the ``(K,)`` fp32 mean
    of the float rows ``xf``."""

    def __init__(self, k: int, device: torch.device | str = "cpu"):
        self.k = k
        self.c = torch.zeros(k, k, dtype=torch.float32, device=device)
        self.mu_f = torch.zeros(k, dtype=torch.float32, device=device)
        self.count = 0

    def add(self, xq: torch.Tensor, xf: torch.Tensor) -> None:
        if xq.shape != xf.shape or xq.shape[-1] != self.k:
            raise ValueError(f"cross moment of K={self.k}: paired inputs {tuple(xq.shape)} and {tuple(xf.shape)} "
                             "must have the same shape")
        xq = xq.reshape(-1, self.k).to(torch.float32)
        xf = xf.reshape(-1, self.k).to(torch.float32)
        m = xq.shape[0]
        if m == 0:
            return
        total = self.count + m
        self.c.mul_(self.count / total)
        self.c.addmm_(xq.t(), xf, alpha=1.0 / total)
        self.mu_f.mul_(self.count / total).add_(xf.sum(dim=0), alpha=1.0 / total)
        self.count = total

    def cross(self) -> torch.Tensor:
        return self.c

    def mean_float(self) -> torch.Tensor:
        return self.mu_f


def centered_moments(hessian: torch.Tensor, mean_q: torch.Tensor, cross: torch.Tensor | None = None,
                     mean_f: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Second moments about the mean: ``H - mu_q mu_q^T`` and ``C - mu_q mu_f^T`` (``cross`` and
    ``mean_f`` optional; without ``mean_f`` the float rows are the quantized ones).

    For a layer with a bias that :func:`bias_correction` will re-fit, the mean output error is
    removed by the bias, so the rounding should minimize the error of the *centred* outputs:
    ``||(Xf - 1 mu_f^T) W^T - (Xq - 1 mu_q^T) Q^T||^2``, whose Hessian and cross moment these are.
    Args: ``hessian``/``cross`` ``(K, K)`` fp32, ``mean_q``/``mean_f`` ``(K,)`` fp32. Returns fp32
    ``(K, K)`` tensors (the second is None when ``cross`` is None)."""
    mq = mean_q.float()
    hc = hessian - torch.outer(mq, mq)
    if cross is None:
        return hc, None
    mf = mq if mean_f is None else mean_f.float()
    return hc, cross - torch.outer(mq, mf)


def spectral_shrink(hessian: torch.Tensor, power: float) -> torch.Tensor:
    """Nonlinear eigenvalue shrinkage of the ``(K, K)`` Hessian: ``U diag(l^power) U^T`` rescaled to the
    same trace (``H = U diag(l) U^T``; negative rounding-noise eigenvalues count as 0). Returns fp32.

    A Hessian estimated from a few thousand calibration tokens over-spreads its spectrum: directions
    with little calibration variance carry more on other text (measured on MiniLM: 3-12x more in the
    smallest-eigenvalue tenth of the directions on a different text, ~1x in the largest). GPTQ pushes
    rounding error into those cheap-looking directions; ``power < 1`` compresses the spectrum (the
    small eigenvalues grow relative to the large ones, the eigenvectors are kept), so the rounding
    generalizes better. ``power = 1`` returns the Hessian unchanged (as fp32); ``power = 0`` the
    identity times the mean eigenvalue. Computed in fp64 (``eigh``)."""
    if not 0 <= power <= 1:
        raise ValueError(f"spectral_shrink power must be in [0, 1], got {power}")
    if power == 1:
        return hessian.float()
    ev, vec = torch.linalg.eigh(hessian.double())
    ev = ev.clamp(min=0)
    evp = ev.pow(power)
    total = float(evp.sum())
    if not total > 0:
        return hessian.float()
    return ((vec * (evp * (float(ev.sum()) / total))) @ vec.t()).float()


def bias_correction(weight: torch.Tensor, dequantized: torch.Tensor, bias: torch.Tensor, mean_q: torch.Tensor,
                    mean_f: torch.Tensor | None = None) -> torch.Tensor:
    """The bias that zeroes the layer's mean output error on its calibration inputs.

    With ``mu_f`` the mean input row in the float model and ``mu_q`` in the quantized model (the same
    tokens; ``mean_f=None``: ``mu_f = mu_q``, symmetric calibration), the float layer's mean output
    is ``W mu_f + b`` and the quantized layer's ``Q mu_q + b'``; so ``b' = b + W mu_f - Q mu_q``.

    Args: ``weight`` ``(N, K)`` the float weight ``W`` (as the float model has it), ``dequantized``
    ``(N, K)`` the dequantized int4 weight ``Q``, ``bias`` ``(N,)``, ``mean_q``/``mean_f`` ``(K,)``.
    Returns the new ``(N,)`` bias in ``bias.dtype`` (computed in fp64)."""
    mq = mean_q.double()
    mf = mq if mean_f is None else mean_f.double()
    b = bias.double() + weight.double() @ mf - dequantized.double() @ mq
    return b.to(bias.dtype)


def asymmetric_target(weight: torch.Tensor, hessian: torch.Tensor, cross: torch.Tensor, damp: float = 0.01,
                      name: str = "<linear>") -> torch.Tensor:
    """The weight ``W'`` whose GPTQ rounding on the quantized model's inputs minimizes the error against
    the *float* model (asymmetric calibration).

    With ``Xf`` ``(M, K)`` the layer's inputs in the float model and ``Xq`` those in the partly
    quantized model (same tokens), ``||Xf W^T - Xq Q^T||^2 = ||Xq (W'^T - Q^T)||^2 + const`` with
    ``W' = W C^T H^-1``, ``H = Xq^T Xq / M`` (``hessian``) and ``C = Xq^T Xf / M`` (``cross``). So plain
    GPTQ of ``W'`` with Hessian ``H`` minimizes the asymmetric objective: the layer absorbs part of
    the error its inputs carry from the already quantized layers. The solve is regularised towards
    ``W`` (ridge): ``W' = W (C^T + d I) (H + d I)^-1`` with ``d = damp * mean(diag H)`` (x10 per failed
    Cholesky), so ``W' -> W`` (plain GPTQ) as ``damp`` grows, and ``W' = W`` when ``Xf = Xq``.

    Args: ``weight`` ``(N, K)`` float; ``hessian``, ``cross`` ``(K, K)`` fp32. Returns ``(N, K)`` fp32.
    """
    n, k = weight.shape
    if tuple(hessian.shape) != (k, k) or tuple(cross.shape) != (k, k):
        raise ValueError(f"{name}: Hessian {tuple(hessian.shape)} / cross moment {tuple(cross.shape)} do not "
                         f"match K={k}")
    h = hessian.double()
    mean_diag = float(torch.diagonal(h).mean())
    if not (mean_diag > 0 and torch.isfinite(h).all() and torch.isfinite(cross).all()):
        raise ValueError(f"{name}: the input Hessian is zero or not finite; check the calibration data")
    d = damp * mean_diag
    diag = torch.diagonal(h).clone()
    for _ in range(MAX_DAMP_RETRIES + 1):
        torch.diagonal(h).copy_(diag + d)
        l, info = torch.linalg.cholesky_ex(h)
        if int(info) == 0:
            # ridge towards W: W' = W (C^T + dI) (H + dI)^-1  <=>  (H + dI) W'^T = (C + dI) W^T
            wt = weight.detach().double().t()
            rhs = cross.double() @ wt + d * wt
            return torch.cholesky_solve(rhs, l).t().to(torch.float32).contiguous()
        d *= 10.0
    raise ValueError(f"{name}: the input Hessian is not positive definite even with dampening; use more "
                     "calibration data or a larger 'damp' option")


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
    mean_diag = float(torch.diagonal(h).mean())
    if not (mean_diag > 0 and torch.isfinite(h).all()):
        raise ValueError(f"{name}: the input Hessian is zero or not finite; check the calibration data")
    d = damp * mean_diag
    diag = torch.diagonal(h).clone()
    for _ in range(MAX_DAMP_RETRIES + 1):
        hd = h.clone()  # no K x K identity: add the dampening on the diagonal in place
        torch.diagonal(hd).copy_(diag + d)
        l, info = torch.linalg.cholesky_ex(hd)
        del hd
        if int(info) == 0:
            hinv = torch.cholesky_inverse(l)
            u, info = torch.linalg.cholesky_ex(hinv, upper=True)
            if int(info) == 0 and torch.isfinite(u).all():
                return u, d
        d *= 10.0
    raise ValueError(f"{name}: the input Hessian is not positive definite even with dampening "
                     f"{d / 10 / mean_diag:.3g} x mean(diag); use more or more varied calibration data, "
                     f"or a larger 'damp' option")


class _few_threads:
    """Run the column loop on one CPU thread: its many tiny ops lose more to thread hand-offs than they
    gain (4-7x slower with 2 threads on a busy 2-core machine). No effect on other devices."""

    def __init__(self, device: torch.device):
        self.on = torch.device(device).type == "cpu"

    def __enter__(self):
        if self.on:
            self.saved = torch.get_num_threads()
            torch.set_num_threads(1)

    def __exit__(self, *exc):
        if self.on:
            torch.set_num_threads(self.saved)


#: range shrink factors tried by the optional group-parameter search (``clip_search``)
CLIP_RATIOS = (1.0, 0.97, 0.94, 0.91, 0.88, 0.85, 0.82, 0.79, 0.76, 0.73, 0.7)


#: ``clip_weight`` choices: what weights each column's squared rounding error in the range search
CLIP_WEIGHTS = ("hdiag", "gptq", "none")


def clip_ratios(grid: int, max_shrink: float = 0.3) -> tuple[float, ...]:
    """The range shrink factors of the group-parameter search: ``grid == 0`` gives the fixed
    :data:`CLIP_RATIOS` (11 factors, 1.0 down to 0.7 in steps of 0.03); ``grid = n > 0`` gives ``n + 1``
    evenly spaced factors from 1.0 down to ``1 - max_shrink`` (``max_shrink`` in [0, 1))."""
    if grid == 0:
        return CLIP_RATIOS
    if grid < 0 or not 0 <= max_shrink < 1:
        raise ValueError(f"clip grid must be >= 0 and max_shrink in [0, 1), got {grid}, {max_shrink}")
    return tuple(1.0 - max_shrink * i / grid for i in range(grid + 1))


def _column_params(w: torch.Tensor, domain: ZeroPointDomain, scale_dtype: torch.dtype,
                   hdiag: torch.Tensor | None = None, grid2d: bool = False,
                   ratios: tuple[float, ...] = CLIP_RATIOS) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Parameters of one group from its ``(N, g)`` weights: scale ``(N, 1)``, zero ``(N, 1)`` int8.

    With ``hdiag`` (``(g,)``, a non-negative weight per column of the group: the Hessian diagonal, or
    GPTQ's per-column loss weight, see ``clip_weight`` of :func:`_gptq`), the group's range is shrunk by
    the factor in ``ratios`` (first entry 1.0) minimizing ``sum_k hdiag[k] (w[:, k] - deq[:, k])^2`` per
    row (an input-weighted clipping search); otherwise plain min/max (abs-max) parameters. ``grid2d``
    (``int`` domain): shrink the minimum and the maximum by independent factors of the grid
    (``len(ratios)^2`` candidates)."""
    s, z = P.choose_qparams(w, -1, domain, scale_dtype)
    if hdiag is None:
        return s, z
    wf = w.float()
    hd = hdiag.float()[None, :]

    def err(s_, z_):
        deq = P.dequantize(P.quantize(wf, s_, z_, -1), s_, z_, -1)
        return ((wf - deq) ** 2 * hd).sum(dim=1)

    best = err(s, z)
    if grid2d and domain is ZeroPointDomain.INT:
        # shrink the two ends of the range independently: (N, 2) stand-ins [lo * r_lo, hi * r_hi]
        lo, hi = wf.amin(dim=1).clamp(max=0.0), wf.amax(dim=1).clamp(min=0.0)
        cands = [torch.stack([lo * a, hi * b], dim=1) for a in ratios for b in ratios][1:]
    else:
        cands = [wf * r for r in ratios[1:]]
    for c in cands:
        s2, z2 = P.choose_qparams(c, -1, domain, scale_dtype)
        e = err(s2, z2)
        better = e < best
        best = torch.where(better, e, best)
        s = torch.where(better[:, None], s2, s)
        if z is not None:
            z = torch.where(better[:, None], z2, z)
    return s, z


def gptq_quantize(weight: torch.Tensor, hessian: torch.Tensor, group_size: int,
                  domain: ZeroPointDomain | str, refit_scales: int = 0, refine_sweeps: int = 0, **kw) -> GPTQResult:
    """GPTQ-round ``weight`` given the Hessian of its inputs (see :func:`_gptq` for the arguments).
    On CPU this runs on one thread (small sequential ops; see :class:`_few_threads`).

    ``refit_scales=n``: afterwards, re-fit the scales for the chosen codes (:func:`refit_group_scales`),
    ``n`` times; with ``act_order`` each re-fit but the last is followed by a GPTQ pass that keeps the
    re-fitted scales (and zero points) as its static group parameters.

    ``refine_sweeps=n``: then ``n`` rounds of code refinement (:func:`refine_codes`), each followed by
    a scale re-fit."""
    with _few_threads(weight.device):
        res = _gptq(weight, hessian, group_size, domain, **kw)
        for it in range(int(refit_scales)):
            scale = refit_group_scales(weight, hessian, res.codes, res.scale, res.zero_point, group_size,
                                       damp=kw.get("damp", 0.01))
            if it + 1 < int(refit_scales) and kw.get("act_order"):
                res = _gptq(weight, hessian, group_size, domain, **kw, fixed_params=(scale, res.zero_point))
            else:
                res.scale = scale
        for _ in range(int(refine_sweeps)):  # alternate: codes for the scales, scales for the codes
            res.codes = refine_codes(weight, hessian, res.codes, res.scale, res.zero_point, group_size,
                                     damp=kw.get("damp", 0.01), sweeps=1)
            res.scale = refit_group_scales(weight, hessian, res.codes, res.scale, res.zero_point, group_size,
                                           damp=kw.get("damp", 0.01))
    return res


def _damped(hessian: torch.Tensor, damp: float, dtype: torch.dtype) -> torch.Tensor:
    """A ``dtype`` copy of the ``(K, K)`` Hessian with ``damp * mean(diag H)`` added to its diagonal."""
    h = hessian.to(dtype, copy=True)
    torch.diagonal(h).add_(damp * float(torch.diagonal(h).mean()))
    return h


@torch.no_grad()
def refine_codes(weight: torch.Tensor, hessian: torch.Tensor, codes: torch.Tensor, scale: torch.Tensor,
                 zero_point: torch.Tensor | None, group_size: int, damp: float = 0.01, sweeps: int = 1) -> torch.Tensor:
    """Coordinate descent on the codes after GPTQ: for each column ``k`` in turn (``sweeps`` times),
    move each row's code by +-1 when that lowers ``(w_n - d_n)^T (H + dI) (w_n - d_n)`` (the output
    error on the calibration inputs, ``d_n[k] = s (q_nk - z)``), scales and zero points fixed. GPTQ
    decides each column once, greedily; this lets earlier columns react to the later ones.

    Args as :func:`refit_group_scales`; returns the new ``(N, K)`` uint8 codes (never a higher error).
    """
    n, k = weight.shape
    g = P.group_len(group_size, k)
    h = _damped(hessian, damp, torch.float32)
    s = scale.float().repeat_interleave(g, dim=1)                      # (N, K)
    z = 8.0 if zero_point is None else zero_point.float().repeat_interleave(g, dim=1)
    q = codes.float().clone()
    grad = (weight.float() - s * (q - z)) @ h                          # (N, K): (E H), E = W - D
    hd = torch.diagonal(h).clone()
    one = torch.ones(n, device=q.device)
    bs = 128  # lazy updates: inside a block of columns only the block's gradient is kept current
    for _ in range(int(sweeps)):
        for i1 in range(0, k, bs):
            i2 = min(i1 + bs, k)
            gblk = grad[:, i1:i2].clone()
            steps = torch.zeros(n, i2 - i1, device=q.device)
            for c in range(i1, i2):
                sc, gc = s[:, c], gblk[:, c - i1]
                # change of the objective for q += delta: -2 delta s (E H)_c + s^2 H_cc
                base = sc * sc * hd[c]
                up = -2 * sc * gc + base
                dn = 2 * sc * gc + base
                delta = torch.where((up < dn) & (up < 0) & (q[:, c] < P.QMAX), one, 0 * one)
                delta = torch.where((dn <= up) & (dn < 0) & (q[:, c] > P.QMIN), -one, delta)
                q[:, c] += delta
                step = delta * sc                                      # D changes by step on column c
                steps[:, c - i1] = step
                gblk.addr_(step, h[c, i1:i2], alpha=-1)
            grad.sub_(steps @ h[i1:i2])
    return q.to(torch.uint8)


@torch.no_grad()
def refit_group_scales(weight: torch.Tensor, hessian: torch.Tensor, codes: torch.Tensor, scale: torch.Tensor,
                       zero_point: torch.Tensor | None, group_size: int, damp: float = 0.01) -> torch.Tensor:
    """Least-squares scales for fixed codes: per output row ``n``, the scales ``s_n`` (``(G,)``)
    minimizing ``(w_n - d_n)^T (H + dI) (w_n - d_n)`` with ``d_n[k] = s_n[g(k)] (q_nk - z_ng(k))``
    (zero points unchanged), i.e. the output error on the calibration inputs. Rows whose solution
    has a non-positive or non-finite scale, or does not lower the error, keep their old scales.

    Args: ``weight`` ``(N, K)`` (the target GPTQ rounded), ``hessian`` ``(K, K)`` fp32, ``codes`` ``(N, K)``
    uint8, ``scale`` ``(N, G)``, ``zero_point`` ``(N, G)`` int8 or None (symmetric: 8). Returns the new
    ``(N, G)`` scale in ``scale.dtype``.
    """
    n, k = weight.shape
    g = P.group_len(group_size, k)
    ng = k // g
    h = _damped(hessian, damp, torch.float64)
    z = 8.0 if zero_point is None else zero_point.double().repeat_interleave(g, dim=1)
    u = codes.double() - z                                   # (N, K): d = s_g * u
    w = weight.double()
    hw = w @ h                                               # (N, K)
    b = (u * hw).reshape(n, ng, g).sum(-1)                   # (N, G)
    a = torch.empty(n, ng, ng, dtype=torch.float64, device=w.device)
    for j in range(ng):
        uh = u[:, j * g:(j + 1) * g] @ h[j * g:(j + 1) * g]  # (N, K)
        a[:, j] = (uh * u).reshape(n, ng, g).sum(-1)
    a.diagonal(dim1=1, dim2=2).add_(1e-12)
    s_new = torch.linalg.solve(a, b.unsqueeze(-1)).squeeze(-1)  # (N, G)
    s_old = scale.double()

    def err(s):
        d = w - s.repeat_interleave(g, dim=1) * u
        return ((d @ h) * d).sum(1)

    s_new = s_new.to(scale.dtype).double()  # what will be stored
    ok = torch.isfinite(s_new).all(1) & (s_new > 0).all(1)
    s_new = torch.where(ok[:, None], s_new, s_old)
    ok &= err(s_new) < err(s_old)
    return torch.where(ok[:, None], s_new, s_old).to(scale.dtype)


def _gptq(weight: torch.Tensor, hessian: torch.Tensor, group_size: int,
                  domain: ZeroPointDomain | str, *, damp: float = 0.01, block_size: int = 128,
                  act_order: bool = False, scale_dtype: torch.dtype | None = None,
                  name: str = "<linear>", compute_dtype: torch.dtype = torch.float32,
                  clip_search: bool = False, clip_grid2d: bool = False, clip_weight: str = "hdiag",
                  clip_grid: int = 0, clip_max_shrink: float = 0.3,
                  fixed_params: tuple[torch.Tensor, torch.Tensor | None] | None = None) -> GPTQResult:
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
        clip_search: choose each group's range by an input-weighted clipping search
            (:func:`_column_params`) instead of plain min/max.
        clip_grid2d: with ``clip_search``, search the two ends of each group's range independently.
        clip_weight: with ``clip_search``, the weight of each column's squared rounding error in the
            search: ``"hdiag"`` the Hessian diagonal ``H[k, k]``; ``"gptq"`` GPTQ's own loss weight of
            the column, ``1 / U[k, k]^2`` with ``U`` the upper Cholesky factor of ``(H + dI)^-1`` in the
            processing order (what :attr:`GPTQResult.loss` charges for rounding that column given
            the columns after it can still compensate); ``"none"`` uniform.
        clip_grid, clip_max_shrink: with ``clip_search``, the shrink factors tried
            (:func:`clip_ratios`; ``clip_grid=0``: the fixed :data:`CLIP_RATIOS`).
        fixed_params: ``(scale (N, G), zero_point (N, G) or None)`` to use as static group parameters
            (needs ``act_order=True``) instead of choosing them.
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

    if clip_weight not in CLIP_WEIGHTS:
        raise ValueError(f"{name}: clip_weight must be one of {CLIP_WEIGHTS}, got {clip_weight!r}")
    ratios = clip_ratios(int(clip_grid), float(clip_max_shrink))
    hdiag_h = torch.diagonal(h).clone()
    perm = torch.argsort(torch.diagonal(h), descending=True) if act_order else None
    if perm is not None:
        h = h[perm][:, perm]
    u, d_abs = _inverse_cholesky_upper(h, damp, name)
    del h
    hdiag = None
    if clip_search:
        if clip_weight == "hdiag":
            hdiag = hdiag_h
        elif clip_weight == "gptq":
            lw = torch.diagonal(u).pow(-2)  # processing order
            hdiag = lw if perm is None else torch.empty_like(lw).scatter_(0, perm, lw)
        else:
            hdiag = torch.ones(k, dtype=compute_dtype, device=w.device)

    def set_group(j: int, wg: torch.Tensor) -> None:
        hd = None if hdiag is None else hdiag[j * g:(j + 1) * g]
        s, z = _column_params(wg, domain, scale_dtype, hd, grid2d=clip_grid2d, ratios=ratios)
        scale[:, j] = s[:, 0]
        if zero is not None:
            zero[:, j] = z[:, 0]

    if fixed_params is not None and not act_order:
        raise ValueError(f"{name}: fixed group parameters need act_order=True (static groups)")
    if act_order:
        if fixed_params is not None:
            scale.copy_(fixed_params[0])
            if zero is not None:
                zero.copy_(fixed_params[1])
        else:
            for j in range(ngroups):  # static groups: parameters from the original weights
                set_group(j, w[:, j * g:(j + 1) * g])
        w = w[:, perm]

    # per-column (stored) scale and zero point, in the compute dtype
    col_group = torch.arange(k, device=w.device) // g
    if perm is not None:
        col_group = col_group[perm]
    s_col = scale.to(compute_dtype)[:, col_group] if perm is not None else None
    z_col = None if zero is None or perm is None else zero.to(compute_dtype)[:, col_group]

    codes = torch.empty(n, k, dtype=torch.uint8, device=w.device)
    loss = torch.zeros((), dtype=compute_dtype, device=w.device)
    for i1 in range(0, k, block_size):
        i2 = min(i1 + block_size, k)
        w1 = w[:, i1:i2].clone()
        q1 = torch.empty_like(w1)
        err1 = torch.empty_like(w1)
        u1 = u[i1:i2, i1:i2]
        dinv = torch.diagonal(u1).clone()
        for i in range(i2 - i1):
            col = i1 + i
            if perm is None and col % g == 0:
                # dynamic group parameters from the current (error-updated) weights of the group
                if col + g <= i2:
                    wg = w1[:, i:i + g]
                else:  # the group runs past this block: bring its tail up to date first
                    tail = w[:, i2:col + g] - err1[:, :i] @ u[i1:col, i2:col + g]
                    wg = torch.cat([w1[:, i:], tail], dim=1)
                grp = col // g
                set_group(grp, wg)
                s_cur = scale[:, grp].to(compute_dtype)
                z_cur = P.SYMMETRIC_ZERO if zero is None else zero[:, grp].to(compute_dtype)
            if perm is not None:
                s_cur = s_col[:, col]
                z_cur = P.SYMMETRIC_ZERO if z_col is None else z_col[:, col]
            x = w1[:, i]
            q = torch.clamp(torch.round(x / s_cur) + z_cur, P.QMIN, P.QMAX)
            q1[:, i] = q
            e = (x - (q - z_cur) * s_cur) / dinv[i]
            err1[:, i] = e
            w1[:, i + 1:].addr_(e, u1[i, i + 1:], alpha=-1)
        codes[:, i1:i2] = q1.to(torch.uint8)
        loss += err1.pow(2).sum() / 2
        if i2 < k:
            w[:, i2:].sub_(err1 @ u[i1:i2, i2:])

    if perm is not None:
        inv = torch.argsort(perm)
        codes = codes[:, inv]
    return GPTQResult(codes.contiguous(), scale, zero, d_abs, float(loss))
