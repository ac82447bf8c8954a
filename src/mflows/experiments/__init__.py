"""The application: configured runs in run directories (what ``mflows`` commands do).

Layers (docs/design.md): the library (everything else in :mod:`mflows`) never imports this
package; :mod:`mflows.cli` is its only importer inside mflows.

- :mod:`mflows.experiments.config`: typed run configuration (TOML / JSON / overrides);
- :mod:`mflows.experiments.build`: data set, model and ``fit`` options of a configuration;
- :mod:`mflows.experiments.rundir`: run directory layout, lock, atomic writers;
- :mod:`mflows.experiments.runs`: train / extend / evaluate / sample a run (your own data
  files included: :func:`mflows.experiments.build.arrays_dataset`);
- :mod:`mflows.experiments.progress`: epoch and in-epoch step progress bars;
- :mod:`mflows.experiments.demo`: the end-to-end demo.
"""

from mflows.experiments.build import (
    build_model,
    dataset_names,
    describe_dataset,
    fit_options,
    get_dataset,
    model_architecture,
)
from mflows.experiments.config import (
    ConfigError,
    DataConfig,
    EvaluationConfig,
    ModelConfig,
    RunConfig,
    TrainingConfig,
    apply_overrides,
    load_config,
    save_config,
)
from mflows.experiments.demo import DemoResult, demo_config, run_demo
from mflows.experiments.rundir import (
    CONFIG_FILE,
    HISTORY_FILE,
    METRICS_FILE,
    MODEL_FILE,
    REPORT_FILE,
    lock_run,
    save_array,
)
from mflows.experiments.runs import (
    LoadedRun,
    evaluate_run,
    extend_run,
    format_metrics,
    load_run,
    sample_run,
    train_run,
)

__all__ = [
    "CONFIG_FILE",
    "HISTORY_FILE",
    "METRICS_FILE",
    "MODEL_FILE",
    "REPORT_FILE",
    "ConfigError",
    "DataConfig",
    "DemoResult",
    "EvaluationConfig",
    "LoadedRun",
    "ModelConfig",
    "RunConfig",
    "TrainingConfig",
    "apply_overrides",
    "build_model",
    "dataset_names",
    "demo_config",
    "describe_dataset",
    "evaluate_run",
    "extend_run",
    "fit_options",
    "format_metrics",
    "get_dataset",
    "load_config",
    "load_run",
    "lock_run",
    "model_architecture",
    "run_demo",
    "sample_run",
    "save_array",
    "save_config",
    "train_run",
]
