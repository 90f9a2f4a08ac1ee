"""The calibration engine shared by GPTQ and AWQ: turn calibration data into model input batches, run
the model block by block, and let a recipe see (and quantize) one block at a time.

Calibration data (the ``calibration=`` argument of :func:`nybble.quantize`), one of:

* :class:`TextCalibration` ``(texts, tokenizer, nsamples=128, seqlen=512, batch_size=8, mode="auto")``
  -- or the equivalent dict ``{"texts": [...], "tokenizer": tok, "nsamples": .., "seqlen": ..}``;
  :func:`load_calibration_file` builds one from a text file (one sample per line, blank lines
  ignored). ``mode="lines"``: each text is one sample (truncated to ``seqlen`` tokens, padded within
  a batch, padding masked out of every statistic); ``mode="concat"``: the texts are joined and cut
  into ``nsamples`` windows of ``seqlen`` tokens at seeded random offsets (the usual protocol for
  causal LMs); ``"auto"`` picks ``concat`` for causal LMs and ``lines`` otherwise.
* a tensor of token ids, int64 ``(B, T)``: split into batches of ``batch_size`` rows, no padding.
* an iterable of model input dicts (e.g. ``{"input_ids": (B, T), "attention_mask": (B, T)}``), each
  one batch, passed to ``model(**batch)`` as is (moved to the model's device).

Engine (:func:`run_blockwise`): the model's repeated blocks are found as the ``nn.ModuleList`` of
same-class modules holding the most selected linears (``model.layers`` of Llama/Mistral/Qwen2
decoders, ``encoder.layer`` of BERT encoders, ``transformer.h``, ...). The inputs of block 0 (hidden
states plus every keyword argument: attention mask, position embeddings/ids) are captured by a
forward pre-hook that stops the forward pass; then for each block the recipe runs it over the stored
inputs as often as it needs, installs its int4 layers, and the engine replaces the stored inputs by
the *quantized* block's outputs. Memory beyond the model: one block's inputs for all calibration
samples (``nsamples x seqlen x hidden``), the recipe's statistics for that block, and one batch of
intermediate activations. A recipe with ``float_stream = True`` (asymmetric calibration) also gets
the *float* model's block inputs (:attr:`BlockContext.float_hidden`, same shapes; twice the stored
inputs), advanced by the float copy of the block it puts in ``ctx.float_module``, and
:meth:`BlockContext.run_pair` to see each linear's inputs in both models for the same tokens.
Linears outside the blocks (e.g. ``lm_head``, BERT's pooler) and models
without repeated blocks are handled by a per-layer pass over the whole (partly quantized) model.
"""
from __future__ import annotations

import contextlib
import inspect
import random
import resource
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import torch
from torch import nn

from .. import primitives as P
from ..progress import progress
from ..types import ActMode

DATA_DIR = Path(__file__).resolve().parent.parent / "data"
#: the calibration file shipped with nybble (prose of the Python language reference)
DEFAULT_CALIBRATION_FILE = DATA_DIR / "calib_python_reference.txt"
#: evaluation sentences shipped with nybble (Vim user manual: a different text from calibration)
DEFAULT_EVAL_SENTENCES_FILE = DATA_DIR / "eval_vim_manual.txt"

CALIBRATION_MODES = ("auto", "lines", "concat")


# ---------------------------------------------------------------------------------------------------
# calibration data -> batches
# ---------------------------------------------------------------------------------------------------
@dataclass
class TextCalibration:
    """Calibration texts with the model's tokenizer (see the module docstring for ``mode``)."""

    texts: list[str]
    tokenizer: object
    nsamples: int = 128
    seqlen: int = 512
    batch_size: int = 8
    mode: str = "auto"
    seed: int = 0

    def __post_init__(self):
        if isinstance(self.texts, str):
            raise TypeError("TextCalibration.texts must be a list of strings, not one string")
        self.texts = [t for t in self.texts if isinstance(t, str) and t.strip()]
        if not self.texts:
            raise ValueError("calibration texts are empty")
        if self.tokenizer is None or not callable(self.tokenizer):
            raise TypeError("TextCalibration needs the model's tokenizer (a callable transformers tokenizer)")
        if self.mode not in CALIBRATION_MODES:
            raise ValueError(f"calibration mode {self.mode!r} is not allowed; use one of {CALIBRATION_MODES}")
        for k in ("nsamples", "seqlen", "batch_size"):
            if int(getattr(self, k)) < 1:
                raise ValueError(f"calibration {k} must be >= 1, got {getattr(self, k)}")

    def resolved_mode(self, model: nn.Module) -> str:
        if self.mode != "auto":
            return self.mode
        return "concat" if is_causal_lm(model) else "lines"

    def batches(self, model: nn.Module) -> list[dict]:
        """Model input dicts: ``input_ids`` int64 ``(b, t)`` and ``attention_mask`` ``(b, t)``."""
        if self.resolved_mode(model) == "concat":
            return self._concat_batches()
        return self._line_batches()

    def _line_batches(self) -> list[dict]:
        tok = self.tokenizer
        texts = self.texts[:self.nsamples]
        lengths = [len(tok(t, truncation=True, max_length=self.seqlen)["input_ids"]) for t in texts]
        order = sorted(range(len(texts)), key=lambda i: lengths[i])  # similar lengths: little padding
        bs = self.batch_size if getattr(tok, "pad_token_id", None) is not None else 1
        out = []
        for i in range(0, len(order), bs):
            chunk = [texts[j] for j in order[i:i + bs]]
            enc = tok(chunk, padding=True, truncation=True, max_length=self.seqlen, return_tensors="pt")
            out.append({k: v for k, v in enc.items() if k in ("input_ids", "attention_mask", "token_type_ids")})
        return out

    def _concat_batches(self) -> list[dict]:
        ids = self.tokenizer("\n\n".join(self.texts), return_tensors="pt")["input_ids"][0]
        n = ids.numel()
        seqlen = min(self.seqlen, n)
        rng = random.Random(self.seed)
        starts = [rng.randint(0, n - seqlen) for _ in range(self.nsamples)]
        windows = torch.stack([ids[s:s + seqlen] for s in starts])
        return tensor_batches(windows, self.batch_size)


def load_calibration_file(path: str | Path, tokenizer, nsamples: int = 128, seqlen: int = 512,
                          batch_size: int = 8, mode: str = "auto") -> TextCalibration:
    """A :class:`TextCalibration` from a UTF-8 text file, one sample per non-empty line.

    Raises FileNotFoundError if ``path`` does not exist, ValueError if it holds no text.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"calibration file {path} does not exist")
    lines = [ln.strip() for ln in path.read_text(encoding="utf-8", errors="replace").splitlines()]
    lines = [ln for ln in lines if ln]
    if not lines:
        raise ValueError(f"calibration file {path} holds no text")
    return TextCalibration(lines, tokenizer, nsamples=nsamples, seqlen=seqlen, batch_size=batch_size, mode=mode)


def tensor_batches(ids: torch.Tensor, batch_size: int) -> list[dict]:
    """``(B, T)`` int64 token ids -> input dicts of ``batch_size`` rows (no padding, full mask)."""
    if ids.dim() != 2 or ids.dtype not in (torch.int64, torch.int32):
        raise ValueError(f"calibration token ids must be an integer (B, T) tensor, got {ids.dtype} "
                         f"{tuple(ids.shape)}")
    ids = ids.long()
    return [{"input_ids": ids[i:i + batch_size], "attention_mask": torch.ones_like(ids[i:i + batch_size])}
            for i in range(0, ids.shape[0], batch_size)]


def prepare_batches(calibration, model: nn.Module, options: dict) -> list[dict]:
    """Any accepted calibration form -> a list of model input dicts on the model's device.

    ``options`` may hold ``nsamples``/``seqlen``/``batch_size`` (used for the dict-of-texts and
    tensor forms; a :class:`TextCalibration` keeps its own)."""
    bs = int(options.get("batch_size", 8))
    if isinstance(calibration, dict) and "texts" in calibration:
        extra = set(calibration) - {"texts", "tokenizer", "nsamples", "seqlen", "batch_size", "mode", "seed"}
        if extra:
            raise ValueError(f"calibration dict: unknown keys {sorted(extra)}; allowed: texts, tokenizer, "
                             "nsamples, seqlen, batch_size, mode, seed")
        kw = {k: options[k] for k in ("nsamples", "seqlen", "batch_size") if k in options}
        kw.update({k: v for k, v in calibration.items() if k not in ("texts", "tokenizer")})
        calibration = TextCalibration(calibration["texts"], calibration.get("tokenizer"), **kw)
    if isinstance(calibration, TextCalibration):
        batches = calibration.batches(model)
    elif isinstance(calibration, torch.Tensor):
        batches = tensor_batches(calibration, bs)
    elif isinstance(calibration, (str, bytes)) or (isinstance(calibration, (list, tuple)) and calibration
                                                  and isinstance(calibration[0], str)):
        raise TypeError("calibration texts need the model's tokenizer: pass "
                        "TextCalibration(texts, tokenizer) or {'texts': [...], 'tokenizer': tok}")
    elif isinstance(calibration, Iterable):
        batches = list(calibration)
        for i, b in enumerate(batches):
            if not isinstance(b, dict):
                raise TypeError(f"calibration batch {i} is a {type(b).__name__}; an iterable of model input "
                                "dicts is expected")
    else:
        raise TypeError(f"unsupported calibration data {type(calibration).__name__}; use TextCalibration, "
                        "a (B, T) tensor of token ids, or an iterable of model input dicts")
    if not batches:
        raise ValueError("calibration data is empty")
    device = model_device(model)
    return [{k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in b.items()} for b in batches]


def is_causal_lm(model: nn.Module) -> bool:
    """True for transformers causal LMs (``*ForCausalLM`` classes or configs marked as decoders)."""
    cfg = getattr(model, "config", None)
    archs = getattr(cfg, "architectures", None) or []
    return ("CausalLM" in type(model).__name__ or any("CausalLM" in a for a in archs)
            or bool(getattr(cfg, "is_decoder", False)))


def model_device(model: nn.Module) -> torch.device:
    for t in model.parameters():
        return t.device
    for t in model.buffers():
        return t.device
    return torch.device("cpu")


def fake_quantize_activations(x: torch.Tensor, act_mode: ActMode) -> torch.Tensor:
    """``x`` ``(M, K)`` -> fp32 ``(M, K)`` as the A8W4 kernels see it (per-token int8 quantize then
    dequantize with :func:`nybble.primitives.quantize_activations`); identity (fp32) for A16."""
    x = x.float()
    if not ActMode(act_mode).is_a8 or x.numel() == 0:
        return x
    q, s, z = P.quantize_activations(x, ActMode(act_mode) is ActMode.A8_ASYM)
    return (q - z[:, None]).float() * s[:, None]


# ---------------------------------------------------------------------------------------------------
# contexts: what a recipe sees
# ---------------------------------------------------------------------------------------------------
InputFn = Callable[[str, torch.Tensor], None]


class _Context:
    """Common part of :class:`BlockContext` and :class:`ModelContext`.

    Attributes: ``model``; ``names`` (qualified names of the linears to quantize here); ``act_mode``;
    ``num_batches``; ``batch_index`` (during :meth:`run`); ``module`` (the block, or the model).
    """

    prefix = ""

    def __init__(self, model: nn.Module, module: nn.Module, names: list[str], act_mode: ActMode):
        self.model, self.module, self.names, self.act_mode = model, module, list(names), ActMode(act_mode)
        self.batch_index = -1
        self._mask: torch.Tensor | None = None

    def linear(self, name: str) -> nn.Module:
        """The module currently at qualified ``name`` (an nn.Linear until installed)."""
        return self.model.get_submodule(name)

    def _rows(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` ``(..., K)`` -> ``(M, K)`` rows of real tokens (padding removed when the batch's
        attention mask matches the leading dims)."""
        k = x.shape[-1]
        m = self._mask
        if m is not None and tuple(x.shape[:-1]) == tuple(m.shape):
            return x.reshape(-1, k)[m.reshape(-1)]
        return x.reshape(-1, k)

    @contextlib.contextmanager
    def hook_inputs(self, names: Iterable[str], fn: InputFn, dedupe: bool = False):
        """While active, every forward of linear ``name`` calls ``fn(name, x)`` with its input rows
        ``x`` ``(M, K)`` (model dtype, real tokens only, before any activation quantization).

        ``dedupe=True``: linears fed the very same input tensor in a forward (q/k/v, gate/up) call
        ``fn`` once, under the first one's name; ``self.input_owner[name]`` then names that first
        linear for the others."""
        handles = []
        seen: list = []  # (input tensor, name) of the current batch
        last = [None]
        self.input_owner = {}
        for name in names:
            def pre(mod, args, _name=name):
                raw = args[0]
                if dedupe:
                    if last[0] != self.batch_index:
                        seen.clear()
                        last[0] = self.batch_index
                    for t, n in seen:
                        if t is raw:
                            self.input_owner.setdefault(_name, n)
                            return
                    seen.append((raw, _name))
                fn(_name, self._rows(raw.detach()))
            handles.append(self.linear(name).register_forward_pre_hook(pre))
        try:
            yield
        finally:
            seen.clear()
            for h in handles:
                h.remove()

    def run(self, before_batch: Callable[[int], None] | None = None, stop_after: Iterable[str] = ()) -> None:
        raise NotImplementedError

    @contextlib.contextmanager
    def _stopper(self, names: Iterable[str]):
        """Forward hooks raising :class:`_Stop` once every linear of ``names`` ran in this forward;
        yields a function resetting the count (call it before each forward)."""
        names = list(names)
        fired: set[str] = set()
        handles = []
        for name in names:
            def post(mod, args, out, _name=name):
                fired.add(_name)
                if len(fired) == len(names):
                    raise _Stop
            handles.append(self.linear(name).register_forward_hook(post))
        try:
            yield fired.clear
        finally:
            for h in handles:
                h.remove()


class BlockContext(_Context):
    """One repeated block (e.g. one decoder layer) and its stored inputs."""

    def __init__(self, model, block, prefix, names, act_mode, states, float_hidden=None):
        super().__init__(model, block, names, act_mode)
        self.prefix = prefix
        self._states = states
        self.num_batches = len(states)
        #: hidden-state inputs of this block in the *float* model (one per batch, same shapes as the
        #: quantized stream's), or None when the engine keeps no float stream
        self.float_hidden = float_hidden
        #: set by a recipe that uses the float stream: a float copy of this block (computing the float
        #: model's function) that the engine uses to advance the float stream; None = the block itself
        self.float_module: nn.Module | None = None

    @property
    def has_float_stream(self) -> bool:
        return self.float_hidden is not None

    def run_pair(self, float_block: nn.Module, names: list[str], fn: Callable[[str, torch.Tensor, torch.Tensor], None],
                 dedupe: bool = True) -> None:
        """For each batch, run ``float_block`` (a float copy of this block) on the float stream's inputs
        and this block on the quantized stream's inputs, and call ``fn(name, x_q, x_f)`` with linear
        ``name``'s input rows in both (each ``(M, K)``, model dtype, real tokens only, the same tokens
        in the same order). With ``dedupe``, linears sharing an input (q/k/v) call ``fn`` once under the
        first name (see :meth:`hook_inputs`)."""
        if self.float_hidden is None:
            raise ValueError("run_pair needs the engine's float stream (recipe.float_stream = True)")
        pre = self.prefix + "."
        rel = {n: n[len(pre):] for n in names}
        fx: dict[str, torch.Tensor] = {}
        handles = []
        for n in names:
            def fpre(mod, args, _n=n):
                fx[_n] = self._rows(args[0].detach())
            handles.append(float_block.get_submodule(rel[n]).register_forward_pre_hook(fpre))
        stop_f = []
        fired: set[str] = set()
        for n in names:
            def fpost(mod, args, out, _n=n):
                fired.add(_n)
                if len(fired) == len(names):
                    raise _Stop
            stop_f.append(float_block.get_submodule(rel[n]).register_forward_hook(fpost))
        try:
            with self.hook_inputs(names, lambda n, x: fn(n, x, fx[n]), dedupe=dedupe), \
                    self._stopper(names) as reset:
                for i, st in enumerate(self._states):
                    self.batch_index, self._mask = i, st.mask
                    fx.clear()
                    fired.clear()
                    try:
                        st.call_with(float_block, self.float_hidden[i])
                    except _Stop:
                        pass
                    reset()
                    try:
                        st.call(self.module)
                    except _Stop:
                        pass
        finally:
            for h in handles + stop_f:
                h.remove()
            fx.clear()
            self.batch_index, self._mask = -1, None

    @property
    def masks(self) -> list[torch.Tensor | None]:
        """Per batch, the ``(B, T)`` bool token mask (False on padding), or None."""
        return [st.mask for st in self._states]

    def forward_batch(self, i: int) -> torch.Tensor:
        """This block (as it is now) on batch ``i``'s stored inputs: hidden states ``(B, T, H)``."""
        return _first(self._states[i].call(self.module))

    def float_outputs(self, float_block: nn.Module) -> list[torch.Tensor]:
        """``float_block`` (a float copy of this block) on the float stream's inputs, per batch:
        the float model's block outputs ``(B, T, H)``."""
        if self.float_hidden is None:
            raise ValueError("float_outputs needs the engine's float stream (recipe.float_stream = True)")
        return [_first(st.call_with(float_block, self.float_hidden[i])).detach()
                for i, st in enumerate(self._states)]

    def run(self, before_batch=None, stop_after: Iterable[str] = ()) -> None:
        """Run the block over every stored input (outputs discarded; hooks observe). With
        ``stop_after``, each forward ends as soon as all those linears have run."""
        with self._stopper(stop_after) as reset:
            for i, st in enumerate(self._states):
                self.batch_index, self._mask = i, st.mask
                if before_batch is not None:
                    before_batch(i)
                reset()
                try:
                    st.call(self.module)
                except _Stop:
                    pass
        self.batch_index, self._mask = -1, None

    def advance(self) -> None:
        """Replace the stored inputs by this block's outputs (with its layers as they are now), and
        the float stream's inputs by the float block's outputs (:attr:`float_module`, or this block
        when no recipe replaced it: nothing in it was quantized)."""
        if self.float_hidden is not None:
            fb = self.float_module if self.float_module is not None else self.module
            for i, st in enumerate(self._states):
                self.float_hidden[i] = _first(st.call_with(fb, self.float_hidden[i]))
        for st in self._states:
            st.set_hidden(_first(st.call(self.module)))
        self.float_module = None


class ModelContext(_Context):
    """The whole model (for linears outside the repeated blocks, or models without blocks)."""

    def __init__(self, model, names, act_mode, batches, forward_kwargs):
        super().__init__(model, model, names, act_mode)
        self._batches, self._kw = batches, forward_kwargs
        self.num_batches = len(batches)

    def run(self, before_batch=None, stop_after: Iterable[str] = ()) -> None:
        with self._stopper(stop_after) as reset:
            for i, b in enumerate(self._batches):
                m = b.get("attention_mask")
                self.batch_index, self._mask = i, (m.bool() if isinstance(m, torch.Tensor) else None)
                if before_batch is not None:
                    before_batch(i)
                reset()
                try:
                    self.model(**b, **self._kw)
                except _Stop:
                    pass
        self.batch_index, self._mask = -1, None


# ---------------------------------------------------------------------------------------------------
# the engine
# ---------------------------------------------------------------------------------------------------
class _Stop(Exception):
    """Raised by the capture hook to end the forward pass at the first block."""


@dataclass
class _BlockInput:
    """One batch's inputs of a block: positional ``args`` and keyword ``kwargs`` (the hidden states are
    ``args[0]`` or ``kwargs['hidden_states']``) and the token mask ``(B, T)`` bool or None."""

    args: tuple
    kwargs: dict
    mask: torch.Tensor | None

    def call(self, block: nn.Module):
        return block(*self.args, **self.kwargs)

    def call_with(self, block: nn.Module, hidden: torch.Tensor):
        """``block`` on these inputs with the hidden states replaced by ``hidden``."""
        if self.args:
            return block(hidden, *self.args[1:], **self.kwargs)
        return block(*self.args, **{**self.kwargs, "hidden_states": hidden})

    def hidden(self) -> torch.Tensor:
        return self.args[0] if self.args else self.kwargs["hidden_states"]

    def set_hidden(self, h: torch.Tensor) -> None:
        if self.args:
            self.args = (h,) + tuple(self.args[1:])
        else:
            self.kwargs["hidden_states"] = h

    def nbytes(self) -> int:
        h = self.hidden()
        return h.numel() * h.element_size()


def _first(out):
    if isinstance(out, (tuple, list)):
        return out[0]
    if hasattr(out, "last_hidden_state"):
        return out.last_hidden_state
    return out


def find_blocks(model: nn.Module, names: Iterable[str]) -> tuple[str, nn.ModuleList] | None:
    """The ``(qualified name, ModuleList)`` of same-class blocks holding the most selected linears
    (at least 2 linears, in at least 2 blocks), or None."""
    names = list(names)
    best, best_count = None, 1
    for qn, mod in model.named_modules():
        if not isinstance(mod, nn.ModuleList) or len(mod) < 2:
            continue
        if len({type(c) for c in mod}) != 1:
            continue
        pre = qn + "." if qn else ""
        count = sum(1 for n in names if n.startswith(pre) and n[len(pre):].split(".")[0].isdigit())
        per_block = {n[len(pre):].split(".")[0] for n in names if n.startswith(pre)}
        if count > best_count and len(per_block) >= 2:
            best, best_count = (qn, mod), count
    return best


def forward_kwargs(model: nn.Module) -> dict:
    """Extra keyword arguments for calibration forwards (``use_cache=False`` where accepted)."""
    try:
        params = inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return {}
    return {"use_cache": False} if "use_cache" in params else {}


def capture_block_inputs(model: nn.Module, block: nn.Module, batches: list[dict], kw: dict) -> list[_BlockInput]:
    """Run the model up to ``block`` for each batch and keep the block's inputs."""
    states: list[_BlockInput] = []
    current: dict = {}

    def pre(mod, args, kwargs):
        current["args"], current["kwargs"] = tuple(args), dict(kwargs)
        raise _Stop

    handle = block.register_forward_pre_hook(pre, with_kwargs=True)
    try:
        for b in batches:
            current.clear()
            try:
                model(**b, **kw)
            except _Stop:
                pass
            if "args" not in current:
                raise ValueError(f"calibration: the model's forward never reached its first block "
                                 f"({type(block).__name__}); cannot calibrate block by block")
            m = b.get("attention_mask")
            states.append(_BlockInput(current["args"], current["kwargs"],
                                      m.bool() if isinstance(m, torch.Tensor) else None))
    finally:
        handle.remove()
    return states


def peak_rss_mib() -> float:
    """Peak resident memory of this process so far, MiB (``ru_maxrss``)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@torch.no_grad()
def run_blockwise(model: nn.Module, names: list[str], batches: list[dict], process: Callable[[_Context], None],
                  act_mode: ActMode, summary, desc: str = "calibrate", show_progress: bool = True) -> None:
    """Run ``process(ctx)`` on each block of ``model`` that holds some of ``names`` (in order), then
    once on a :class:`ModelContext` for the names outside the blocks. ``process`` must install every
    name of ``ctx.names``. Records time, tokens and memory in ``summary.details``."""
    t0 = time.perf_counter()
    was_training = model.training
    model.eval()
    kw = forward_kwargs(model)
    done: set[str] = set()
    held = 0
    try:
        found = find_blocks(model, names)
        if found is not None:
            prefix, blocks = found
            states = capture_block_inputs(model, blocks[0], batches, kw)
            # the float model's block inputs, for recipes that compare against the float model
            fhidden = [s.hidden().clone() for s in states] if getattr(process, "float_stream", False) else None
            held = sum(s.nbytes() for s in states) * (2 if fhidden is not None else 1)
            for i, block in enumerate(progress(blocks, desc=desc, total=len(blocks), unit="block",
                                               disable=not show_progress)):
                bp = f"{prefix}.{i}" if prefix else str(i)
                bnames = [n for n in names if n.startswith(bp + ".")]
                ctx = BlockContext(model, block, bp, bnames, act_mode, states, fhidden)
                if bnames:
                    process(ctx)
                    done.update(bnames)
                if i + 1 < len(blocks):
                    ctx.advance()
                ctx.float_module = None
            del states, fhidden
            summary.details["calibration_blocks"] = f"{len(blocks)} x {type(blocks[0]).__name__} ({prefix})"
        rest = [n for n in names if n not in done]
        if rest:
            process(ModelContext(model, rest, act_mode, batches, kw))
    finally:
        model.train(was_training)
    tokens = sum(int(b["attention_mask"].sum()) if isinstance(b.get("attention_mask"), torch.Tensor)
                 else (b["input_ids"].numel() if isinstance(b.get("input_ids"), torch.Tensor) else 0)
                 for b in batches)
    summary.details["calibration_seconds"] = round(time.perf_counter() - t0, 2)
    summary.details["calibration_tokens"] = tokens
    summary.details["block_inputs_mib"] = round(held / 2**20, 1)
    summary.details["peak_rss_mib"] = round(peak_rss_mib(), 1)


def default_calibration(tokenizer, nsamples: int = 128, seqlen: int = 128, batch_size: int = 8) -> TextCalibration:
    """The calibration set shipped with nybble (:data:`DEFAULT_CALIBRATION_FILE`, Python language
    reference prose, one sentence per line) for ``tokenizer``."""
    return load_calibration_file(DEFAULT_CALIBRATION_FILE, tokenizer, nsamples=nsamples, seqlen=seqlen,
                                 batch_size=batch_size)
