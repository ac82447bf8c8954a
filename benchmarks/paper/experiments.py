"""The experiments of the paper: data set, models (configuration files), budgets, paper values.

Every model is read from the paper configurations shipped in the package
(``mflows/configs/<file>.toml``) through
:func:`mflows.experiments.config.load_config`; an experiment only adds overrides (data set
dimensions, early stopping) and the budget (epochs, training samples) given on the command line.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["EXPERIMENTS", "Experiment", "ModelSpec", "config_dir", "get_experiment"]


@dataclass(frozen=True)
class ModelSpec:
    """One row of a table.

    Attributes:
        name: short name (file names, ``--models``).
        label: row label in the table.
        config: configuration file stem in ``mflows/configs/``.
        overrides: extra ``section.key=value`` overrides of this model.
        paper: the paper's value of each metric (median of its runs), where it reports one.
    """

    name: str
    label: str
    config: str
    overrides: tuple[str, ...] = ()
    paper: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Experiment:
    """One table: data set, models, default budget and the metrics shown.

    Attributes:
        name: experiment name (directory under ``benchmarks/results/paper/``).
        title: heading of the table.
        models: the rows.
        metrics: ``(metric key, column label)`` of the table, keys as ``mflows evaluate`` writes.
        epochs: default epochs (None: the configuration's, which is the paper's budget).
        n_train: default training samples (None: the configuration's; all for file data).
        patience: stop a stage after this many epochs without validation improvement (None: the
            full budget, as the paper's fixed-epoch tables).
        overrides: overrides applied to every model (data set options).
        mcmc_steps: posterior samples per chain (0: no posterior).
    """

    name: str
    title: str
    models: tuple[ModelSpec, ...]
    metrics: tuple[tuple[str, str], ...]
    epochs: int | None = None
    n_train: int | None = None
    patience: int | None = None
    overrides: tuple[str, ...] = ()
    mcmc_steps: int = 5000

    def model(self, name: str) -> ModelSpec:
        """The model called ``name``."""
        for spec in self.models:
            if spec.name == name:
                return spec
        raise KeyError(
            f"experiment {self.name} has no model {name!r}; choose from "
            f"{', '.join(m.name for m in self.models)}"
        )


def config_dir() -> Path:
    """The directory of the paper's configurations shipped in the package (``mflows/configs``)."""
    from mflows.experiments.config import resolve_config_path

    return Path(resolve_config_path("power_af")).parent


def _power_models() -> tuple[ModelSpec, ...]:
    # the paper's Table 2, median of 5 runs: manifold distance, reconstruction error, posterior
    # MMD, OOD AUC
    rows = [
        ("af", "AF", "power_af", (0.005, None, 0.071, 0.990)),
        ("pie", "PIE", "power_pie", (0.035, 1.278, 0.131, 0.933)),
        (
            "pie_uncond",
            "PIE (unconditional manifold)",
            "power_pie_uncond",
            (0.006, 1.253, 0.075, 0.972),
        ),
        ("pae", "PAE", "power_pae", (0.002, 0.002, None, 0.990)),
        ("mflow_alt", "M-flow alternating", "power_mf_alternating", (0.002, 0.003, 0.020, 0.986)),
        ("mflow_seq", "M-flow sequential", "power_mf_sequential", (0.009, 0.013, 0.017, 0.961)),
        (
            "emflow_alt",
            "M_e-flow alternating",
            "power_emf_alternating",
            (0.003, 0.003, 0.030, 0.985),
        ),
        ("emflow_seq", "M_e-flow sequential", "power_emf_sequential", (0.002, 0.002, 0.007, 0.987)),
    ]
    keys = ("manifold_distance", "reconstruction_error", "posterior_mmd", "ood_auc")
    return tuple(
        ModelSpec(name, label, cfg, paper={k: v for k, v in zip(keys, values) if v is not None})
        for name, label, cfg, values in rows
    )


def _sphere_models(prefix: str, fom: bool = True) -> tuple[ModelSpec, ...]:
    rows = [
        ("af", "AF", f"{prefix}_af"),
        ("fom", "FOM (logit-angle chart)", f"{prefix}_fom"),
        ("fom_stereo", "FOM (stereographic chart)", f"{prefix}_fom"),
        ("fom_probit", "FOM (probit-angle chart)", f"{prefix}_fom"),
        ("pie", "PIE", f"{prefix}_pie"),
        ("mflow_alt", "M-flow alternating", f"{prefix}_mf_alternating"),
        ("mflow_seq", "M-flow sequential", f"{prefix}_mf_sequential"),
        ("emflow_alt", "M_e-flow alternating", f"{prefix}_emf_alternating"),
        ("emflow_seq", "M_e-flow sequential", f"{prefix}_emf_sequential"),
    ]
    overrides = {
        "fom_stereo": ("model.chart=sphere-stereographic",),
        "fom_probit": ("model.chart=sphere-probit",),
    }
    return tuple(
        ModelSpec(n, lab, cfg, overrides.get(n, ()))
        for n, lab, cfg in rows
        if fom or not n.startswith("fom")
    )


def _dims(n: int, d: int) -> tuple[str, ...]:
    return (f"data.latent_dim={n}", f"data.data_dim={d}")


SPHERE_METRICS = (
    ("log_likelihood_mae", "mean abs. log-lik. error"),
    ("manifold_distance", "manifold distance"),
    ("reconstruction_error", "reco. error"),
)

EXPERIMENTS: dict[str, Experiment] = {
    "power": Experiment(
        name="power",
        title="Table 2: mixture on a polynomial surface (power)",
        models=_power_models(),
        metrics=(
            ("manifold_distance", "manifold distance"),
            ("reconstruction_error", "reco. error"),
            ("posterior_mmd", "posterior MMD"),
            ("ood_auc", "OOD AUC"),
        ),
        epochs=50,
        n_train=100_000,
    ),
    "sphere": Experiment(
        name="sphere",
        title="Spherical Gaussian, n = 8, d = 9 (epsilon = 0.01)",
        models=_sphere_models("spherical_gaussian"),
        metrics=SPHERE_METRICS,
        epochs=50,
        n_train=100_000,
        patience=5,
        overrides=_dims(8, 9),
        mcmc_steps=0,
    ),
    "sphere2": Experiment(
        name="sphere2",
        title="Spherical Gaussian, n = 2, d = 3 (epsilon = 0.01)",
        models=tuple(
            ModelSpec(
                m.name,
                m.label,
                m.config,
                (*m.overrides, *(("model.latent_dim=2",) if m.name != "af" else ())),
            )
            for m in _sphere_models("spherical_gaussian")
        ),
        metrics=SPHERE_METRICS,
        epochs=50,
        n_train=100_000,
        patience=5,
        overrides=_dims(2, 3),
        mcmc_steps=0,
    ),
    "conditional_sphere": Experiment(
        name="conditional_sphere",
        title="Conditional spherical Gaussian, n = 8, d = 9 (posterior at the true theta)",
        models=tuple(
            ModelSpec(n, lab, f"conditional_spherical_gaussian_{c}")
            for n, lab, c in [
                ("af", "AF", "af"),
                ("pie", "PIE", "pie"),
                ("pie_uncond", "PIE (unconditional manifold)", "pie_uncond"),
                ("mflow_alt", "M-flow alternating", "mf_alternating"),
                ("mflow_seq", "M-flow sequential", "mf_sequential"),
                ("emflow_alt", "M_e-flow alternating", "emf_alternating"),
                ("emflow_seq", "M_e-flow sequential", "emf_sequential"),
            ]
        ),
        metrics=(
            ("posterior_mmd", "posterior MMD"),
            ("log_posterior_true_theta", "log posterior at theta*"),
            ("manifold_distance", "manifold distance"),
            ("reconstruction_error", "reco. error"),
        ),
        epochs=50,
        n_train=100_000,
    ),
    "lorenz": Experiment(
        name="lorenz",
        title="Lorenz attractor (d = 3, n = 2)",
        models=tuple(
            ModelSpec(n, lab, f"lorenz_{c}")
            for n, lab, c in [
                ("af", "AF", "af"),
                ("pie", "PIE", "pie"),
                ("pae", "PAE", "pae"),
                ("mflow_alt", "M-flow alternating", "mf_alternating"),
                ("mflow_seq", "M-flow sequential", "mf_sequential"),
                ("emflow_alt", "M_e-flow alternating", "emf_alternating"),
                ("emflow_seq", "M_e-flow sequential", "emf_sequential"),
            ]
        ),
        metrics=(
            ("manifold_distance", "sample distance to attractor"),
            ("reconstruction_error", "reco. error"),
        ),
        epochs=100,
        n_train=100_000,
        mcmc_steps=0,
    ),
    "lhc40d": Experiment(
        name="lhc40d",
        title="Particle physics, 40 observables (lhc40d, SCANDAL)",
        models=tuple(
            ModelSpec(n, lab, f"lhc40d_{c}")
            for n, lab, c in [
                ("af", "AF", "af"),
                ("af_scandal", "AF (SCANDAL)", "af_scandal"),
                ("pie", "PIE", "pie"),
                ("pie_scandal", "PIE (SCANDAL)", "pie_scandal"),
                ("pie_uncond", "PIE (unconditional manifold)", "pie_uncond"),
                (
                    "pie_uncond_scandal",
                    "PIE (unconditional manifold, SCANDAL)",
                    "pie_uncond_scandal",
                ),
                ("mflow_alt", "M-flow alternating", "mf_alternating"),
                ("mflow_alt_scandal", "M-flow alternating (SCANDAL)", "mf_alternating_scandal"),
                ("mflow_seq", "M-flow sequential", "mf_sequential"),
                ("mflow_seq_scandal", "M-flow sequential (SCANDAL)", "mf_sequential_scandal"),
                ("emflow_alt", "M_e-flow alternating", "emf_alternating"),
                ("emflow_alt_scandal", "M_e-flow alternating (SCANDAL)", "emf_alternating_scandal"),
                ("emflow_seq", "M_e-flow sequential", "emf_sequential"),
                ("emflow_seq_scandal", "M_e-flow sequential (SCANDAL)", "emf_sequential_scandal"),
            ]
        ),
        metrics=(
            ("closure", "closure"),
            ("log_posterior_true_theta", "log posterior at theta*"),
            ("reconstruction_error", "reco. error"),
        ),
    ),
}


def get_experiment(name: str) -> Experiment:
    """The experiment called ``name``."""
    try:
        return EXPERIMENTS[name]
    except KeyError:
        raise KeyError(
            f"unknown experiment {name!r}; choose from {', '.join(EXPERIMENTS)}"
        ) from None
