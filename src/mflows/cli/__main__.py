"""``python -m mflows.cli``: the ``mflows`` command."""

import sys

from mflows.cli import main

sys.exit(main())
