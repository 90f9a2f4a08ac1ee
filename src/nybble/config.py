"""Quantization recipes as frozen dataclasses."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

from .types import ALLOWED_GROUP_SIZES, ActMode, ZeroPointDomain

ALGORITHMS = ("rtn", "gptq", "awq", "awq+gptq")
ACT_MAPPINGS = ("symmetric", "asymmetric")


@dataclass(frozen=True)
class _Int4Config:
    group_size: int = 128
    zero_point: str = "int"
    algorithm: str = "rtn"
    #: recipe-specific knobs (e.g. GPTQ ``damp``/``act_order``, AWQ ``grid``), validated by the recipe
    algorithm_options: tuple[tuple[str, object], ...] = field(default=())

    def __post_init__(self):
        if self.group_size not in ALLOWED_GROUP_SIZES:
            raise ValueError(f"group_size={self.group_size!r} is not allowed; use one of {ALLOWED_GROUP_SIZES}")
        try:
            ZeroPointDomain(self.zero_point)
        except ValueError:
            raise ValueError(f"zero_point={self.zero_point!r} is not allowed; use 'int' or 'none'") from None
        if self.algorithm not in ALGORITHMS:
            raise ValueError(f"algorithm={self.algorithm!r} is not allowed; use one of {ALGORITHMS}")
        if isinstance(self.algorithm_options, dict):
            object.__setattr__(self, "algorithm_options", tuple(sorted(self.algorithm_options.items())))

    @property
    def domain(self) -> ZeroPointDomain:
        return ZeroPointDomain(self.zero_point)

    @property
    def act_mode(self) -> ActMode:
        raise NotImplementedError

    @property
    def options(self) -> dict:
        """``algorithm_options`` as a dict."""
        return dict(self.algorithm_options)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["algorithm_options"] = dict(self.algorithm_options)
        d["type"] = type(self).__name__
        return d


@dataclass(frozen=True)
class Int4WeightOnlyConfig(_Int4Config):
    """A16W4: int4 weights, activations stay in the model's dtype.

    ``group_size``: 32/64/128/256 or -1 (per-channel); ``zero_point``: ``"int"`` (asymmetric,
    integer zero point 0..15) or ``"none"`` (symmetric); ``algorithm``: ``"rtn"``, ``"gptq"``,
    ``"awq"`` or ``"awq+gptq"`` (calibrated recipes need ``calibration=`` data).
    """

    @property
    def act_mode(self) -> ActMode:
        return ActMode.A16


@dataclass(frozen=True)
class Int8DynamicActivationInt4WeightConfig(_Int4Config):
    """A8W4: int4 weights and activations quantized per token to int8 at run time.

    ``act_mapping``: ``"symmetric"`` (int8, zero point 0) or ``"asymmetric"`` (uint8 with a zero
    point); other fields as :class:`Int4WeightOnlyConfig`.
    """

    act_mapping: str = "symmetric"

    def __post_init__(self):
        super().__post_init__()
        if self.act_mapping not in ACT_MAPPINGS:
            raise ValueError(f"act_mapping={self.act_mapping!r} is not allowed; use one of {ACT_MAPPINGS}")

    @property
    def act_mode(self) -> ActMode:
        return ActMode.A8_ASYM if self.act_mapping == "asymmetric" else ActMode.A8_SYM


CONFIG_TYPES = {c.__name__: c for c in (Int4WeightOnlyConfig, Int8DynamicActivationInt4WeightConfig)}


def config_from_dict(d: dict) -> _Int4Config:
    """Inverse of ``to_dict``; raises ValueError on an unknown type or field."""
    d = dict(d)
    name = d.pop("type", None)
    if name not in CONFIG_TYPES:
        raise ValueError(f"unknown nybble config type {name!r}; known: {sorted(CONFIG_TYPES)}")
    cls = CONFIG_TYPES[name]
    known = {f.name for f in fields(cls)}
    unknown = set(d) - known
    if unknown:
        raise ValueError(f"{name}: unknown fields {sorted(unknown)}")
    return cls(**d)


def config_for_mode(mode: str, **kw) -> _Int4Config:
    """``"a16w4"`` / ``"a8w4"`` / ``"a8w4-asym"`` -> a config."""
    if mode == "a16w4":
        return Int4WeightOnlyConfig(**kw)
    if mode in ("a8w4", "a8w4-sym"):
        return Int8DynamicActivationInt4WeightConfig(act_mapping="symmetric", **kw)
    if mode == "a8w4-asym":
        return Int8DynamicActivationInt4WeightConfig(act_mapping="asymmetric", **kw)
    raise ValueError(f"unknown mode {mode!r}; use a16w4, a8w4 or a8w4-asym")
