"""Describe an int4 checkpoint from its headers and config alone (no weights are read).

Used by ``nybble info``: what each layer is (shape, group size, zero-point domain, activation mode,
stored bytes) and which kernel would run it on this machine.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..types import ActMode

_DTYPE_BYTES = {"BOOL": 1, "U8": 1, "I8": 1, "I16": 2, "U16": 2, "F16": 2, "BF16": 2, "I32": 4, "U32": 4,
                "F32": 4, "I64": 8, "U64": 8, "F64": 8}


@dataclass(frozen=True)
class LayerDesc:
    """One quantized layer as stored: ``n`` outputs, ``k`` inputs, ``group_size`` (-1 per-channel),
    ``symmetric`` (zero-point domain none), ``act_mode``, ``act_order`` (g_idx present), ``nbytes``."""

    name: str
    n: int
    k: int
    group_size: int
    symmetric: bool
    act_mode: ActMode
    act_order: bool
    nbytes: int


@dataclass
class CheckpointDesc:
    directory: Path
    quant_method: str
    model_type: str
    architecture: str
    dtype: str
    layers: list[LayerDesc]
    dense_tensors: int
    dense_bytes: int
    file_bytes: int
    files: int
    extra: dict


def tensor_bytes(files, name: str) -> int:
    n = 1
    for d in files.shapes[name]:
        n *= d
    return n * _DTYPE_BYTES.get(files.dtypes[name], 0)


def describe(directory: str | Path) -> CheckpointDesc:
    """Read ``config.json`` and the safetensors headers of ``directory``; raises CheckpointError."""
    from .checkpoint import importer_for, read_quant_config
    from .modeling import config_dtype
    from .safetensors_io import CheckpointFiles

    directory = Path(directory)
    cfg, qcfg = read_quant_config(directory)
    where = str(directory / "config.json")
    importer = importer_for(qcfg.get("quant_method"), where)(qcfg, where, None)
    files = CheckpointFiles(directory)
    layers = importer.describe_layers(files)
    owned = set()
    for lay in layers:
        owned.update(n for n in files.names() if n.rpartition(".")[0] == lay.name
                     and n.rpartition(".")[2] in importer.suffixes)
    dense = [n for n in files.names() if n not in owned]
    extra = dict(getattr(importer, "info", {}))
    return CheckpointDesc(directory, importer.method, cfg.get("model_type", "?"),
                          (cfg.get("architectures") or ["?"])[0],
                          str(config_dtype(cfg, where)).removeprefix("torch."), layers, len(dense),
                          sum(tensor_bytes(files, n) for n in dense), files.nbytes(), len(files.files), extra)
