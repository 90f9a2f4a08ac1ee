"""Quantization recipes. ``rtn`` lives in :mod:`nybble.api` (one line per layer); calibrated recipes
(``gptq``, ``awq``, ``awq+gptq``) run through :func:`run_recipe`."""
from __future__ import annotations


def run_recipe(model, linears, config, calibration, install, summary, show_progress=True):
    """Run the calibrated recipe ``config.algorithm`` over ``linears`` (qualified name -> nn.Linear),
    calling ``install(name, plain, input_scale=None)`` for each finished layer."""
    raise NotImplementedError(f"algorithm {config.algorithm!r} is not implemented yet")
