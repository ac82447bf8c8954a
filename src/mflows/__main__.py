"""``python -m mflows``: the command-line interface (see :mod:`mflows.cli`)."""

import sys

from mflows.cli import main

if __name__ == "__main__":
    sys.exit(main())
