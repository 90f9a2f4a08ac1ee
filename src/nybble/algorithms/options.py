"""The ``algorithm_options`` each calibrated recipe accepts, their types and defaults.

Calibration (every recipe): ``nsamples`` (128) and ``seqlen`` (512) for text/tensor calibration
data, ``batch_size`` (8) calibration samples per forward, ``layer_errors`` (False): record each
layer's relative output error on its calibration inputs (GPTQ and RTN) in ``summary.details``.

GPTQ (``gptq``, ``awq+gptq``): ``damp`` (0.2, fraction of the mean Hessian diagonal),
``hess_power`` (0.6: the rounding Hessian's eigenvalues are raised to this power, trace kept --
spectral shrinkage, so that rounding error is not pushed into directions that merely had little
variance in the calibration text, see :func:`.gptq.spectral_shrink`; 1.0: the measured Hessian),
``act_order`` (True: columns by decreasing Hessian diagonal, static groups), ``block_size`` (128),
``true_sequential`` (True: inside a known block, quantize q/k/v, then o, then gate/up, then down, each
stage calibrated on the outputs of the already-quantized stages; False: one pass per block),
``clip_search`` (True: each group's range is shrunk by the factor minimizing its Hessian-diagonal
weighted rounding error, see :func:`.gptq._column_params`), ``clip_grid2d`` (False: that search
shrinks the two ends of the range independently), ``clip_weight`` ("hdiag": what weights each
column's squared rounding error in that search -- the Hessian diagonal; "gptq": GPTQ's own per-column
loss weight ``1 / U_kk^2``; "none": uniform), ``clip_grid`` (0: the 11 fixed shrink factors 1.0 ... 0.7;
``n``: ``n + 1`` factors from 1.0 down to ``1 - clip_max_shrink``), ``clip_max_shrink`` (0.3),
``refit_scales`` (2 for GPTQ, 1 for AWQ: rounds of least-squares scale re-fitting for the chosen
codes, each followed by a GPTQ pass with the re-fitted static scales, see
:func:`.gptq.refit_group_scales`; for ``awq`` one re-fit of the RTN scales),
``refine_sweeps`` (2: after that, rounds of coordinate descent on the codes -- each code moves by
+-1 where that lowers the layer's output error -- each followed by a scale re-fit, see
:func:`.gptq.refine_codes`), ``bias_correction`` (True: for a linear *with* a bias, the bias is
re-fitted so that the layer's mean output error on its calibration tokens is zero, ``b' = b + W mu_f
- Q mu_q``, see :func:`.gptq.bias_correction`; layers without a bias stay bias-free),
``bias_center`` (True: such a layer is then rounded with the centred moments, since its bias absorbs
the mean error, see :func:`.gptq.centered_moments`), ``hess_shrink`` (0.0: shrink the Hessian and
the cross moment towards their diagonals by this fraction), ``block_tune`` (0: Adam steps of
block-output tuning of the group scales (and biases) against the float model after a block is
rounded, see :mod:`.block_tune`; needs ``asymmetric``), ``block_tune_lr`` (1e-3),
``block_tune_norms`` (False: also tune the block's norm weights).

Asymmetric calibration (every recipe): ``asymmetric`` (True: the engine also runs the float model
block by block and each layer is rounded for ``||X_float W^T - X_quant Q^T||`` -- it absorbs part of
the error its inputs carry from earlier quantized layers, see :func:`.gptq.asymmetric_target`),
``asym_damp`` (0.3: ridge regularisation of that target towards ``W``, fraction of the mean Hessian
diagonal).

AWQ (``awq``, ``awq+gptq``): ``awq_grid`` (20 values of alpha); ``awq`` only: ``awq_clip`` (True),
``awq_clip_grid`` (20), ``awq_max_shrink`` (0.5); for A8W4 only (whose
searches need real rows; A16 searches use ``X^T X`` over all tokens): ``awq_tokens`` (4096
calibration rows kept per layer group) and ``awq_clip_tokens`` (1024).
"""
from __future__ import annotations

from .gptq import CLIP_WEIGHTS

_COMMON = {"nsamples": (int, 128), "seqlen": (int, 512), "batch_size": (int, 8), "layer_errors": (bool, False)}
_GPTQ = {"damp": (float, 0.2), "act_order": (bool, True), "block_size": (int, 128),
         "true_sequential": (bool, True), "clip_search": (bool, True), "asymmetric": (bool, True),
         "asym_damp": (float, 0.3), "refit_scales": (int, 2), "clip_grid2d": (bool, False),
         "bias_correction": (bool, True), "bias_center": (bool, True), "hess_shrink": (float, 0.0),
         "block_tune": (int, 0), "block_tune_lr": (float, 1e-3), "refine_sweeps": (int, 2),
         "block_tune_norms": (bool, False), "clip_weight": (str, "hdiag"), "clip_grid": (int, 0),
         "clip_max_shrink": (float, 0.3), "hess_power": (float, 0.6)}
_AWQ = {"asymmetric": (bool, True), "asym_damp": (float, 0.3), "refit_scales": (int, 1), "awq_grid": (int, 20), "awq_clip": (bool, True), "awq_clip_grid": (int, 20),
        "awq_max_shrink": (float, 0.5), "awq_tokens": (int, 4096), "awq_clip_tokens": (int, 1024)}

ALLOWED = {
    "gptq": {**_COMMON, **_GPTQ},
    "awq": {**_COMMON, **_AWQ},
    # awq+gptq: AWQ scales, then GPTQ rounding (GPTQ chooses the group ranges; no AWQ clipping)
    "awq+gptq": {**_COMMON, **_GPTQ, **{k: v for k, v in _AWQ.items() if "clip" not in k and "shrink" not in k}},
}


def resolve_options(algorithm: str, given: dict) -> dict:
    """Defaults of ``algorithm`` updated with ``given``; ValueError/TypeError on unknown keys, wrong
    types or out-of-range values."""
    if algorithm not in ALLOWED:
        raise ValueError(f"algorithm {algorithm!r} has no calibrated recipe; use one of {sorted(ALLOWED)}")
    spec = ALLOWED[algorithm]
    unknown = sorted(set(given) - set(spec))
    if unknown:
        raise ValueError(f"algorithm {algorithm!r}: unknown algorithm_options {unknown}; allowed: {sorted(spec)}")
    out = {k: default for k, (_, default) in spec.items()}
    for k, v in given.items():
        typ = spec[k][0]
        if typ is bool:
            if not isinstance(v, bool):
                raise TypeError(f"algorithm option {k!r} must be True or False, got {v!r}")
        elif typ is str:
            if not isinstance(v, str):
                raise TypeError(f"algorithm option {k!r} must be a string, got {v!r}")
        elif typ is int:
            if isinstance(v, bool) or not isinstance(v, int):
                raise TypeError(f"algorithm option {k!r} must be an integer, got {v!r}")
        elif isinstance(v, bool) or not isinstance(v, (int, float)):
            raise TypeError(f"algorithm option {k!r} must be a number, got {v!r}")
        out[k] = typ(v)
    for k in ("nsamples", "seqlen", "batch_size", "block_size", "awq_grid", "awq_tokens", "awq_clip_tokens"):
        if k in out and out[k] < 1:
            raise ValueError(f"algorithm option {k!r} must be >= 1, got {out[k]}")
    if "refit_scales" in out and out["refit_scales"] < 0:
        raise ValueError(f"algorithm option 'refit_scales' must be >= 0, got {out['refit_scales']}")
    if "asym_damp" in out and not out["asym_damp"] > 0:
        raise ValueError(f"algorithm option 'asym_damp' must be > 0, got {out['asym_damp']}")
    if "damp" in out and not out["damp"] > 0:
        raise ValueError(f"algorithm option 'damp' must be > 0, got {out['damp']}")
    if "awq_max_shrink" in out and not 0 <= out["awq_max_shrink"] < 1:
        raise ValueError(f"algorithm option 'awq_max_shrink' must be in [0, 1), got {out['awq_max_shrink']}")
    if "hess_power" in out and not 0 <= out["hess_power"] <= 1:
        raise ValueError(f"algorithm option 'hess_power' must be in [0, 1], got {out['hess_power']}")
    if "clip_weight" in out and out["clip_weight"] not in CLIP_WEIGHTS:
        raise ValueError(f"algorithm option 'clip_weight' must be one of {CLIP_WEIGHTS}, got {out['clip_weight']!r}")
    if "clip_grid" in out and out["clip_grid"] < 0:
        raise ValueError(f"algorithm option 'clip_grid' must be >= 0, got {out['clip_grid']}")
    if "clip_max_shrink" in out and not 0 <= out["clip_max_shrink"] < 1:
        raise ValueError(f"algorithm option 'clip_max_shrink' must be in [0, 1), got {out['clip_max_shrink']}")
    if "awq_clip_grid" in out and out["awq_clip_grid"] < 0:
        raise ValueError(f"algorithm option 'awq_clip_grid' must be >= 0, got {out['awq_clip_grid']}")
    return out
