"""Shared helpers of the checkpoint / import / export tests, and tests of the layout helpers."""
from __future__ import annotations

import json
from pathlib import Path

import torch
import transformers

import nybble
from nybble.formats import compressed_tensors as ct
from nybble.formats.safetensors_io import CheckpointFiles


def tiny_llama(seed: int = 0, dtype=torch.float32, tie: bool = False, hidden: int = 128,
               inter: int = 256, layers: int = 2, vocab: int = 256) -> transformers.PreTrainedModel:
    """A random Llama-style causal LM small enough for fast tests (K multiples of 128)."""
    torch.manual_seed(seed)
    cfg = transformers.LlamaConfig(hidden_size=hidden, intermediate_size=inter, num_hidden_layers=layers,
                                   num_attention_heads=4, num_key_value_heads=2, vocab_size=vocab,
                                   max_position_embeddings=128, tie_word_embeddings=tie,
                                   bos_token_id=1, eos_token_id=2, pad_token_id=0)
    model = transformers.LlamaForCausalLM(cfg).to(dtype).eval()
    with torch.no_grad():  # default init is tiny; make activations non-trivial
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0, 0.08)
    return model


def greedy(model, ids: torch.Tensor, n: int = 8) -> list[int]:
    with torch.no_grad():
        out = model.generate(ids, max_new_tokens=n, do_sample=False, pad_token_id=0)
    return out[0, ids.shape[1]:].tolist()


def dequantized_layers(model) -> dict[str, torch.Tensor]:
    """Qualified name -> dense (N, K) fp32 weight of every int4 layer (original input order)."""
    from nybble.formats.checkpoint import int4_layers
    return {n: m.dequantize().float() for n, m in int4_layers(model).items()}


def read_config(d) -> dict:
    return json.loads((Path(d) / "config.json").read_text())


# -- tests of the layout helpers --------------------------------------------------------------
def test_zero_point_packing_matches_compressed_tensors():
    from compressed_tensors.compressors.pack_quantized.helpers import pack_to_int32, unpack_from_int32
    for n in (8, 13, 64):
        z = torch.randint(0, 16, (n, 5), dtype=torch.int8)
        ours = ct.pack_zero_point(z)
        theirs = pack_to_int32((z.to(torch.int32) - 8).to(torch.int8), 4, packed_dim=0)
        assert torch.equal(ours, theirs)
        assert torch.equal(ct.unpack_zero_point(ours, n), z)
        back = unpack_from_int32(ours, 4, torch.Size((n, 5)), packed_dim=0)
        assert torch.equal(back.to(torch.int32) + 8, z.to(torch.int32))


def test_weight_packing_is_compressed_tensors_packing():
    from compressed_tensors.compressors.pack_quantized.helpers import pack_to_int32
    codes = torch.randint(0, 16, (24, 256), dtype=torch.uint8)
    plain = nybble.PlainInt4Weight.from_codes(codes, torch.rand(24, 2) + 0.1, None, 128)
    theirs = pack_to_int32((codes.to(torch.int32) - 8).to(torch.int8), 4)
    assert torch.equal(plain.qdata, theirs)


def test_sharded_write_and_index(tmp_path):
    from nybble.formats.safetensors_io import write_shards
    tensors = [(f"t{i}", torch.randn(64, 64)) for i in range(6)]
    names = write_shards(iter(tensors), tmp_path, max_shard_bytes=40_000)
    assert "model.safetensors.index.json" in names and len(names) >= 4
    files = CheckpointFiles(tmp_path)
    for name, t in tensors:
        assert torch.equal(files.get(name), t)
