"""nybble: 4-bit integer weights for large language models, on fast CPU and GPU kernels.

Public API::

    import nybble
    summary = nybble.quantize(model, nybble.Int4WeightOnlyConfig(group_size=128))
    nybble.save(model, "out_dir")
    model = nybble.load("out_dir")
"""
from .api import QuantizationSummary, quantize
from .config import Int4WeightOnlyConfig, Int8DynamicActivationInt4WeightConfig
from .plain import PlainInt4Weight
from .tensor import Int4Linear
from .types import ActMode, ZeroPointDomain

__version__ = "0.1.0"

__all__ = [
    "quantize", "save", "load", "QuantizationSummary",
    "Int4WeightOnlyConfig", "Int8DynamicActivationInt4WeightConfig",
    "Int4Linear", "PlainInt4Weight", "ActMode", "ZeroPointDomain", "__version__",
]


def save(model, directory, **kw):
    """Write ``model`` as a compressed-tensors ``pack-quantized`` checkpoint (see :mod:`nybble.formats`)."""
    from .formats.checkpoint import save as _save
    return _save(model, directory, **kw)


def load(directory, **kw):
    """Load a checkpoint written by :func:`save` (or an imported GPTQ/AWQ/compressed-tensors one)."""
    from .formats.checkpoint import load as _load
    return _load(directory, **kw)
