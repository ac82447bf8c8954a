"""Paper reproduction, Table 2 (mixture on a polynomial surface): a thin front-end.

Equivalent to ``python -m benchmarks.paper.run --experiment power ARGS`` followed by printing the
table of the stored runs; ``--quick`` is a smoke test at a tiny budget in a temporary store. The
protocol (the paper's configurations in ``configs/power_*.toml``, 50 epochs, 10^5 samples, the
scoring) is docs/protocol.md.

Usage::

    python benchmarks/paper_power.py --quick
    python benchmarks/paper_power.py --models all --seeds 0 1 2 --max-minutes 300
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.paper.frontend import front_end

if __name__ == "__main__":
    sys.exit(front_end("power"))
