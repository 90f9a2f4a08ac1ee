"""What the GPTQ and AWQ importers share: both name each int4 layer by its ``<prefix>.qweight``
tensor and parse their ``quantization_config`` once."""
from __future__ import annotations

import torch

from .safetensors_io import CheckpointError


def required_tensors(t: dict[str, torch.Tensor], prefix: str, names: tuple[str, ...], where: str,
                     fmt: str) -> tuple[torch.Tensor, ...]:
    """``t[name]`` for each name, or a CheckpointError naming the missing ``prefix.name`` and the layer."""
    missing = [s for s in names if s not in t]
    if missing:
        raise CheckpointError(f"{where}: tensor {prefix}.{missing[0]} is missing (needed by the {fmt} layer {prefix})")
    return tuple(t[s] for s in names)


class QweightImporter:
    """Base of importers whose layers are the prefixes of ``*.qweight`` tensors.

    Subclasses set ``method``/``suffixes`` and implement ``parse_config(qcfg, where) -> dict``,
    ``describe(cfg) -> dict`` (facts recorded in ``info``) and ``build``.
    """

    method: str
    suffixes: tuple[str, ...]

    def __init__(self, qcfg: dict, where: str, force_kernel: str | None = None):
        self.cfg = self.parse_config(qcfg, where)
        self.where, self.force_kernel = where, force_kernel
        self.aliases: dict[str, str] = {}
        self.info = self.describe(self.cfg)

    @staticmethod
    def parse_config(qcfg: dict, where: str) -> dict:
        raise NotImplementedError

    @staticmethod
    def describe(cfg: dict) -> dict:
        raise NotImplementedError

    def layer_prefixes(self, files) -> list[str]:
        return [n.rpartition(".")[0] for n in files.names() if n.endswith(".qweight")]
