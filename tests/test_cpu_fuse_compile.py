"""nybble.kernels.cpu_fuse under torch.compile: a fused q/k/v or gate/up group is ONE nybble linear
op in the compiled graph (not one fused call per member), with no graph break (``fullgraph=True``),
the same decode as the eager fused model, and a member with another input gets its own call."""
from __future__ import annotations

import pytest
import torch

cpu = pytest.importorskip("nybble.kernels.cpu")
if not cpu.available_isas():
    pytest.skip("nybble._C is not available", allow_module_level=True)
transformers = pytest.importorskip("transformers")

import nybble  # noqa: E402
from nybble.bench.e2e_cpu import Decoder  # noqa: E402
from nybble.kernels import cpu_fuse as F  # noqa: E402
from nybble.kernels.cpu_attention import use_decode_attention  # noqa: E402

HIDDEN, INTER, HEADS, KV_HEADS, HEAD_DIM, LAYERS, VOCAB = 256, 384, 8, 2, 32, 2, 320

CONFIGS = {  # name -> (config, kernel, linear op name)
    "a8": (lambda: nybble.Int8DynamicActivationInt4WeightConfig(group_size=64, zero_point="int",
                                                                act_mapping="asymmetric"), "nybble_cpu", "cpu_a8w4"),
    "a16": (lambda: nybble.Int4WeightOnlyConfig(group_size=64, zero_point="int"), "nybble_cpu", "cpu_a16w4"),
    "torch_int4": (lambda: nybble.Int4WeightOnlyConfig(group_size=64, zero_point="none"), "torch_int4_cpu",
                   "torch_int4_cpu_a16w4"),
}


def small_llama(mode):
    cfg = transformers.LlamaConfig(hidden_size=HIDDEN, intermediate_size=INTER, num_hidden_layers=LAYERS,
                                   num_attention_heads=HEADS, num_key_value_heads=KV_HEADS, vocab_size=VOCAB,
                                   max_position_embeddings=64)
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(cfg).to(torch.bfloat16).eval()
    config, kernel, _ = CONFIGS[mode]
    nybble.quantize(model, config(), force_kernel=kernel, show_progress=False)
    use_decode_attention(model)  # as e2e_cpu --attention nybble (the decode attention op in the graph)
    return model


def linear_ops(gm, op: str) -> list[int]:
    """Output width N of every ``nybble::<op>`` call in the FX graph, in graph order."""
    widths = []
    for node in gm.graph.nodes:
        if node.op == "call_function" and str(node.target).startswith(f"nybble.{op}"):
            widths.append(int(node.meta["example_value"].shape[-1]))
    return widths


def decode(model, compiled: bool, backend=None, steps: int = 5):
    """(tokens, per-step logits) of a greedy decode of 6 prompt tokens + ``steps`` steps."""
    ids = torch.randint(0, VOCAB, (1, 6), generator=torch.Generator().manual_seed(1))
    dec = Decoder(model, compile=compiled, max_len=16, **({"backend": backend} if backend else {}))
    logits = []
    with torch.inference_mode():
        tok = dec.start(ids)
        toks = [int(tok)]
        for _ in range(steps):
            out = dec.fn(input_ids=tok, past_key_values=dec.past, use_cache=True)
            dec.past = out.past_key_values
            logits.append(out.logits.float())
            tok = out.logits[:, -1:].argmax(-1)
            toks.append(int(tok))
    return toks, logits


@pytest.mark.parametrize("mode", list(CONFIGS))
def test_compiled_fused_model_one_op_per_group(mode):
    torch._dynamo.reset()
    model = small_llama(mode)
    assert F.fuse_siblings(model) == 2 * LAYERS
    want_toks, want = decode(model, compiled=False)  # eager fused model
    graphs = []

    def backend(gm, example_inputs):  # runs the captured FX graph as is: same ops as eager
        graphs.append(gm)
        return gm.forward
    got_toks, got = decode(model, compiled=True, backend=backend)
    assert len(graphs) == 1  # one graph (fullgraph=True: a graph break would have raised)
    widths = linear_ops(graphs[0], CONFIGS[mode][2])
    qkv, gate_up = HIDDEN + 2 * KV_HEADS * HEAD_DIM, 2 * INTER
    # per layer: q/k/v (one fused call), o, gate/up (one fused call), down; then lm_head
    assert widths == [qkv, HIDDEN, gate_up, HIDDEN] * LAYERS + [VOCAB], widths
    assert got_toks == want_toks
    for a, b in zip(got, want):
        if mode == "a8":
            assert torch.equal(a, b)
        else:
            assert (a - b).abs().max() <= 2e-2 * b.abs().max()
    for mod in model.modules():  # nothing kept after the compiled calls
        if isinstance(mod, F.FusedInt4Linear):
            assert mod._traced == {}


def test_compiled_member_with_another_input_recomputes():
    """gate(x), up(y), up(x) in one compiled graph: up(y) and the second up(x) are not served gate(x)'s
    kept columns (each gets a fused call of its own), and every output equals the unfused layers'."""
    torch._dynamo.reset()
    model = small_llama("a8")
    mlp = model.model.layers[1].mlp
    gate, up = mlp.gate_proj, mlp.up_proj
    F.fuse_siblings(model)
    graphs = []

    def backend(gm, example_inputs):
        graphs.append(gm)
        return gm.forward

    def fn(x, y):
        return mlp.gate_proj(x), mlp.up_proj(y), mlp.up_proj(x), mlp.gate_proj(x)

    g = torch.Generator().manual_seed(2)
    x, y = torch.randn(1, 3, HIDDEN, generator=g).bfloat16(), torch.randn(1, 3, HIDDEN, generator=g).bfloat16()
    with torch.inference_mode():
        outs = torch.compile(fn, fullgraph=True, backend=backend)(x, y)
        want = (gate(x), up(y), up(x), gate(x))
    assert all(torch.equal(a, b) for a, b in zip(outs, want))
    # gate(x) fused; up(y) another input: fused; up(x) again: fused; gate(x) served from the last
    assert linear_ops(graphs[0], "cpu_a8w4") == [2 * INTER] * 3
    assert getattr(mlp, "gate_proj+up_proj")._traced == {}


def test_compiled_fused_model_inductor_decodes_the_same_tokens():
    """The same through inductor (what e2e_cpu --compile 1 uses): the tokens of the eager fused model."""
    torch._dynamo.reset()
    model = small_llama("a8")
    F.fuse_siblings(model)
    want_toks, _ = decode(model, compiled=False, steps=3)
    got_toks, _ = decode(model, compiled=True, steps=3)
    assert got_toks == want_toks


@pytest.mark.parametrize("mode", ["a8", "torch_int4"])
def test_cpp_wrapper_and_guard_skip_decode_the_same(mode):
    """The benchmark's Decoder settings (inductor ``cpp_wrapper`` and the guard-skipping stance after
    the first step) on a fused model with the decode attention op: the generated C++ wrapper calls
    the Python-implemented nybble ops, one graph, no recompile, and the same tokens and logits as the
    same model compiled with the Python wrapper and normal guard evaluation."""
    torch._dynamo.reset()
    model = small_llama(mode)
    F.fuse_siblings(model)
    ids = torch.randint(0, VOCAB, (1, 6), generator=torch.Generator().manual_seed(1))
    runs = []
    for opts in (dict(skip_guard_eval=False), dict(skip_guard_eval=True, cpp_wrapper=True)):
        dec = Decoder(model, compile=True, max_len=16, **opts)
        g0 = Decoder.graphs()
        with torch.inference_mode():
            toks = [int(dec.start(ids))]
            for _ in range(6):
                toks.append(int(dec.step(torch.tensor([[toks[-1]]]))))
            out = dec.fn(input_ids=torch.tensor([[toks[-1]]]), past_key_values=dec.past, use_cache=True)
        assert Decoder.graphs() - g0 == 1  # compiled once, at the first step
        runs.append((toks, out.logits.float()))
    assert runs[1][0] == runs[0][0]
    assert torch.equal(runs[1][1], runs[0][1])
