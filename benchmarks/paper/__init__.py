"""Paper reproduction with seeds: a resumable results store, a runner and a table renderer.

* :mod:`benchmarks.paper.experiments`: the experiments (data set, models, budgets, paper values);
* :mod:`benchmarks.paper.store`: one JSON file per (experiment, model, seed) run under
  ``benchmarks/results/paper/``; scratch checkpoints under ``benchmarks/results/paper/.work/``;
* :mod:`benchmarks.paper.run`: ``python -m benchmarks.paper.run --experiment power ...``;
* :mod:`benchmarks.paper.render`: ``python -m benchmarks.paper.render`` rewrites the generated
  block of docs/benchmarks.md from the result files only.

The protocol of each table is written out in docs/protocol.md.
"""
