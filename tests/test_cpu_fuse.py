"""nybble.kernels.cpu_fuse: sibling int4 layers (q/k/v, gate/up) computed by one fused call give the
separate layers' outputs (A8W4 bit for bit, A16W4 within fp32 summation-order rounding), are never
served a stale kept output, and unfuse back to the exact original layers."""
from __future__ import annotations

import pytest
import torch

cpu = pytest.importorskip("nybble.kernels.cpu")
if not cpu.available_isas():
    pytest.skip("nybble._C is not available", allow_module_level=True)
transformers = pytest.importorskip("transformers")

import nybble  # noqa: E402
from nybble.kernels import cpu_fuse as F  # noqa: E402
from nybble.tensor import Int4Linear  # noqa: E402


def small_llama(config):
    cfg = transformers.LlamaConfig(hidden_size=256, intermediate_size=384, num_hidden_layers=2,
                                   num_attention_heads=8, num_key_value_heads=2, vocab_size=300)
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(cfg).to(torch.bfloat16).eval()
    nybble.quantize(model, config, force_kernel="nybble_cpu", show_progress=False)
    return model


CONFIGS = {
    "a16": lambda: nybble.Int4WeightOnlyConfig(group_size=64, zero_point="int"),
    "a8": lambda: nybble.Int8DynamicActivationInt4WeightConfig(group_size=64, zero_point="int",
                                                               act_mapping="asymmetric"),
}


def logits(model, ids):
    with torch.inference_mode():
        out = model(input_ids=ids, use_cache=True)
        res = [out.logits.float()]
        for t in range(3):
            out = model(input_ids=ids[:, t:t + 1], past_key_values=out.past_key_values, use_cache=True)
            res.append(out.logits.float())
    return res


@pytest.mark.parametrize("mode", list(CONFIGS))
def test_fused_model_matches_and_unfuses_exactly(mode):
    model = small_llama(CONFIGS[mode]())
    ids = torch.randint(0, 300, (1, 9), generator=torch.Generator().manual_seed(1))
    ref = logits(model, ids)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    assert F.fuse_siblings(model) == 4  # 2 layers x (q/k/v, gate/up)
    attn = model.model.layers[0].self_attn
    assert isinstance(attn.k_proj, F.SiblingOutput) and isinstance(getattr(attn, "q_proj+k_proj+v_proj"), F.FusedInt4Linear)
    got = logits(model, ids)
    for a, b in zip(got, ref):
        if mode == "a8":
            assert torch.equal(a, b)  # exact int32 group sums, same fp32 steps per column
        else:
            assert (a - b).abs().max() <= 2e-2 * b.abs().max()
    assert F.unfuse_siblings(model) == 4
    assert isinstance(model.model.layers[0].self_attn.k_proj, Int4Linear)
    after = model.state_dict()
    assert after.keys() == state.keys() and all(torch.equal(after[k], state[k]) for k in state)
    for a, b in zip(logits(model, ids), ref):
        assert torch.equal(a, b)


@pytest.mark.parametrize("inference", [True, False])
def test_kept_output_never_stale(inference):
    """A member is served the kept output only for the same, unchanged input tensor."""
    model = small_llama(CONFIGS["a8"]())
    mlp = model.model.layers[1].mlp
    gate, up = mlp.gate_proj, mlp.up_proj
    ctx = torch.inference_mode() if inference else torch.no_grad()
    with ctx:
        x = torch.randn(1, 2, 256).bfloat16()
        want_up = up(x.clone())
        F.fuse_siblings(model)
        g = mlp.gate_proj(x)
        assert torch.equal(g, gate(x))
        assert torch.equal(mlp.up_proj(x), want_up)  # served from the kept result
        mlp.gate_proj(x)
        x.mul_(2)  # changed in place between the two member calls
        assert torch.equal(mlp.up_proj(x), up(x))
        mlp.gate_proj(x)
        y = x.clone()  # equal content, another tensor: recomputed (still equal)
        assert torch.equal(mlp.up_proj(y), up(y))
        assert torch.equal(mlp.up_proj(x), up(x))  # a second call of a member: recomputed


