"""Progress of a training run seen from outside the trainer: epochs and steps within an epoch.

``fit`` reports epochs through its ``callback``; the steps inside an epoch are counted with
torch's global optimizer step hook (every optimiser ``step`` of the run: one per batch and
phase), so an epoch of 10^5 points shows its rate and ETA while it runs. Two bars: the epochs
of the run (with the last train / validation loss) and the steps of the current epoch.
"""

from __future__ import annotations

import math
from types import TracebackType
from typing import Any

__all__ = ["TrainingProgress", "steps_per_epoch"]

#: schemes whose epochs step two optimisers per batch when ``alternate == "batch"``.
_TWO_PHASE = ("alternating", "ot-alternating")


def steps_per_epoch(n: int, batch_size: int, validation_split: float, algorithm: str,
                    alternate: str) -> int:  # fmt: skip
    """Optimiser steps per epoch of a run (an estimate for the first epoch's bar)."""
    n_fit = max(1, n - round(validation_split * n))
    batches = math.ceil(n_fit / max(1, batch_size))
    phases = 2 if algorithm in _TWO_PHASE and alternate == "batch" else 1
    return batches * phases


class TrainingProgress:
    """Context manager: the two bars, fed by ``callback`` and the global optimiser hook.

    Args:
        total_epochs: epochs of the run.
        done_epochs: epochs already done (a resumed run).
        steps: optimiser steps per epoch (estimate; the count of the last epoch replaces it).
        enabled: show the bars; when False the object does nothing.
    """

    def __init__(self, total_epochs: int, done_epochs: int, steps: int, enabled: bool = True):
        self.total_epochs = int(total_epochs)
        self.done = int(done_epochs)
        self.steps = max(1, int(steps))
        self.enabled = enabled
        self._count = 0
        self._handle: Any = None
        self._epochs: Any = None
        self._batches: Any = None

    def __enter__(self) -> TrainingProgress:
        if not self.enabled:
            return self
        from torch.optim.optimizer import register_optimizer_step_post_hook
        from tqdm.auto import tqdm

        self._epochs = tqdm(
            total=self.total_epochs, initial=self.done, desc="epochs", unit="epoch", position=0
        )
        self._batches = tqdm(
            total=self.steps, desc=self._label(), unit="step", position=1, leave=False
        )
        self._handle = register_optimizer_step_post_hook(self._step)
        return self

    def _label(self) -> str:
        return f"epoch {min(self.done + 1, self.total_epochs)}/{self.total_epochs}"

    def _step(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        self._count += 1
        if self._batches is not None:
            if self._count > self._batches.total:
                self._batches.total = self._count
            self._batches.update(1)

    def callback(self, epoch: int, record: dict[str, Any]) -> None:
        """``fit``'s per-epoch callback: advance the epoch bar, restart the step bar."""
        if not self.enabled or self._epochs is None:
            return
        self.done += 1
        self._epochs.update(1)
        postfix = {}
        for key, name in (("train_loss", "train"), ("val_loss", "val")):
            value = record.get(key)
            if isinstance(value, float) and math.isfinite(value):
                postfix[name] = f"{value:.4g}"
        self._epochs.set_postfix(postfix, refresh=True)
        if self._count:
            self.steps = self._count
        self._count = 0
        if self.done < self.total_epochs:
            self._batches.reset(total=self.steps)
            self._batches.set_description(self._label())

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        if self._handle is not None:
            self._handle.remove()
            self._handle = None
        for bar in (self._batches, self._epochs):
            if bar is not None:
                bar.close()
        self._batches = self._epochs = None
