import logging

import pytest
import torch
from torch import nn

import nybble
from nybble import Int4Linear, Int4WeightOnlyConfig, Int8DynamicActivationInt4WeightConfig


class Toy(nn.Module):
    def __init__(self):
        super().__init__()
        self.up = nn.Linear(256, 512)
        self.odd = nn.Linear(200, 64)       # K not divisible by 128
        self.tiny = nn.Linear(16, 64)       # K too small
        self.down = nn.Linear(512, 128, bias=False)

    def forward(self, x):
        return self.down(torch.relu(self.up(x)))


def test_quantize_replaces_and_reports(caplog):
    m = Toy()
    x = torch.randn(3, 256)
    ref = m(x)
    with caplog.at_level(logging.INFO, logger="nybble"):
        s = nybble.quantize(m, Int4WeightOnlyConfig(group_size=128))
    assert s.quantized == ["up", "down"]
    assert "not divisible by group_size 128" in s.skipped["odd"]
    assert "below the minimum" in s.skipped["tiny"]
    assert "skipping odd" in caplog.text
    assert isinstance(m.up, Int4Linear) and isinstance(m.odd, nn.Linear)
    assert s.bytes_after < s.bytes_before
    assert "2 linear layers quantized" in str(s)
    out = m(x)
    assert (out - ref).abs().max() < 0.1 * ref.abs().max()


def test_filter_fn_and_strict():
    m = Toy()
    s = nybble.quantize(m, Int4WeightOnlyConfig(group_size=32), filter_fn=lambda mod, name: name != "down")
    assert "down" not in s.quantized and isinstance(m.down, nn.Linear)
    with pytest.raises(ValueError, match="odd: cannot quantize.*not divisible"):
        nybble.quantize(Toy(), Int4WeightOnlyConfig(group_size=32), strict=True)


@pytest.mark.parametrize("cfg", [Int8DynamicActivationInt4WeightConfig(group_size=64),
                                 Int8DynamicActivationInt4WeightConfig(group_size=-1, act_mapping="asymmetric",
                                                                       zero_point="none")])
def test_a8w4_config(cfg):
    m = Toy()
    x = torch.randn(2, 256)
    ref = m(x)
    nybble.quantize(m, cfg)
    assert m.up.act_mode == cfg.act_mode
    assert (m(x) - ref).abs().max() < 0.15 * ref.abs().max()


def test_nan_weight_error_names_layer():
    m = Toy()
    with torch.no_grad():
        m.down.weight[3, 5] = float("nan")
    with pytest.raises(ValueError, match="down: weight contains 1 NaN/Inf"):
        nybble.quantize(m, Int4WeightOnlyConfig())


def test_unsupported_dtype_error_names_layer():
    m = Toy().to(torch.float64)
    with pytest.raises(TypeError, match="up: weight dtype float64 is not supported"):
        nybble.quantize(m, Int4WeightOnlyConfig())


@pytest.mark.parametrize("kw,msg", [({"group_size": 100}, "group_size=100"), ({"zero_point": "float"}, "zero_point"),
                                    ({"algorithm": "magic"}, "algorithm")])
def test_config_validation(kw, msg):
    with pytest.raises(ValueError, match=msg):
        Int4WeightOnlyConfig(**kw)
    with pytest.raises(ValueError, match="act_mapping"):
        Int8DynamicActivationInt4WeightConfig(act_mapping="sideways")


def test_calibrated_recipe_without_data_is_an_error():
    with pytest.raises(ValueError, match="needs calibration data"):
        nybble.quantize(Toy(), Int4WeightOnlyConfig(algorithm="gptq"))
    with pytest.raises(ValueError, match="takes no calibration"):
        nybble.quantize(Toy(), Int4WeightOnlyConfig(), calibration=torch.zeros(1, 4, dtype=torch.long))


def test_bf16_model():
    m = Toy().to(torch.bfloat16)
    nybble.quantize(m, Int4WeightOnlyConfig(group_size=64, zero_point="none"))
    y = m(torch.randn(2, 256, dtype=torch.bfloat16))
    assert y.dtype == torch.bfloat16 and torch.isfinite(y).all()
