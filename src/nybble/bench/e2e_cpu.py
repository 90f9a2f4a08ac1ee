"""End-to-end CPU benchmark: decode and prefill tokens/s and memory of a random ~1B Llama-style model.

Variants (each measured in its own fresh subprocess, so memory figures do not leak between them):

* ``bf16``: the model as built (bf16 weights, torch's bf16 linear).
* ``nybble_a16w4``: ``nybble.quantize`` with RTN int4, group 128 (``--zero-point``, default ``none``),
  on ``--kernel`` (default ``nybble_cpu``). With ``none`` (the default since the tenth session) the
  nybble models hold exactly the codes and scales of the ``torch_int4`` model: the issue's "the same
  model on PyTorch's int4 CPU kernel". ``int`` (asymmetric, a zero point per group: a more accurate
  model, ~1.5% more weight bytes) is a different model, which PyTorch's op cannot run exactly.
* ``nybble_a8w4``: the same with per-token dynamic int8 activations (symmetric).
* ``torch_int4``: RTN int4 group 128 with ``zero_point="none"`` (the only domain PyTorch's op takes
  exactly) on nybble's ``torch_int4_cpu`` kernel, i.e. ``aten._weight_int4pack_mm_for_cpu``.

Every ``nn.Linear`` is quantized, ``lm_head`` included (nybble's default); embeddings and norms stay
bf16. The model: ``LlamaConfig(hidden 2048, intermediate 5632, 16 layers, 32 heads, 8 kv heads,
vocab 32000)`` ~= 0.85e9 parameters (``--layers 22`` gives 1.12e9, TinyLlama's size), built on the
meta device and filled from a pool of 2^24 N(0, 0.02) bf16 values at random offsets (initialising
1e9 values one by one takes ~25 s here).

Attention (``--attention``, the same for every variant): ``sdpa`` (transformers' default: torch's
``scaled_dot_product_attention``, ~100 us per layer per decode step here) or ``nybble``
(:mod:`nybble.kernels.cpu_attention`: one C++ call per layer at decode, prefill still sdpa).

``--fuse 1`` runs every int4 variant (nybble's and torch int4 alike) with its q/k/v and gate/up
layers fused into one call each (:mod:`nybble.kernels.cpu_fuse`); with ``--compile 1`` too, the
compiled graph holds one linear op per fused group.

``--compile 1`` runs the decode step of EVERY variant (bf16, nybble's, torch int4 alike) through
``torch.compile`` (inductor, ``fullgraph=True`` so that a graph break is an error, ``dynamic=False``)
with transformers' ``StaticCache`` (fill level kept in a tensor, so the steps keep their shapes and
never recompile; ``compile_recompiles`` in the CSV counts graphs compiled during the timed steps);
nybble's linears are torch ops with fake implementations, so they stay inside the one graph. The
prompt runs eagerly (prefill figures are eager in both modes); ``compile_s`` is the wall time of the
first compiled step; no per-layer profile in this mode (wrappers around the layers would break the
graph).

Measured (batch 1, greedy, KV cache, ``torch.inference_mode``):

* prefill: one forward over a ``--prompt-tokens`` (512) random prompt with ``logits_to_keep=1``
  (as ``generate`` does); tokens/s = prompt tokens / time.
* decode: after a 16-token prompt, ``--decode-tokens`` (32) steps of one token each; tokens/s =
  steps / total time of the steps.
* memory: RSS after the model is built, quantized and freed garbage returned to the OS
  (``malloc_trim``), and peak RSS during the prefill + decode (VmHWM reset before them).
* DRAM regime: ``torch.sum`` read bandwidth right after the timed decode and after the layer
  profile (``probe_gbps_after_*``; this VM's DRAM alternates between ~40 and ~75-80 GB/s, which
  moves every variant's tokens/s and the ratios between variants measured minutes apart).
* layer profile (``--profile-steps``, after the timed decode, not part of its figures): more decode
  steps with a timer around every linear layer's forward (``nn.Linear`` or ``Int4Linear``), grouped
  by shape K x N: calls per step, median / min microseconds per call, milliseconds per step; and the
  rest of the step (attention, norms, rotary, sampling, Python) as ``other``. Written to
  ``e2e_layers.csv``. The timers add well under 1 us per call.

The C++ op shim (:mod:`nybble.kernels.cpu_shim`, on by default in the library) is on in every variant's
process unless ``--shim 0`` (a control with the Python op kernels): each process enables it before building its
model (built once into the cache if needed, so that no build lands in a timed compile); it covers nybble's ops,
the torch int4 wrapper op and the shared attention op alike; the ``shim`` column says whether it was installed.

nybble's kernels run their threads on torch's OpenMP runtime by default (``threads_backend`` in
the CSV; ``NYBBLE_CPU_THREADS_BACKEND=pool`` selects nybble's own pool, see
:mod:`nybble.kernels.cpu`).
"""
from __future__ import annotations

import argparse
import ctypes
import functools
import gc
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from . import common as C

VARIANTS = ("bf16", "nybble_a16w4", "nybble_a8w4", "torch_int4")

#: option name -> (type, default, help); registered with a prefix when embedded in ``bench cpu``
OPTIONS: dict[str, tuple[type, object, str]] = {
    "variants": (str, ",".join(VARIANTS), "comma separated subset of " + ", ".join(VARIANTS)),
    "kernel": (str, "nybble_cpu", "kernel for the nybble_* variants"),
    "zero-point": (str, "none", "zero-point domain of the nybble_* variants (none: the torch_int4 model's own "
                   "codes and scales, i.e. the same model; int: nybble's asymmetric recipe, which PyTorch's op "
                   "cannot run exactly)"),
    "layers": (int, 16, "decoder layers"),
    "hidden": (int, 2048, "hidden size"),
    "intermediate": (int, 5632, "MLP intermediate size"),
    "heads": (int, 32, "attention heads"),
    "kv-heads": (int, 8, "key/value heads"),
    "vocab": (int, 32000, "vocabulary size"),
    "prompt-tokens": (int, 512, "prefill prompt length"),
    "decode-tokens": (int, 32, "decode steps timed"),
    "attention": (str, "sdpa", "attention function of EVERY variant: sdpa (transformers') or nybble "
                  "(nybble.kernels.cpu_attention: C++ decode attention, prefill still sdpa)"),
    "fuse": (int, 0, "1: nybble.kernels.cpu_fuse.fuse_siblings (q/k/v and gate/up in one call) on EVERY int4 "
             "variant, nybble and torch int4 alike"),
    "compile": (int, 0, "1: the decode step of EVERY variant runs through torch.compile (inductor, fullgraph, "
                "static KV cache so that steps never recompile; prefill stays eager; no layer profile)"),
    "shim": (int, 1, "1 (default, as the library ships): the C++ op shim of nybble.kernels.cpu_shim (C++ dispatcher "
             "kernels of the decode ops, the torch int4 wrapper op and the shared attention op included: no Python "
             "frame per op call) in EVERY variant's process, built / loaded before the model so that no build lands "
             "in a timed compile (NYBBLE_CPU_SHIM=0 in the environment turns it off too); 0: cpu_shim.disable(), the "
             "Python op kernels (a control). The row's shim column says whether it was installed"),
    "profile-steps": (int, 8, "decode steps of the per-layer profile after the timed decode (0: none)"),
    "timeout": (int, 1200, "seconds allowed per variant subprocess"),
}

TABLE_COLUMNS = (
    C.Column("variant", "variant"), C.Column("kernel", "kernel"), C.Column("shim", "op shim", "{}"),
    C.Column("decode_tok_s", "decode tok/s", "{:.2f}"), C.Column("decode_x_bf16", "vs bf16", "{:.2f}x"),
    C.Column("decode_x_int4", "vs torch int4", "{:.2f}x"),
    C.Column("prefill_tok_s", "prefill tok/s", "{:.1f}"), C.Column("prefill_x_bf16", "vs bf16", "{:.2f}x"),
    C.Column("model_mib", "weights MiB", "{:,.0f}"), C.Column("rss_setup_mib", "RSS MiB", "{:,.0f}"),
    C.Column("peak_rss_mib", "peak RSS MiB", "{:,.0f}"),
    C.Column("probe_gbps_after_decode", "DRAM GB/s", "{:.1f}"), C.Column("error", "error"),
)
CSV_KEYS = ("variant", "kernel", "attention", "fused_groups", "shim", "compile", "compile_s", "compile_graphs",
            "compile_recompiles", "params", "model_mib", "rss_base_mib", "rss_setup_mib", "peak_rss_mib",
            "setup_s", "quantize_s", "prompt_tokens", "prefill_s", "prefill_tok_s", "decode_tokens", "decode_tok_s",
            "decode_ms_median", "decode_x_bf16", "decode_x_int4", "prefill_x_bf16", "prefill_x_int4",
            "threads", "threads_backend", "linear_ms_per_step", "other_ms_per_step", "probe_gbps_after_decode",
            "probe_gbps_after_profile", "error")
LAYER_KEYS = ("variant", "shape", "k", "n", "calls_per_step", "median_us", "min_us", "ms_per_step")
LAYER_COLUMNS = (
    C.Column("variant", "variant"), C.Column("shape", "K x N"), C.Column("calls_per_step", "calls/step", "{:.0f}"),
    C.Column("median_us", "median us", "{:.1f}"), C.Column("min_us", "min us", "{:.1f}"),
    C.Column("ms_per_step", "ms/step", "{:.2f}"),
)


def add_arguments(p: argparse.ArgumentParser, prefix: str = "") -> None:
    """Register the e2e options as ``--{prefix}{name}``."""
    for name, (typ, default, help_) in OPTIONS.items():
        p.add_argument(f"--{prefix}{name}", type=typ, default=default, help=f"{help_} (default: {default})")


def _opt(args, prefix: str, name: str):
    return getattr(args, prefix.replace("-", "_") + name.replace("-", "_"))


# ---------------------------------------------------------------------------------------------
# the worker (one variant, in its own process)
# ---------------------------------------------------------------------------------------------


def build_model(layers: int, hidden: int, intermediate: int, heads: int, kv_heads: int, vocab: int,
                seed: int = 0):
    """A random bf16 ``LlamaForCausalLM`` (eval mode), built on meta then materialised on CPU.

    Linear/embedding weights are windows of a pool of 2^24 N(0, 0.02) values at random offsets;
    RMSNorm weights are 1; the rotary buffers are recomputed.
    """
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding
    cfg = LlamaConfig(hidden_size=hidden, intermediate_size=intermediate, num_hidden_layers=layers,
                      num_attention_heads=heads, num_key_value_heads=kv_heads, vocab_size=vocab,
                      max_position_embeddings=4096, tie_word_embeddings=False)
    with torch.device("meta"):
        model = LlamaForCausalLM._from_config(cfg, dtype=torch.bfloat16)
    model.to_empty(device="cpu")
    gen = torch.Generator().manual_seed(seed)
    pool = (torch.randn(1 << 24, generator=gen) * 0.02).to(torch.bfloat16)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 1:
                p.fill_(1.0)
                continue
            flat = p.view(-1)
            pos = 0
            while pos < flat.numel():
                off = int(torch.randint(0, pool.numel() // 2, (1,), generator=gen))
                take = min(flat.numel() - pos, pool.numel() - off)
                flat[pos:pos + take].copy_(pool[off:off + take])
                pos += take
        fresh = LlamaRotaryEmbedding(cfg)
        for name, buf in fresh.named_buffers():
            getattr(model.model.rotary_emb, name).copy_(buf)
    return model.eval()


def variant_config(variant: str, zero_point: str, kernel: str):
    """``(config, force_kernel)`` of an int4 variant: RTN group 128; ``torch_int4`` always without
    zero point (``torch_int4_cpu``), the ``nybble_*`` variants with ``zero_point`` on ``kernel``
    (``"none"``: the very codes and scales of the ``torch_int4`` model)."""
    import nybble
    if variant == "torch_int4":
        return nybble.Int4WeightOnlyConfig(group_size=128, zero_point="none"), "torch_int4_cpu"
    if variant == "nybble_a16w4":
        return nybble.Int4WeightOnlyConfig(group_size=128, zero_point=zero_point), kernel
    if variant == "nybble_a8w4":
        return nybble.Int8DynamicActivationInt4WeightConfig(group_size=128, zero_point=zero_point,
                                                            act_mapping="symmetric"), kernel
    raise ValueError(f"e2e_cpu: no int4 config for variant {variant!r}")


class Decoder:
    """Greedy one-token decode steps of a causal LM, eager or compiled; the same for every variant.

    ``compile=False``: ``model(...)`` with transformers' default ``DynamicCache`` (what ``generate``
    does). ``compile=True``: one ``StaticCache`` of ``max_len`` tokens (reset by :meth:`start`) and
    the decode step through ``torch.compile(model.forward, fullgraph=True, dynamic=False)``
    (inductor): ``fullgraph`` makes any graph break an error, and the static cache keeps every
    step's shapes the same (its fill level is a tensor), so the steps after the first never
    recompile (:attr:`graphs` counts dynamo's compiled graphs of this process, to check). The
    prompt (``start``) always runs eagerly, as transformers does for compiled decoding.
    ``start(ids)``: ids (1, T) int64 -> the next token (1, 1); ``step(tok)``: (1, 1) -> the next token.
    ``backend``: torch.compile's backend (tests use ``eager`` to check the graph without inductor).
    ``skip_module_guards``: compile with ``torch.compiler.skip_guard_on_all_nn_modules_unsafe``
    (dynamo then does not re-check the model's ~700 parameters and buffers before every step:
    measured 1.45 ms of guard evaluation per step of the 0.85B model, more than the fusion saves;
    safe here because nothing changes a model's modules while it decodes, and each decoder has a
    compiled code object of its own).
    ``skip_guard_eval``: BENCHMARK-ONLY, UNSAFE if the model, its modules or the input shapes change
    between steps. After the first compiled step (which compiles under the normal stance), every
    step runs under ``torch.compiler.set_stance(skip_guard_eval_unsafe=True)``: dynamo then skips
    the guard check of the step's single compiled graph (its guards only decide between several
    graphs). Safe here only because the static cache keeps every step's shapes fixed, nothing
    changes the model while it decodes, and each decoder compiles a code object of its own (so it
    has exactly one graph). On by default: it is what every variant of the benchmarks uses.
    ``cpp_wrapper``: inductor's ``cpp_wrapper`` (the step's ``call()`` is generated C++ instead of
    Python; the custom ops are still called through the dispatcher, their Python implementations
    included). Measured 0.1-0.18 ms less per step of a 16-layer model (A8W4 and torch int4 alike,
    seventh session, ``benchmarks/cpu/seventh-e2e/opts_ab.py``) for 20-35 s more compile time, so
    off by default (tests) and on in the paired benchmark (``cnaf7_paired.py``) for every variant.
    ``inductor_options``: further ``torch.compile`` inductor options (e.g. ``{"freezing": True}``:
    measured no gain), the same for every variant that passes them.
    """

    def __init__(self, model, compile: bool = False, max_len: int = 256, backend: str = "inductor",
                 skip_module_guards: bool = True, skip_guard_eval: bool = True, cpp_wrapper: bool = False,
                 inductor_options: dict | None = None):
        import torch
        self.model, self.compiled, self.max_len = model, bool(compile), max_len
        self.cache = None
        self.fn = model
        if self.compiled:
            from transformers import StaticCache
            self.cache = StaticCache(config=model.config, max_cache_len=max_len)
            # A code object of this decoder's own: dynamo keys its cache by code object, so each
            # decoder (model) gets its own single entry, and skipping the nn-module guards (below)
            # can never hand one model's graph to another model of the same class.
            scope: dict = {}
            exec("def decode_step(model, **kwargs):\n    return model(**kwargs)\n", scope)  # noqa: S102
            # size_asserts off: the generated step re-checked the size and stride of every weight
            # input of every op (~330 asserts per step of the 0.85B model); the shapes are fixed
            opts = {"size_asserts": False, **(inductor_options or {})} if backend == "inductor" else {}
            if cpp_wrapper and backend == "inductor":
                opts["cpp_wrapper"] = True
            if skip_module_guards:
                opts["guard_filter_fn"] = torch.compiler.skip_guard_on_all_nn_modules_unsafe
            self.fn = functools.partial(torch.compile(scope["decode_step"], fullgraph=True, dynamic=False,
                                                      backend=backend, options=opts or None), model)
        self.past = None
        self.length = 0
        self.skip_guard_eval = bool(skip_guard_eval) and self.compiled
        self._warm = False  # the first compiled step ran (and compiled) under the normal stance

    @staticmethod
    def graphs() -> int:
        """Graphs dynamo has compiled in this process so far."""
        from torch._dynamo.utils import counters
        return int(counters["stats"]["unique_graphs"])

    def start(self, ids):
        if self.compiled:
            self.cache.reset()
            out = self.model(input_ids=ids, past_key_values=self.cache, use_cache=True, logits_to_keep=1)
        else:
            out = self.model(input_ids=ids, use_cache=True, logits_to_keep=1)
        self.past, self.length = out.past_key_values, ids.shape[1]
        return self.next_token(out.logits)

    def step(self, tok):
        if self.length >= self.max_len and self.compiled:
            raise ValueError(f"Decoder: the static cache holds {self.max_len} tokens; start() again")
        if self.skip_guard_eval and self._warm:
            import torch
            with torch.compiler.set_stance(skip_guard_eval_unsafe=True):
                out = self.fn(input_ids=tok, past_key_values=self.past, use_cache=True)
        else:
            out = self.fn(input_ids=tok, past_key_values=self.past, use_cache=True)
            self._warm = self.compiled
        self.past = out.past_key_values
        self.length += 1
        return self.next_token(out.logits)

    def timed_steps(self, ids, warmup: int, steps: int) -> float:
        """``start(ids)``, ``warmup`` untimed steps, then ``steps`` timed steps: ms per timed step
        (wall clock; the caller holds ``torch.inference_mode`` and any lock)."""
        tok = self.start(ids)
        for _ in range(warmup):
            tok = self.step(tok)
        t = time.perf_counter()
        for _ in range(steps):
            tok = self.step(tok)
        return (time.perf_counter() - t) / steps * 1e3

    @staticmethod
    def next_token(logits):
        """Greedy pick: logits (1, T, V) -> (1, 1) int64 index of the last position's maximum (the
        first one on ties). Through fp32 (exact): torch's bf16 argmax over 32000 values took ~105 us,
        the fp32 one ~23 us (2 threads, seventh session), and the same for every variant."""
        return logits[:, -1:].float().argmax(-1)


def _linear_shape(mod) -> tuple[int, int] | None:
    from torch import nn
    from nybble.tensor import Int4Linear
    if isinstance(mod, (nn.Linear, Int4Linear)):
        return mod.in_features, mod.out_features
    return None


def profile_layers(model, step, steps: int) -> tuple[list[dict], float, float]:
    """Runs ``step()`` (one decode step) ``steps`` times with a timer around every linear layer's
    forward; returns (per-shape rows, linear ms per step, other ms per step)."""
    times: dict[tuple[int, int], list[float]] = {}
    patched = []
    clock = time.perf_counter
    for mod in model.modules():
        shape = _linear_shape(mod)
        if shape is None:
            continue
        store = times.setdefault(shape, [])
        inner = mod.forward

        def timed(*args, _inner=inner, _store=store, **kwargs):
            t = clock()
            y = _inner(*args, **kwargs)
            _store.append(clock() - t)
            return y
        mod.forward = timed  # instance attribute: nn.Module.__call__ finds it first
        patched.append(mod)
    try:
        step()  # warm-up of the wrappers
        for v in times.values():
            v.clear()
        t0 = clock()
        for _ in range(steps):
            step()
        total = clock() - t0
    finally:
        for mod in patched:
            del mod.forward
    rows = []
    linear = 0.0
    for (k, n), ts in sorted(times.items(), key=lambda kv: -sum(kv[1])):
        if not ts:
            continue
        linear += sum(ts)
        rows.append({"shape": f"{k}x{n}", "k": k, "n": n, "calls_per_step": len(ts) / steps,
                     "median_us": statistics.median(ts) * 1e6, "min_us": min(ts) * 1e6,
                     "ms_per_step": sum(ts) / steps * 1e3})
    return rows, linear / steps * 1e3, (total - linear) / steps * 1e3


def dram_probe_gbps(buffers: int = 4, mib: int = 32, calls: int = 24) -> float:
    """DRAM read bandwidth now (GB/s, median): ``torch.sum`` over ``buffers`` fp32 buffers of
    ``mib`` MiB in turn (together > 4 x a 32 MiB L3), the process's thread count, as the kernel
    table's probe. This VM's DRAM switches between a ~40 and a ~75-80 GB/s regime, so each variant
    records the regime it ran in (a reading, not a denominator of any figure)."""
    import torch
    bufs = [torch.ones(mib * 2**18) for _ in range(buffers)]
    t = C.time_calls(lambda i: bufs[i % buffers].sum(), budget_s=0.0, min_reps=calls, max_reps=calls, warmup=buffers)
    return C.gbps(mib * 2**20, t.median_us)


def _trim() -> None:
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def worker(variant: str, opts: dict, threads: int) -> dict:
    """Build, quantize and time one variant in this process; returns its result row."""
    import torch
    os.environ.setdefault("NYBBLE_NO_PROGRESS", "1")
    torch.set_num_threads(threads)
    import nybble
    from nybble.api import model_nbytes
    from transformers import LlamaForCausalLM  # noqa: F401  (imported before the baseline RSS)
    row: dict = {"variant": variant, "threads": threads, "rss_base_mib": C.rss_bytes()[0] / 2**20}
    from nybble.kernels import cpu_shim
    if opts.get("shim", 1):
        if not cpu_shim.enable_from_env() and cpu_shim.mode() != "off":
            print(f"e2e_cpu: the op shim is unavailable ({cpu_shim.status()['error']}); Python op kernels used",
                  file=sys.stderr)
    else:
        cpu_shim.disable()
    t0 = time.perf_counter()
    model = build_model(opts["layers"], opts["hidden"], opts["intermediate"], opts["heads"],
                        opts["kv_heads"], opts["vocab"])
    row["params"] = sum(p.numel() for p in model.parameters())
    kernel = "torch bf16 linear"
    if variant != "bf16":
        cfg, force = variant_config(variant, opts["zero_point"], opts["kernel"])
        summary = nybble.quantize(model, cfg, force_kernel=force, show_progress=False)
        kernel = ", ".join(sorted(summary.kernels))
        row["quantize_s"] = summary.seconds
        if opts.get("fuse"):
            from nybble.kernels.cpu_fuse import fuse_siblings
            row["fused_groups"] = fuse_siblings(model)
    row["kernel"] = kernel
    row["attention"] = opts.get("attention", "sdpa")
    if row["attention"] == "nybble":
        from nybble.kernels.cpu_attention import use_decode_attention
        use_decode_attention(model)
    elif row["attention"] != "sdpa":
        raise ValueError(f"attention {row['attention']!r} is not sdpa or nybble")
    row["model_mib"] = model_nbytes(model) / 2**20  # unpacks int4 layers: transient memory, trimmed next
    _trim()
    row["setup_s"] = time.perf_counter() - t0
    row["rss_setup_mib"] = C.rss_bytes()[0] / 2**20
    C.reset_peak_rss()
    gen = torch.Generator().manual_seed(1)
    vocab = opts["vocab"]

    def prompt(n):
        return torch.randint(0, vocab, (1, n), generator=gen)
    with torch.inference_mode():
        # warm-up: a short prefill and two decode steps
        out = model(input_ids=prompt(16), use_cache=True, logits_to_keep=1)
        for _ in range(2):
            tok = out.logits[:, -1:].argmax(-1)
            out = model(input_ids=tok, past_key_values=out.past_key_values, use_cache=True)
        del out
        # prefill
        ids = prompt(opts["prompt_tokens"])
        t = time.perf_counter()
        out = model(input_ids=ids, use_cache=True, logits_to_keep=1)
        row["prefill_s"] = time.perf_counter() - t
        row["prompt_tokens"] = ids.shape[1]
        row["prefill_tok_s"] = ids.shape[1] / row["prefill_s"]
        del out
        # decode
        compiled = bool(opts.get("compile"))
        # compiled: the guard-skipping stance and inductor cpp_wrapper, as in cnaf7_paired.py (every variant)
        dec = Decoder(model, compile=compiled, max_len=16 + 3 + opts["decode_tokens"] + 8, cpp_wrapper=compiled)
        row["compile"] = int(compiled)
        if compiled:  # the first compiled step compiles; two more check that steps do not recompile
            g0 = Decoder.graphs()
            tok = dec.start(prompt(16))
            t = time.perf_counter()
            tok = dec.step(tok)
            row["compile_s"] = time.perf_counter() - t
            for _ in range(2):
                tok = dec.step(tok)
            row["compile_graphs"] = Decoder.graphs() - g0
            C.reset_peak_rss()  # the compiler's own memory is not the model's
        g1 = Decoder.graphs() if compiled else 0
        tok = dec.start(prompt(16))
        steps = []
        for _ in range(opts["decode_tokens"]):
            t = time.perf_counter()
            tok = dec.step(tok)
            steps.append(time.perf_counter() - t)
        if compiled:
            row["compile_recompiles"] = Decoder.graphs() - g1
        row["decode_tokens"] = len(steps)
        row["decode_tok_s"] = len(steps) / sum(steps)
        row["decode_ms_median"] = statistics.median(steps) * 1e3
        row["peak_rss_mib"] = C.rss_bytes()[1] / 2**20
        row["probe_gbps_after_decode"] = dram_probe_gbps()  # after the peak RSS: its buffers do not count
        if opts.get("profile_steps", 0) > 0 and not compiled:  # continues the eager decode above
            state = {"tok": tok}

            def one_step():
                state["tok"] = dec.step(state["tok"])
            layers, lin, other = profile_layers(model, one_step, opts["profile_steps"])
            row["layer_profile"] = layers
            row["linear_ms_per_step"], row["other_ms_per_step"] = lin, other
            row["probe_gbps_after_profile"] = dram_probe_gbps()
    row["shim"] = int(bool(cpu_shim.status()["installed"]))  # the C++ op kernels were on during the decode
    if variant.startswith("nybble"):
        from nybble.kernels.cpu import threads_backend
        row["threads_backend"] = threads_backend()
    return row


# ---------------------------------------------------------------------------------------------
# the driver
# ---------------------------------------------------------------------------------------------


def run_all(args, prefix: str = "", log=print) -> dict:
    """Run every requested variant in a fresh subprocess; returns ``{"rows", "opts", "threads"}``."""
    import torch
    opts = {name.replace("-", "_"): _opt(args, prefix, name) for name in OPTIONS}
    variants = C.parse_choices(opts["variants"], VARIANTS, "e2e variant")
    if opts["zero_point"] not in ("int", "none"):
        raise ValueError(f"--{prefix}zero-point must be int or none, got {opts['zero_point']!r}")
    if opts["attention"] not in ("sdpa", "nybble"):
        raise ValueError(f"--{prefix}attention must be sdpa or nybble, got {opts['attention']!r}")
    threads = getattr(args, "threads", None) or torch.get_num_threads()
    rows = []
    for v in variants:
        log(f"e2e: {v} (fresh subprocess) ...")
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "row.json"
            cmd = [sys.executable, "-m", "nybble.bench.e2e_cpu", "--worker", v, "--threads", str(threads),
                   "--json-out", str(out)]
            for name in OPTIONS:
                if name not in ("variants", "timeout"):
                    cmd += [f"--{name}", str(opts[name.replace("-", "_")])]
            env = dict(os.environ, NYBBLE_NO_PROGRESS="1")
            try:
                proc = subprocess.run(cmd, capture_output=True, text=True, timeout=opts["timeout"], env=env)
                if proc.returncode == 0 and out.exists():
                    row = json.loads(out.read_text())
                else:
                    tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
                    row = {"variant": v, "error": f"exit {proc.returncode}: " + " | ".join(tail)}
            except subprocess.TimeoutExpired:
                row = {"variant": v, "error": f"timed out after {opts['timeout']} s"}
        if row.get("error"):
            log(f"e2e: {v} FAILED: {row['error']}")
        else:
            log(f"e2e: {v}: decode {row['decode_tok_s']:.2f} tok/s, prefill {row['prefill_tok_s']:.1f} tok/s, "
                f"peak RSS {row['peak_rss_mib']:.0f} MiB ({row['kernel']})")
        rows.append(row)
    by = {r["variant"]: r for r in rows if not r.get("error")}
    for r in rows:
        if r.get("error"):
            continue
        for key, base in (("decode_x_bf16", "bf16"), ("decode_x_int4", "torch_int4")):
            r[key] = r["decode_tok_s"] / by[base]["decode_tok_s"] if base in by else None
        for key, base in (("prefill_x_bf16", "bf16"), ("prefill_x_int4", "torch_int4")):
            r[key] = r["prefill_tok_s"] / by[base]["prefill_tok_s"] if base in by else None
    return {"rows": rows, "opts": opts, "threads": threads}


def layer_rows(rows: list[dict]) -> list[dict]:
    """The per-layer profiles of all variants as flat rows (plus one ``other`` row per variant)."""
    out = []
    for r in rows:
        for lr in r.get("layer_profile") or ():
            out.append({"variant": r["variant"], **lr})
        if r.get("other_ms_per_step") is not None:
            out.append({"variant": r["variant"], "shape": "other (not linear)", "ms_per_step": r["other_ms_per_step"]})
    return out


def describe(res: dict) -> str:
    """One paragraph stating the model and method, for RESULTS.md."""
    o = res["opts"]
    params = next((r["params"] for r in res["rows"] if r.get("params")), None)
    p = f"{params / 1e9:.2f}e9 parameters" if params else "parameters unknown"
    bases = [r["rss_base_mib"] for r in res["rows"] if r.get("rss_base_mib")]
    base = statistics.median(bases) if bases else float("nan")
    return (f"Random Llama-style model: hidden {o['hidden']}, intermediate {o['intermediate']}, "
            f"{o['layers']} layers, {o['heads']} heads, {o['kv_heads']} kv heads, vocab {o['vocab']} ({p}), "
            f"bf16; int4 variants: RTN group 128 on every linear incl. lm_head (nybble zero point "
            f"`{o['zero_point']}`, kernel `{o['kernel']}`; torch_int4: zero point `none` on `torch_int4_cpu`). "
            f"Batch 1, {res['threads']} threads. Prefill: one forward over {o['prompt_tokens']} tokens "
            f"(logits of the last only). Decode: {o['decode_tokens']} greedy steps with KV cache after a "
            f"16-token prompt" + (" (decode steps of every variant through torch.compile: inductor, fullgraph, "
                                  "static KV cache; prefill eager)" if o.get("compile") else "") + ". "
            f"Each variant in a fresh subprocess; RSS after setup (build + quantize + "
            f"malloc_trim) and peak RSS during prefill+decode (VmHWM reset after setup); both include "
            f"the ~{base:.0f} MiB of the process after importing torch, transformers and nybble.")


def cli(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m nybble.bench.e2e_cpu", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(p)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--out", default=None, help="write e2e.csv here")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    p.add_argument("--json-out", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        import torch
        opts = {name.replace("-", "_"): _opt(args, "", name) for name in OPTIONS}
        row = worker(args.worker, opts, args.threads or torch.get_num_threads())
        Path(args.json_out).write_text(json.dumps(row))
        return 0
    try:
        res = run_all(args)
    except ValueError as exc:
        print(f"e2e_cpu: error: {exc}", file=sys.stderr)
        return 1
    print(C.text_table(res["rows"], TABLE_COLUMNS))
    layers = layer_rows(res["rows"])
    if layers:
        print(C.text_table(layers, LAYER_COLUMNS))
    if args.out:
        path = C.write_csv(res["rows"], Path(args.out) / "e2e.csv", CSV_KEYS)
        print(f"wrote {path}")
        if layers:
            print(f"wrote {C.write_csv(layers, Path(args.out) / 'e2e_layers.csv', LAYER_KEYS)}")
    return 0 if all(not r.get("error") for r in res["rows"]) else 1


if __name__ == "__main__":
    sys.exit(cli())
