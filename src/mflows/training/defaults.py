"""The training defaults: one place, read by :func:`~mflows.training.fit`, the
:class:`~mflows.training.trainer.Trainer` and :func:`~mflows.training.phases.schedule_for`.

The signature of :func:`mflows.training.fit` is the public statement of these values (the
application's training configuration reads it with :func:`inspect.signature`); this module is
where that signature, the trainer and the schedule builder take them from, so they cannot drift
apart.
"""

from __future__ import annotations

__all__ = [
    "ALTERNATE",
    "BATCH_SIZE",
    "CLIP",
    "EARLY_STOPPING",
    "EPOCHS",
    "LR",
    "OPTIMIZER",
    "OPTIMIZERS",
    "RECONSTRUCTION_WEIGHT",
    "SCANDAL_WEIGHT",
    "SEED",
    "VALIDATION_SPLIT",
    "WEIGHT_DECAY",
]

#: Total number of epochs (for the sequential schemes: split in halves, manifold first).
EPOCHS = 50
#: Mini-batch size (per process under ``torchrun``).
BATCH_SIZE = 100
#: Initial learning rate, cosine-annealed to 0 over each phase.
LR = 1e-3
#: Weight decay (decoupled, for AdamW).
WEIGHT_DECAY = 1e-4
#: Optimiser name.
OPTIMIZER = "adamw"
#: The optimisers understood by the trainer.
OPTIMIZERS = ("adam", "adamw")
#: Maximum gradient norm (``None`` switches clipping off).
CLIP: float | None = 1.0
#: Fraction of the data held out for validation and early stopping.
VALIDATION_SPLIT = 0.25
#: Restore the best weights (by validation loss) at the end of each stage.
EARLY_STOPPING = True
#: Weight of the reconstruction error in simultaneous M-flow likelihood training.
RECONSTRUCTION_WEIGHT = 1000.0
#: Weight of the SCANDAL score loss.
SCANDAL_WEIGHT = 1.0
#: Alternate the phases of the alternating schemes every ``"batch"`` or every ``"epoch"``.
ALTERNATE = "batch"
#: Seed of the validation split, data order and training randomness.
SEED = 0
