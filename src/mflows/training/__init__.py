"""Training: schedules as data (phases), one generic trainer, checkpoints, data parallelism.

The entry point is :func:`fit`; :func:`schedule_for` builds the schedule of each algorithm and
:class:`Trainer` runs any :class:`Schedule`.
"""

from mflows.training.checkpoint import load_checkpoint, load_model_from_checkpoint, save_checkpoint
from mflows.training.ensemble import fit_ensemble
from mflows.training.fitting import fit
from mflows.training.history import History
from mflows.training.phases import ALGORITHMS, LOSS_NAMES, Phase, Schedule, Stage, schedule_for
from mflows.training.state import EarlyStopping, TrainState
from mflows.training.trainer import Trainer, TrainingDivergedError, compute_losses

__all__ = [
    "ALGORITHMS",
    "LOSS_NAMES",
    "EarlyStopping",
    "History",
    "Phase",
    "Schedule",
    "Stage",
    "TrainState",
    "Trainer",
    "TrainingDivergedError",
    "compute_losses",
    "fit",
    "fit_ensemble",
    "load_checkpoint",
    "load_model_from_checkpoint",
    "save_checkpoint",
    "schedule_for",
]
