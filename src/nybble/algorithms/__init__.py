"""Quantization recipes. ``rtn`` lives in :mod:`nybble.api` (one line per layer); calibrated recipes
(``gptq``, ``awq``, ``awq+gptq``) run through :func:`run_recipe` on the calibration engine
(:mod:`.calibration`).

Modules: :mod:`.calibration` (data -> batches, block-by-block engine), :mod:`.gptq` (the GPTQ
rounding), :mod:`.awq` (scale and clipping searches), :mod:`.architectures` (where AWQ scales
fold), :mod:`.recipes` (the recipes as block processors), :mod:`.options` (``algorithm_options``).
"""
from __future__ import annotations

from .calibration import TextCalibration, load_calibration_file  # noqa: F401  (public API)


def run_recipe(model, linears, config, calibration, install, summary, show_progress=True):
    """Run the calibrated recipe ``config.algorithm`` over ``linears`` (qualified name -> nn.Linear),
    calling ``install(name, plain, input_scale=None)`` for each finished layer.

    ``calibration``: see :mod:`nybble.algorithms.calibration` (TextCalibration / dict of texts and
    tokenizer / (B, T) token ids / iterable of input dicts). ``config.options`` are validated by
    :func:`.options.resolve_options`. Fills ``summary.details`` (calibration time, tokens, memory).
    """
    from .calibration import prepare_batches, run_blockwise
    from .options import resolve_options
    from .recipes import make_recipe

    opts = resolve_options(config.algorithm, config.options)
    if not linears:
        return
    batches = prepare_batches(calibration, model, opts)
    recipe = make_recipe(config, opts, install, summary)
    run_blockwise(model, list(linears), batches, recipe, config.act_mode, summary,
                  desc=f"{config.algorithm} blocks", show_progress=show_progress)
    summary.details["calibration_samples"] = sum(
        int(b["input_ids"].shape[0]) for b in batches if hasattr(b.get("input_ids"), "shape"))
    # nsamples/seqlen are shown as calibration_samples/tokens (a TextCalibration carries its own)
    summary.details["algorithm_options"] = {k: v for k, v in opts.items()
                                            if k not in ("layer_errors", "nsamples", "seqlen")}
