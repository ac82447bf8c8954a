"""Paper reproduction, spherical Gaussian: a thin front-end.

Equivalent to ``python -m benchmarks.paper.run --experiment sphere ARGS`` (n = 8, d = 9; pass
``--experiment-name sphere2`` for n = 2, d = 3) followed by printing the table of the stored runs;
``--quick`` is a smoke test at a tiny budget in a temporary store. The protocol is
docs/protocol.md.

Usage::

    python benchmarks/paper_sphere.py --quick --models fom
    python benchmarks/paper_sphere.py --experiment-name sphere2 --models fom mflow_alt --seeds 0 1 2
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.paper.frontend import front_end

if __name__ == "__main__":
    args = sys.argv[1:]
    name = "sphere"
    if "--experiment-name" in args:
        i = args.index("--experiment-name")
        name = args[i + 1]
        del args[i : i + 2]
    sys.exit(front_end(name, args))
