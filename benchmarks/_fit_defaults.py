"""Shared by the benchmark scripts: one `genlearn fit` run with the CLI defaults, and its metrics."""

import time

from genlearn.runs import fit


def fit_with_defaults(model: str, ds, run_dir: str) -> dict:
    """Trains ``model`` on ``ds`` with the CLI defaults into ``run_dir``; returns what the
    CLI writes to metrics.json plus ``train_seconds`` and the options (``config``)."""
    t0 = time.time()
    _, run_cfg, m = fit(model, ds, out=run_dir, progress=False)
    m["train_seconds"] = time.time() - t0
    m["config"] = run_cfg["options"]
    return m
