"""AWQ: activation-aware per-input-channel scaling, then a weight-clipping search.

For linears ``W_i`` (``(N_i, K)``) reading the same input ``x`` (``(M, K)`` calibration rows):

1. :func:`search_scale`: ``s = mean|x|^alpha`` per input channel (normalised so that
   ``sqrt(max(s) * min(s)) = 1``), for ``alpha`` on a grid ``0, 1/n, ..., (n-1)/n`` (the A16
   search also tries ``mean|x|^alpha / mean|w|^(1-alpha)``, see :func:`weight_magnitude`); each candidate
   quantizes ``W_i * s`` (round to nearest) and measures ``sum_i mean((x/s) Q_i^T - x W_i^T)^2``
   (with ``x/s`` fake-quantized per token for A8W4). ``alpha = 0`` (``s = 1``, plain RTN) is always a
   candidate, so the chosen scale never does worse than RTN on the calibration rows.
2. :func:`search_clip`: per output row and group, shrink the weight's range by ``r`` in
   ``1, 1 - 1/n, ..., 1 - max_shrink`` and keep the ``r`` with the smallest output error of that
   group's slice ``(x_g (w_g - q_g)^T)^2`` averaged over tokens.

For weight-only (A16) recipes the searches use the inputs' second moment ``H = X^T X / M`` over
*all* calibration tokens instead of a row subsample (:func:`search_scale_h`, :func:`search_clip_h`):
``mean_m ||x_m D^T||^2 = sum((D H) * D) / ...`` is the same criterion, exact and cheaper
(``N K^2`` instead of ``M K N`` per candidate). A8W4 needs the actual rows (the per-token activation
quantization is not linear), so it uses the row-based functions.

All return tensors only; folding the scale (:mod:`.architectures`) and installing layers is done
by the recipe (:mod:`.recipes`).
"""
from __future__ import annotations

import torch

from .. import primitives as P
from ..types import ActMode, ZeroPointDomain
from .calibration import fake_quantize_activations


def rtn_dequant(w: torch.Tensor, group_size: int, domain: ZeroPointDomain, scale_dtype: torch.dtype) -> torch.Tensor:
    """Round-to-nearest then dequantize: ``(N, K)`` float -> ``(N, K)`` fp32."""
    codes, scale, zero = P.quantize_rtn(w, group_size, domain, scale_dtype)
    return P.dequantize(codes, scale, zero, group_size, torch.float32)


def weight_magnitude(weights: list[torch.Tensor], group_size: int) -> torch.Tensor:
    """``(K,)`` mean over all rows of ``|w|`` relative to the max of its row's group (how large each
    input channel's weights are, independent of each group's range)."""
    rel = []
    for w in weights:
        wf = w.float()
        n, k = wf.shape
        g = P.group_len(group_size, k)
        wg = wf.abs().reshape(n, k // g, g)
        rel.append((wg / wg.amax(dim=-1, keepdim=True).clamp(min=1e-12)).reshape(n, k))
    return torch.cat(rel).mean(dim=0)


def normalized_scale(mean_abs: torch.Tensor, alpha: float, w_mean: torch.Tensor | None = None) -> torch.Tensor:
    """``(K,)`` fp32 ``mean|x|^alpha`` (or ``mean|x|^alpha / w_mean^(1-alpha)`` with ``w_mean``)
    divided by ``sqrt(max * min)``, clamped to ``>= 1e-4``."""
    s = mean_abs.float().clamp(min=1e-8).pow(alpha)
    if w_mean is not None:
        s = s / w_mean.float().clamp(min=1e-8).pow(1 - alpha)
    s = s / (s.max() * s.min()).sqrt()
    return s.clamp(min=1e-4)


def _candidates(mean_abs: torch.Tensor, ws: list[torch.Tensor], group_size: int, grid: int):
    """``(alpha, s (K,) fp32)`` candidates: ``s = 1`` (plain RTN), ``mean|x|^alpha`` and
    ``mean|x|^alpha / w_mean^(1-alpha)`` for ``alpha`` in ``1/n .. (n-1)/n``."""
    n = max(1, grid)
    yield 0.0, torch.ones(mean_abs.shape[0], device=mean_abs.device)
    w_mean = weight_magnitude(ws, group_size)
    for wm in (None, w_mean):
        for i in range(1, n):
            yield i / n, normalized_scale(mean_abs, i / n, wm)


@torch.no_grad()
def search_scale(x: torch.Tensor, mean_abs: torch.Tensor, weights: list[torch.Tensor], group_size: int,
                 domain: ZeroPointDomain | str, act_mode: ActMode = ActMode.A16, grid: int = 20,
                 scale_dtype: torch.dtype | None = None) -> tuple[torch.Tensor, float, dict]:
    """Best AWQ scale for ``weights`` (each ``(N_i, K)``) reading ``x`` (``(M, K)``).

    ``mean_abs``: ``(K,)`` mean of ``|x|`` over all calibration tokens (``x`` may be a subsample).
    Returns ``(s (K,) fp32, alpha, {"rtn_error": e0, "awq_error": e})`` (errors: mean squared output
    error summed over the weights).
    """
    domain = ZeroPointDomain(domain)
    x = x.float()
    ws = [w.float() for w in weights]
    ref = [x @ w.t() for w in ws]
    sd = scale_dtype or weights[0].dtype
    best_err, best_alpha, best_s, errs = None, 0.0, torch.ones_like(mean_abs, dtype=torch.float32), []
    for alpha, s in _candidates(mean_abs, ws, group_size, grid):
        xs = fake_quantize_activations(x / s, act_mode)
        err = 0.0
        for w, y in zip(ws, ref):
            q = rtn_dequant(w * s, group_size, domain, sd)
            err += float(((xs @ q.t() - y) ** 2).mean())
        errs.append(err)
        if best_err is None or err < best_err:
            best_err, best_alpha, best_s = err, alpha, s
    return best_s, best_alpha, {"rtn_error": errs[0], "awq_error": best_err}


def _keep_better(best_err, best, err, cand):
    """Per (row, group): keep ``cand`` (``(n, G, g)``) where its error ``err`` (``(n, G)``) beats ``best_err``."""
    if best_err is None:
        return err, cand
    better = err < best_err
    return torch.where(better, err, best_err), torch.where(better.unsqueeze(-1), cand, best)


def _clip_groups(wg: torch.Tensor, r: float, domain: ZeroPointDomain) -> torch.Tensor:
    """Clamp ``(N, G, g)`` weights to ``r`` times their group range (both ends for ``int``)."""
    if domain is ZeroPointDomain.NONE:
        m = wg.abs().amax(dim=-1, keepdim=True) * r
        return torch.maximum(torch.minimum(wg, m), -m)
    hi = wg.amax(dim=-1, keepdim=True).clamp(min=0) * r
    lo = wg.amin(dim=-1, keepdim=True).clamp(max=0) * r
    return torch.maximum(torch.minimum(wg, hi), lo)


@torch.no_grad()
def search_clip(x: torch.Tensor, w: torch.Tensor, group_size: int, domain: ZeroPointDomain | str,
                act_mode: ActMode = ActMode.A16, grid: int = 20, max_shrink: float = 0.5,
                scale_dtype: torch.dtype | None = None, max_elems: int = 1 << 24) -> torch.Tensor:
    """Clipped copy of ``w`` (``(N, K)``, returned fp32) minimizing each group's output error on
    ``x`` (``(M, K)``: the layer's actual inputs, i.e. already divided by the AWQ scale)."""
    domain = ZeroPointDomain(domain)
    n, k = w.shape
    g = P.group_len(group_size, k)
    ng = k // g
    sd = scale_dtype or w.dtype
    xs = fake_quantize_activations(x, act_mode).reshape(-1, ng, g)
    m = xs.shape[0]
    out = w.float().clone()
    steps = [1.0 - i / grid for i in range(int(max_shrink * grid) + 1)] if grid > 0 else [1.0]
    chunk = max(1, max_elems // max(1, m * ng))
    for r0 in range(0, n, chunk):
        wg = out[r0:r0 + chunk].reshape(-1, ng, g)
        best_err = None
        best = wg
        for r in steps:
            wc = _clip_groups(wg, r, domain)
            q = rtn_dequant(wc.reshape(-1, k), group_size, domain, sd).reshape(-1, ng, g)
            # per (row, group) output error of that group's slice, averaged over tokens
            err = torch.einsum("mGg,nGg->mnG", xs, wg - q).pow(2).mean(dim=0)
            best_err, best = _keep_better(best_err, best, err, wc)
        out[r0:r0 + chunk] = best.reshape(-1, k)
    return out


@torch.no_grad()
def search_scale_h(h: torch.Tensor, mean_abs: torch.Tensor, weights: list[torch.Tensor], group_size: int,
                   domain: ZeroPointDomain | str, grid: int = 20, scale_dtype: torch.dtype | None = None
                   ) -> tuple[torch.Tensor, float, dict]:
    """:func:`search_scale` for A16 from ``h`` (``(K, K)`` fp32 ``X^T X / M`` of all calibration rows):
    the error of a candidate is ``sum_i sum((D_i H) * D_i) / N_i`` with ``D_i = Q_i / s - W_i``."""
    domain = ZeroPointDomain(domain)
    ws = [w.float() for w in weights]
    sd = scale_dtype or weights[0].dtype
    k = h.shape[0]
    best_err, best_alpha, best_s, errs = None, 0.0, torch.ones(k, device=h.device), []
    for alpha, s in _candidates(mean_abs, ws, group_size, grid):
        err = 0.0
        for w in ws:
            d = rtn_dequant(w * s, group_size, domain, sd) / s - w
            err += float(((d @ h) * d).sum()) / w.shape[0]
        errs.append(err)
        if best_err is None or err < best_err:
            best_err, best_alpha, best_s = err, alpha, s
    return best_s, best_alpha, {"rtn_error": errs[0], "awq_error": best_err}


@torch.no_grad()
def search_clip_h(h: torch.Tensor, w: torch.Tensor, group_size: int, domain: ZeroPointDomain | str,
                  grid: int = 20, max_shrink: float = 0.5, scale_dtype: torch.dtype | None = None) -> torch.Tensor:
    """:func:`search_clip` for A16 from ``h`` (``(K, K)`` second moment of the layer's actual inputs):
    the error of group ``j`` of row ``n`` is ``d^T H_jj d`` with ``d`` that group's weight error and
    ``H_jj`` the group's diagonal block of ``h``."""
    domain = ZeroPointDomain(domain)
    n, k = w.shape
    g = P.group_len(group_size, k)
    ng = k // g
    sd = scale_dtype or w.dtype
    hb = torch.stack([h[j * g:(j + 1) * g, j * g:(j + 1) * g] for j in range(ng)]).float()  # (G, g, g)
    wg = w.float().reshape(n, ng, g)
    steps = [1.0 - i / grid for i in range(int(max_shrink * grid) + 1)] if grid > 0 else [1.0]
    best_err, best = None, wg
    for r in steps:
        wc = _clip_groups(wg, r, domain)
        d = wg - rtn_dequant(wc.reshape(n, k), group_size, domain, sd).reshape(n, ng, g)
        dt = d.transpose(0, 1)                                # (G, n, g)
        err = (torch.bmm(dt, hb) * dt).sum(-1).transpose(0, 1)  # (n, G): d^T H_jj d
        best_err, best = _keep_better(best_err, best, err, wc)
    return best.reshape(n, k)
