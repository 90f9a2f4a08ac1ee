"""Progress bars that appear only when the work takes over a second (tqdm's ``delay``)."""
from __future__ import annotations

import os
import sys

from tqdm.auto import tqdm


def progress(iterable=None, desc: str | None = None, total: int | None = None, unit: str = "it",
             disable: bool = False, **kw):
    """A tqdm bar on stderr shown after 1 s; disabled when ``NYBBLE_NO_PROGRESS=1``."""
    disable = disable or os.environ.get("NYBBLE_NO_PROGRESS") == "1"
    return tqdm(iterable, desc=desc, total=total, unit=unit, delay=1.0, disable=disable,
                file=sys.stderr, dynamic_ncols=True, leave=False, **kw)
