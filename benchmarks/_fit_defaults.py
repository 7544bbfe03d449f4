"""Shared by the benchmark scripts: one `genlearn fit` run with the CLI defaults, and its metrics."""

import time

from genlearn.runs import default_train_config, train_run


def fit_with_defaults(model: str, ds, run_dir: str) -> dict:
    """Trains ``model`` on ``ds`` with ``default_train_config`` into ``run_dir``; returns what the
    CLI writes to metrics.json plus ``train_seconds`` and the training ``config``."""
    from genlearn.cli import _report

    t0 = time.time()
    params, run_cfg, res = train_run(model, ds, default_train_config(model, ds), out=run_dir, progress=False)
    m = _report(run_dir, params, run_cfg, ds, res.history)
    m["train_seconds"] = time.time() - t0
    m["config"] = run_cfg["train"]
    return m
