"""Training schemes as data: phases, stages, schedules, and :func:`schedule_for`.

A :class:`Phase` says which parameters train (``"manifold"``, ``"density"`` or ``"all"``) on which
weighted losses. A :class:`Stage` runs one or more phases for a number of epochs: with one phase
it is plain training; with several it alternates between them every batch or every epoch. A
:class:`Schedule` is the sequence of stages. The one :class:`~mflows.training.trainer.Trainer`
runs any schedule; :func:`schedule_for` builds the schedule of each training algorithm (see
"Training schemes" in docs/theory.md):

=================  ==============================================================
``likelihood``     one stage, all parameters, ``nll`` (+ ``mse`` for M-flows)
``sequential``     manifold stage (``mse``), then density stage (``latent_nll``)
``alternating``    one stage alternating the manifold and density phases (early stopping on
                   the validation MSE: latent NLLs of different manifolds are not comparable)
``pae``            as ``sequential``, for the probabilistic autoencoder
``ot``             one stage, all parameters, ``sinkhorn``
``ot-alternating`` one stage alternating ``sinkhorn`` (manifold) and ``latent_nll`` (h),
                   early stopping on the validation Sinkhorn divergence
=================  ==============================================================

SCANDAL adds ``score`` with its weight to every phase that carries a likelihood.

Loss names (computed by :func:`mflows.training.trainer.compute_losses`):

* ``nll``: ``-log_prob(x | theta)``, the exact model density (AF, PIE, simultaneous M-flow).
* ``mse``: ``sum |x - project(x)|^2 / B``.
* ``nested_mse``: nested dropout, ``mse`` decoding only the first k latent coordinates, k drawn
  per sample in training (``P(k) ~ model.nested_decay^(k-1)``, default uniform, from the
  trainer's seeded RNG), cycling through ``1..latent_dim`` in validation (used by
  :func:`mflows.estimate_dimension`).
* ``latent_nll``: ``-latent_log_prob(u | theta)`` with ``u = encode(x)`` computed without gradient.
* ``sinkhorn``: Sinkhorn divergence between ``sample(B, theta)`` and the batch.
* ``score``: SCANDAL, MSE between ``d log p / d theta`` (of ``nll`` or ``latent_nll``, whichever
  the phase has) and the joint scores.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from mflows import registry
from mflows.errors import InvalidArgumentError
from mflows.training import defaults

__all__ = [
    "ALGORITHMS",
    "ALTERNATIONS",
    "LOSS_NAMES",
    "Phase",
    "Schedule",
    "Stage",
    "check_algorithm",
    "schedule_for",
]

#: Algorithms understood by :func:`schedule_for`, with the model kinds each one fits (the
#: registry's table).
ALGORITHMS: dict[str, tuple[str, ...]] = registry.COMPATIBLE

LOSS_NAMES = ("nll", "mse", "latent_nll", "sinkhorn", "score", "nested_mse")
#: How the phases of a stage alternate: every batch or every epoch.
ALTERNATIONS = ("batch", "epoch")
PARAMETER_GROUPS = ("manifold", "density", "all")


@dataclass(frozen=True)
class Phase:
    """One optimisation phase: which parameters train on which weighted losses.

    Attributes:
        name: label used in logs and the history (e.g. ``"manifold"``).
        parameters: ``"manifold"`` (``model.manifold_parameters()``), ``"density"``
            (``model.density_parameters()``) or ``"all"`` (both).
        losses: loss name -> weight, names from :data:`LOSS_NAMES`.
        lr: learning rate of this phase (``None``: the trainer's).
    """

    name: str
    parameters: str
    losses: Mapping[str, float]
    lr: float | None = None

    def __post_init__(self) -> None:
        if self.parameters not in PARAMETER_GROUPS:
            raise InvalidArgumentError(
                f"Phase {self.name!r}: parameters must be one of {PARAMETER_GROUPS}, "
                f"got {self.parameters!r}"
            )
        unknown = sorted(set(self.losses) - set(LOSS_NAMES))
        if unknown or not self.losses:
            raise InvalidArgumentError(
                f"Phase {self.name!r}: losses must be a non-empty mapping with names in "
                f"{LOSS_NAMES}, got {dict(self.losses)}"
            )
        if "score" in self.losses and not {"nll", "latent_nll"} & set(self.losses):
            raise InvalidArgumentError(
                f"Phase {self.name!r}: the score loss needs nll or latent_nll"
            )
        object.__setattr__(self, "losses", {k: float(v) for k, v in self.losses.items()})


@dataclass(frozen=True)
class Stage:
    """Phases run together for a number of epochs.

    Attributes:
        phases: one phase, or several to alternate between.
        epochs: number of epochs of the stage.
        alternate: ``"batch"`` (every batch takes one step of each phase in turn) or ``"epoch"``
            (epoch ``k`` of the stage trains phase ``k mod len(phases)``).
        monitor: loss names whose weighted validation sum early stopping minimises (``None``:
            every loss of the stage, i.e. ``val_loss``).
    """

    phases: tuple[Phase, ...]
    epochs: int
    alternate: str = "batch"
    monitor: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "phases", tuple(self.phases))
        if not self.phases:
            raise InvalidArgumentError("a Stage needs at least one phase")
        if int(self.epochs) < 1:
            raise InvalidArgumentError(f"a Stage needs epochs >= 1, got {self.epochs}")
        if self.alternate not in ALTERNATIONS:
            raise InvalidArgumentError(
                f"alternate must be 'batch' or 'epoch', got {self.alternate!r}"
            )
        if self.monitor is not None:
            object.__setattr__(self, "monitor", tuple(self.monitor))
            losses = set(self.weights)
            if not self.monitor or not set(self.monitor) <= losses:
                raise InvalidArgumentError(
                    f"monitor must name losses of the stage ({', '.join(sorted(losses))}), "
                    f"got {self.monitor!r}"
                )

    @property
    def weights(self) -> dict[str, float]:
        """Loss name -> summed weight over the phases (the terms of ``val_loss``)."""
        weights: dict[str, float] = {}
        for phase in self.phases:
            for k, w in phase.losses.items():
                weights[k] = weights.get(k, 0.0) + w
        return weights

    @property
    def name(self) -> str:
        """``"+"``-joined phase names."""
        return "+".join(p.name for p in self.phases)

    def phases_in_epoch(self, epoch: int) -> tuple[Phase, ...]:
        """Phases that step on every batch of epoch ``epoch`` (0-based, within the stage)."""
        if len(self.phases) == 1 or self.alternate == "batch":
            return self.phases
        return (self.phases[epoch % len(self.phases)],)


@dataclass(frozen=True)
class Schedule:
    """A training scheme: the stages run one after the other.

    Attributes:
        stages: the stages.
        algorithm: the algorithm name it was built for (informational).
        options: what built it (recorded in checkpoints to refuse resuming a different scheme).
    """

    stages: tuple[Stage, ...]
    algorithm: str = "custom"
    options: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "stages", tuple(self.stages))
        if not self.stages:
            raise InvalidArgumentError("a Schedule needs at least one stage")

    @property
    def epochs(self) -> int:
        """Total number of epochs."""
        return sum(s.epochs for s in self.stages)

    def describe(self) -> dict[str, Any]:
        """A plain-data description (stored in checkpoints, compared on resume)."""
        return {
            "algorithm": self.algorithm,
            "stages": [
                {
                    "epochs": s.epochs,
                    "alternate": s.alternate,
                    "monitor": None if s.monitor is None else list(s.monitor),
                    "phases": [
                        {
                            "name": p.name,
                            "parameters": p.parameters,
                            "losses": dict(p.losses),
                            "lr": p.lr,
                        }
                        for p in s.phases
                    ],
                }
                for s in self.stages
            ],
        }


def check_algorithm(
    algorithm: str, kind: str, *, scandal: bool = False, theta_enters_manifold: bool = False
) -> None:
    """Raises ``InvalidArgumentError`` if ``algorithm`` is unknown or does not fit ``kind``.

    ``theta_enters_manifold``: whether theta moves the model's manifold (a conditional outer
    flow or encoder, ``conditional_outer=True``).
    SCANDAL in a density phase then needs the score of the full density, which that phase does
    not compute (docs/notes-scandal.md), so the combination is refused.
    """
    registry.check_algorithm(algorithm, kind)
    if scandal and algorithm == "ot":
        raise InvalidArgumentError(
            "scandal=True needs a likelihood term; algorithm 'ot' has none "
            "(use 'ot-alternating' or 'likelihood')"
        )
    if scandal and theta_enters_manifold and algorithm != "likelihood":
        raise InvalidArgumentError(
            f"scandal=True with algorithm {algorithm!r} needs a manifold that does not depend on "
            "theta: its density phase trains d/dtheta log p_u(u | theta) at fixed u = "
            "g^-1(x), which equals the score d/dtheta log p(x | theta) only when theta does not "
            "enter the manifold; this model has conditional_outer=True (build it with "
            "conditional_outer=False, or train it with algorithm 'likelihood')"
        )


def schedule_for(
    algorithm: str,
    model: Any,
    *,
    epochs: int | tuple[int, int] = defaults.EPOCHS,
    reconstruction_weight: float = defaults.RECONSTRUCTION_WEIGHT,
    scandal: bool = False,
    scandal_weight: float = defaults.SCANDAL_WEIGHT,
    alternate: str = defaults.ALTERNATE,
    lr: float | None = None,
) -> Schedule:
    """The schedule of ``algorithm`` for ``model`` (see the module docstring).

    The defaults are those of :func:`mflows.training.fit` (:mod:`mflows.training.defaults`).

    Args:
        algorithm: one of :data:`ALGORITHMS`.
        model: the model (only ``model.kind`` is used).
        epochs: total epochs; for ``sequential``/``pae`` either the total (split in halves,
            manifold first) or ``(manifold_epochs, density_epochs)``.
        reconstruction_weight: weight of ``mse`` in simultaneous M-flow likelihood training.
        scandal: add the SCANDAL ``score`` loss to every likelihood phase.
        scandal_weight: its weight.
        alternate: ``"batch"`` or ``"epoch"`` for the alternating schemes.
        lr: learning rate for every phase (``None``: the trainer's).

    Returns:
        The schedule.

    Raises:
        ValueError: unknown algorithm, or an algorithm that does not fit the model kind;
            (:class:`~mflows.errors.InvalidArgumentError`) epochs that do not fit the scheme.
    """
    kind = getattr(model, "kind", None)
    moves = getattr(model, "theta_enters_manifold", getattr(model, "conditional_outer", False))
    check_algorithm(algorithm, kind, scandal=scandal, theta_enters_manifold=bool(moves))
    score = {"score": float(scandal_weight)} if scandal else {}
    sequential = algorithm in ("sequential", "pae")
    if isinstance(epochs, (tuple, list)):
        if not sequential or len(epochs) != 2:
            raise InvalidArgumentError(
                "epochs as a pair (manifold_epochs, density_epochs) is only meaningful for "
                f"'sequential' and 'pae', got {epochs!r} for {algorithm!r}"
            )
        split = (int(epochs[0]), int(epochs[1]))
        total = sum(split)
    else:
        total = int(epochs)
        split = ((total + 1) // 2, total // 2)
    if total < 1 or (sequential and min(split) < 1):
        raise InvalidArgumentError(f"expected enough epochs for {algorithm!r}, got {epochs!r}")

    manifold = Phase("manifold", "manifold", {"mse": 1.0}, lr)
    density = Phase("density", "density", {"latent_nll": 1.0, **score}, lr)
    if algorithm == "likelihood":
        losses = {"nll": 1.0, **score}
        caps = registry.capabilities(kind)
        if caps.density_on_manifold and not caps.prescribed_manifold:  # a learned manifold
            losses["mse"] = float(reconstruction_weight)
        stages = (Stage((Phase("likelihood", "all", losses, lr),), total),)
    elif sequential:
        stages = (Stage((manifold,), split[0]), Stage((density,), split[1]))
    elif algorithm == "alternating":
        # The latent NLL is measured in coordinates that move with the manifold (the density
        # lives on a chart that changes as the manifold trains), so it is not comparable between
        # epochs: early stopping follows the reconstruction error.
        stages = (Stage((manifold, density), total, alternate, monitor=("mse",)),)
    elif algorithm == "ot":
        stages = (Stage((Phase("ot", "all", {"sinkhorn": 1.0}, lr),), total),)
    else:  # ot-alternating
        ot_manifold = Phase("manifold", "manifold", {"sinkhorn": 1.0}, lr)
        stages = (Stage((ot_manifold, density), total, alternate, monitor=("sinkhorn",)),)
    options = {
        "reconstruction_weight": float(reconstruction_weight),
        "scandal": bool(scandal),
        "scandal_weight": float(scandal_weight),
        "alternate": alternate,
    }
    return Schedule(stages, algorithm, options)
