"""Streaming load keeps peak memory near the int4 size of the model plus one shard.

A synthetic int4 Llama checkpoint (random codes and scales, written shard by shard without ever
building a dense model) is loaded in a fresh subprocess; the subprocess resets its peak-RSS counter
(``/proc/self/clear_refs``) after imports and reports the peak RSS increase of ``nybble.load``.

Manual 1B-parameter measurement (not part of the suite; ~0.6 GB on disk)::

    python tests/test_loading_rss.py --hidden 2048 --inter 5632 --layers 22 --vocab 32000
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch

MEASURE = r"""
import gc, json, sys, torch, transformers, nybble, nybble.formats.checkpoint, nybble.kernels.registry
def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) * 1024
# warm up what a first load imports or initializes once per process (model classes, kernel ops)
transformers.LlamaForCausalLM
w = nybble.PlainInt4Weight.from_float(torch.randn(64, 256, dtype=torch.bfloat16), 128, "none")
nybble.Int4Linear(w)
del w
gc.collect()
import ctypes; ctypes.CDLL("libc.so.6").malloc_trim(0)
base = status("VmRSS:")
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")
model = nybble.load(sys.argv[1], show_progress=False)
peak = status("VmHWM:")
n = sum(1 for m in model.modules() if isinstance(m, nybble.Int4Linear))
print(json.dumps({"base": base, "peak": peak, "delta": peak - base, "after": status("VmRSS:") - base, "layers": n}))
"""


def synthetic_checkpoint(directory: Path, hidden: int, inter: int, layers: int, vocab: int,
                         shard_bytes: int, group_size: int = 128, dtype=torch.bfloat16) -> int:
    """Write an int4 (symmetric, ``group_size``) Llama checkpoint of random values; returns params."""
    import transformers

    from nybble.formats import compressed_tensors as ct
    from nybble.formats.checkpoint import FORMAT_VERSION
    from nybble.formats.modeling import parameters_on_meta
    from nybble.formats.safetensors_io import atomic_directory, write_shards
    from nybble.types import ActMode

    cfg = transformers.LlamaConfig(hidden_size=hidden, intermediate_size=inter, num_hidden_layers=layers,
                                   num_attention_heads=hidden // 64, num_key_value_heads=max(1, hidden // 256),
                                   vocab_size=vocab, tie_word_embeddings=False, max_position_embeddings=2048)
    with parameters_on_meta():
        meta = transformers.LlamaForCausalLM(cfg)
    gen = torch.Generator().manual_seed(0)
    linears = [n for n, m in meta.named_modules() if isinstance(m, torch.nn.Linear)]

    def tensors():
        for name, p in meta.named_parameters():
            prefix = name.rpartition(".")[0]
            if prefix in linears:
                n, k = p.shape
                yield f"{prefix}.weight_packed", torch.randint(-2**31, 2**31 - 1, (n, k // 8), generator=gen,
                                                               dtype=torch.int64).to(torch.int32)
                yield f"{prefix}.weight_scale", (torch.rand(n, k // group_size, generator=gen) * 0.01 + 1e-3).to(dtype)
                yield f"{prefix}.weight_shape", torch.tensor([n, k])
            else:
                yield name, (torch.randn(p.shape, generator=gen) * 0.02).to(dtype)

    scheme = ct.Scheme(group_size, True, ActMode.A16)
    qcfg = ct.quantization_config({scheme: linears}, True, [])
    qcfg["nybble"] = {"version": "synthetic", "format_version": FORMAT_VERSION, "algorithm": "random",
                      "act_mode": "a16", "aliases": {}}
    d = dict(cfg.to_dict(), architectures=["LlamaForCausalLM"], dtype=str(dtype).removeprefix("torch."),
             quantization_config=qcfg)
    with atomic_directory(directory) as tmp:
        write_shards(tensors(), tmp, shard_bytes)
        (tmp / "config.json").write_text(json.dumps(d, default=str))
    return sum(p.numel() for p in meta.parameters())


def measure_load(directory: Path) -> dict:
    env = dict(os.environ, NYBBLE_NO_PROGRESS="1")
    out = subprocess.run([sys.executable, "-c", MEASURE, str(directory)], capture_output=True, text=True,
                         env=env, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def ckpt_bytes(directory: Path) -> int:
    return sum(p.stat().st_size for p in directory.glob("*.safetensors"))


def test_sharded_load_peak_rss_is_bounded(tmp_path):
    shard = 8 * 2**20
    hidden, inter = 512, 1536
    synthetic_checkpoint(tmp_path / "ck", hidden=hidden, inter=inter, layers=16, vocab=2048, shard_bytes=shard)
    assert len(list((tmp_path / "ck").glob("model-*.safetensors"))) >= 3
    size = ckpt_bytes(tmp_path / "ck")
    r = measure_load(tmp_path / "ck")
    assert r["layers"] == 16 * 7 + 1
    # the int4 model, plus at most one shard of source tensors, plus the kernel's prepack scratch for
    # the largest layer (up to 16 bytes per weight element); a dense bf16 copy would be ~3.5x
    scratch = 16 * hidden * inter
    assert r["delta"] < size + shard + scratch, (r, size)
    assert r["delta"] < 1.5 * size, (r, size)
    assert r["after"] < 1.25 * size, (r, size)  # the loaded model: int4 data plus module objects
    print(f"checkpoint {size / 2**20:.1f} MiB, peak RSS increase {r['delta'] / 2**20:.1f} MiB")


if __name__ == "__main__":
    import argparse
    import tempfile
    import time
    ap = argparse.ArgumentParser()
    ap.add_argument("--hidden", type=int, default=2048)
    ap.add_argument("--inter", type=int, default=5632)
    ap.add_argument("--layers", type=int, default=22)
    ap.add_argument("--vocab", type=int, default=32000)
    ap.add_argument("--shard-mb", type=int, default=256)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory(dir=os.environ.get("TMPDIR", "/tmp")) as tmp:
        t0 = time.time()
        params = synthetic_checkpoint(Path(tmp) / "ck", a.hidden, a.inter, a.layers, a.vocab, a.shard_mb * 2**20)
        size = ckpt_bytes(Path(tmp) / "ck")
        print(f"params {params / 1e9:.3f}e9, checkpoint {size / 2**20:.1f} MiB, written in {time.time() - t0:.1f} s")
        t0 = time.time()
        r = measure_load(Path(tmp) / "ck")
        print(f"load {time.time() - t0:.1f} s; peak RSS increase {r['delta'] / 2**20:.1f} MiB = "
              f"{r['delta'] / size:.2f}x the checkpoint; RSS after load {r['after'] / 2**20:.1f} MiB")
