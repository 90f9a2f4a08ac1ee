"""Checkpoints on the GPU: nybble.load(device="cuda") builds the int4 layers on the GPU kernels with the
same weights as on the CPU, and generate() runs (needs CUDA; skipped elsewhere)."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

import nybble

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from test_formats_common import dequantized_layers, tiny_llama  # noqa: E402

pytestmark = pytest.mark.gpu


@pytest.mark.parametrize("mode", ["a16w4", "a8w4"])
def test_load_on_cuda_matches_cpu(tmp_path, mode):
    from nybble.config import config_for_mode
    model = tiny_llama(seed=1, dtype=torch.float16)
    nybble.quantize(model, config_for_mode(mode, group_size=128), show_progress=False)
    nybble.save(model, tmp_path / "ck")
    cpu = nybble.load(tmp_path / "ck")
    gpu = nybble.load(tmp_path / "ck", device="cuda")
    a, b = dequantized_layers(cpu), dequantized_layers(gpu)
    assert all(torch.equal(a[k], b[k].cpu()) for k in a)
    assert all(m.device.type == "cuda" for m in gpu.modules() if isinstance(m, nybble.Int4Linear))
    ids = torch.tensor([[1, 5, 9, 33, 7]])
    with torch.no_grad():
        lc = cpu(ids).logits.float()
        lg = gpu(ids.cuda()).logits.float().cpu()
    assert (lc - lg).abs().max() <= 0.05 * lc.abs().max()
    out = gpu.generate(ids.cuda(), max_new_tokens=8, do_sample=False, pad_token_id=0)
    assert out.shape == (1, 13)


def test_gptq_import_on_cuda(tmp_path):
    from nybble.formats.gptq import export_gptq
    model = tiny_llama(seed=2, dtype=torch.float16)
    nybble.quantize(model, nybble.Int4WeightOnlyConfig(group_size=128), show_progress=False)
    export_gptq(model, tmp_path / "g")
    gpu = nybble.load(tmp_path / "g", device="cuda")
    a, b = dequantized_layers(model), dequantized_layers(gpu)
    assert all(torch.equal(a[k], b[k].cpu()) for k in a)
