"""Data-parallel training under torchrun: 2 CPU processes (gloo) on a tiny problem.

What is true (see mflows.training.distributed): both ranks end with bit-identical weights, even
when they build their models from different seeds (rank 0's weights are broadcast), and with a
per-rank batch b they follow the single-process run with batch 2 b on the same data up to
floating-point summation order (checked in float64 to 1e-7).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap

import torch

SCRIPT = textwrap.dedent(
    """
    import os
    import sys

    import torch

    import mflows.data
    from mflows.models import make_model
    from mflows.training import distributed as D
    from mflows.training import fit


    def run(out, batch_size, seed):
        data = mflows.data.get("power").load("train", n=128, seed=3)
        model = make_model(
            "mflow", 3, 2, outer_layers=2, inner_layers=2, hidden_features=16, num_blocks=1,
            num_bins=4, tail_bound=6.0, seed=seed,
        ).double()
        history = fit(
            model, data.x, algorithm="alternating", epochs=2, batch_size=batch_size, lr=3e-3,
            early_stopping=False, progress=True, checkpoint_dir=os.path.join(out, "ckpt"),
        )
        return model, history


    if __name__ == "__main__":
        out = sys.argv[1]
        rank = int(os.environ.get("RANK", "0"))
        model, history = run(out, 8, seed=rank)
        assert D.world_size() == 2 and D.rank() == rank
        torch.save(
            {"state": model.state_dict(), "val_loss": history.val_loss},
            os.path.join(out, f"rank{rank}.pt"),
        )
    """
)


def test_two_process_run_agrees(tmp_path):
    script = tmp_path / "ddp_fit.py"
    script.write_text(SCRIPT)
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(tmp_path))
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node",
            "2",
            str(script),
            str(tmp_path),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in (0, 1)]
    for k, v in ranks[0]["state"].items():
        assert torch.equal(v, ranks[1]["state"][k]), k
    assert ranks[0]["val_loss"] == ranks[1]["val_loss"]
    # Only rank 0 draws a progress bar and writes the checkpoint.
    bars = re.findall(r"0/2 \[[^\]]*\?epoch/s\]", result.stderr)  # initial display, no postfix
    assert len(bars) == 1, result.stderr[-2000:]
    assert (tmp_path / "ckpt" / "checkpoint.pt").exists()

    # The same run in one process with twice the batch (rank 0's initial weights).
    sys.path.insert(0, str(tmp_path))
    try:
        import ddp_fit
    finally:
        sys.path.remove(str(tmp_path))
    single, history = ddp_fit.run(str(tmp_path / "single"), 16, seed=0)
    for k, v in single.state_dict().items():
        torch.testing.assert_close(ranks[0]["state"][k], v, rtol=1e-7, atol=1e-7)
    torch.testing.assert_close(
        torch.tensor(ranks[0]["val_loss"]), torch.tensor(history.val_loss), rtol=1e-9, atol=0
    )
