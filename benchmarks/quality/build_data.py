"""Rebuild the calibration and evaluation sentence files shipped in ``src/nybble/data/``.

Two different sources, so evaluation never sees calibration text:

* calibration: prose of the Python language reference (``pydoc_data.topics``, shipped with CPython);
* evaluation: prose of the Vim user manual (``/usr/share/vim/vim*/doc/usr_*.txt``).

Each output file holds one sentence per line (6..40 words, mostly letters, deduplicated), sampled with
a fixed seed. Run: ``python benchmarks/quality/build_data.py``.
"""
from __future__ import annotations

import glob
import random
import re
from pathlib import Path

DATA = Path(__file__).resolve().parents[2] / "src" / "nybble" / "data"
_SPLIT = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")


def _clean_sentences(text: str) -> list[str]:
    out = []
    for para in re.split(r"\n\s*\n", text):
        lines = [ln for ln in para.splitlines() if not ln.startswith(("\t", "    ", "|", "+", "*", "=", ">"))]
        para = " ".join(ln.strip() for ln in lines)
        para = re.sub(r"\s+", " ", para).strip()
        for s in _SPLIT.split(para):
            s = s.strip()
            words = s.split()
            if not (6 <= len(words) <= 40) or not s[0].isupper() or s[-1] not in ".!?":
                continue
            letters = sum(c.isalpha() or c == " " for c in s)
            if letters / len(s) < 0.9 or re.search(r"[{}\[\]<>|*=~`]", s):
                continue
            out.append(s)
    return list(dict.fromkeys(out))


def python_reference_sentences() -> list[str]:
    import pydoc_data.topics as topics
    return _clean_sentences("\n\n".join(topics.topics.values()))


def vim_manual_sentences() -> list[str]:
    files = sorted(glob.glob("/usr/share/vim/vim*/doc/usr_*.txt"))
    if not files:
        raise FileNotFoundError("the Vim user manual (/usr/share/vim/vim*/doc/usr_*.txt) is not installed")
    return _clean_sentences("\n\n".join(Path(f).read_text(errors="replace") for f in files))


def main() -> None:
    rng = random.Random(0)
    calib = python_reference_sentences()
    evals = vim_manual_sentences()
    overlap = set(calib) & set(evals)
    evals = [s for s in evals if s not in overlap]
    rng.shuffle(calib)
    rng.shuffle(evals)
    DATA.mkdir(parents=True, exist_ok=True)
    (DATA / "calib_python_reference.txt").write_text("\n".join(calib[:512]) + "\n")
    (DATA / "eval_vim_manual.txt").write_text("\n".join(evals[:400]) + "\n")
    print(f"calibration: {min(512, len(calib))} of {len(calib)} sentences; "
          f"evaluation: {min(400, len(evals))} of {len(evals)} sentences")


if __name__ == "__main__":
    main()
