"""A quantized random Llama (transformers) generates the same greedy tokens on the Triton kernels
as on the reference kernel, on the GPU."""
from __future__ import annotations

import pytest
import torch

import nybble
from nybble.tensor import Int4Linear

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


def _tiny_llama():
    from transformers import LlamaConfig, LlamaForCausalLM
    cfg = LlamaConfig(vocab_size=512, hidden_size=256, intermediate_size=768, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                      initializer_range=0.08, tie_word_embeddings=False)
    torch.manual_seed(0)
    return LlamaForCausalLM(cfg).to("cuda", torch.bfloat16).eval()


def _generate(model, ids):
    with torch.no_grad():
        out = model.generate(ids, max_new_tokens=16, do_sample=False, pad_token_id=0,
                             attention_mask=torch.ones_like(ids))
    return out[:, ids.shape[1]:]


def _repack(model, kernel):
    names = set()
    for mod in model.modules():
        if isinstance(mod, Int4Linear):
            mod.repack(force_kernel=kernel)
            names.add(mod.kernel.name)
    return names


@pytest.mark.parametrize("config", [nybble.Int4WeightOnlyConfig(group_size=64, zero_point="int"),
                                    nybble.Int8DynamicActivationInt4WeightConfig(group_size=128,
                                                                                 act_mapping="asymmetric")],
                         ids=["a16w4", "a8w4_asym"])
def test_generate_same_tokens_as_reference(config):
    model = _tiny_llama()
    summary = nybble.quantize(model, config, show_progress=False)
    assert summary.kernels.get("triton", 0) == len(summary.quantized) > 0, summary
    ids = torch.randint(0, 512, (2, 9), device="cuda", generator=torch.Generator("cuda").manual_seed(1))
    fast = _generate(model, ids)
    assert _repack(model, "reference") == {"reference"}
    ref = _generate(model, ids)
    assert torch.equal(fast, ref), f"triton {fast.tolist()} vs reference {ref.tolist()}"
    assert _repack(model, "triton") == {"triton"}
    assert torch.equal(_generate(model, ids), fast)
