"""``python -m nybble ...``: the same command line as the ``nybble`` script (``nybble.cli``)."""
import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
