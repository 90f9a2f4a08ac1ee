"""Rebuild the calibration and evaluation sentence files shipped in ``src/nybble/data/``.

Two different sources, so evaluation never sees calibration text:

* calibration: prose of the Python language reference (``pydoc_data.topics``, shipped with CPython);
* evaluation: prose of the Vim user manual (``/usr/share/vim/vim*/doc/usr_*.txt``).

Each output file holds one sentence per line (6..40 words, mostly letters, deduplicated), sampled with
a fixed seed. Run: ``python benchmarks/quality/build_data.py``.

Dev text (for choosing options; ``--dev`` rebuilds only it): prose of the GNU info manuals
(``/usr/share/info``), a third source, written to ``benchmarks/quality/dev_gnu_info.txt``.
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


def gnu_info_sentences() -> list[str]:
    """Prose of the GNU info manuals (coreutils, find, diffutils, ...): the dev text, a third source."""
    import gzip
    files = sorted(glob.glob("/usr/share/info/*.info*.gz"))
    if not files:
        raise FileNotFoundError("no GNU info manuals (/usr/share/info/*.info*.gz) are installed")
    return _clean_sentences("\n\n".join(gzip.open(f, "rt", errors="replace").read() for f in files))


def build_dev() -> None:
    """``benchmarks/quality/dev_gnu_info.txt``: 300 sentences of the GNU info manuals, for choosing
    recipe options (never used for calibration nor for the reported evaluation)."""
    rng = random.Random(1)
    taken = set((DATA / "calib_python_reference.txt").read_text().splitlines())
    taken |= set((DATA / "eval_vim_manual.txt").read_text().splitlines())
    dev = [s for s in gnu_info_sentences() if s not in taken]
    rng.shuffle(dev)
    out = Path(__file__).resolve().parent / "dev_gnu_info.txt"
    out.write_text("\n".join(dev[:300]) + "\n")
    print(f"dev: {min(300, len(dev))} of {len(dev)} sentences -> {out}")


def main() -> None:
    import sys
    if "--dev" in sys.argv[1:]:
        build_dev()
        return
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
