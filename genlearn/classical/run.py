"""Runs of the classical estimators: ``genlearn fit histogram|kde|gmm --data NAME``.

A classical run directory has the same layout and outputs as a flow run
(``config.json`` with ``"family": "classical"``, ``model/``, ``metrics.json``,
``samples.png``, ``density.png`` for 2-D data), so ``genlearn sample`` and
``genlearn eval`` treat both alike. Estimators are fitted in data units;
pixel data are dequantised once (uniform noise) before fitting and scored
with the same dequantisation bound as the flows (bits per dimension).
"""

from __future__ import annotations

import json
import math
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from genlearn.classical.gmm import gmm
from genlearn.classical.histogram import histogram
from genlearn.classical.kde import kde
from genlearn.data import Dataset, check_data, nats_to_bits_per_dim, uniform_dequantize

__all__ = ["CLASSICAL_MODELS", "default_options", "build_estimator", "fit_run", "load_classical_run"]

CLASSICAL_MODELS = ("histogram", "kde", "gmm")

# Options each estimator accepts from the command line (None = not given).
_OPTION_NAMES = {
    "histogram": ("bins", "pseudocount", "padding"),
    "kde": ("kernel", "bandwidth", "covariance"),
    "gmm": ("num_components", "covariance", "reg_covar", "n_init", "max_iter"),
}


def default_options(name: str, dataset: Dataset) -> dict[str, Any]:
    """Defaults per estimator and data kind (chosen on held-out data).

    Histogram: 40 bins per axis over the training box padded by 10 %, a
    pseudocount of 0.01 per cell (exactly normalised). KDE: Gaussian kernel,
    bandwidth by 5-fold cross-validated likelihood. GMM: 16 full components on
    the toys; on digits 10 full components with ``reg_covar = 0.1`` (the best
    of a sweep, benchmarks/results/foundation.md).
    """
    pixels = dataset.discrete_levels is not None
    if name == "histogram":
        return {"bins": 40, "pseudocount": 0.01, "padding": 0.1}
    if name == "kde":
        return {"kernel": "gaussian", "bandwidth": "cv", "covariance": "isotropic"}
    if name == "gmm":
        return {"num_components": 10 if pixels else 16, "covariance": "full",
                "reg_covar": 0.1 if pixels else 1e-6, "n_init": 1 if pixels else 3, "max_iter": 200}
    raise ValueError(f"unknown classical model {name!r}; choose one of {CLASSICAL_MODELS}")


def _bandwidth(value):
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def build_estimator(name: str, options: dict, train: np.ndarray | None = None):
    """The estimator of a run; the histogram's box comes from ``options['range']``."""
    if name == "histogram":
        return histogram(int(options["bins"]), range=options.get("range"),
                         pseudocount=float(options["pseudocount"]))
    if name == "kde":
        return kde(options["kernel"], _bandwidth(options["bandwidth"]), covariance=options["covariance"])
    if name == "gmm":
        return gmm(int(options["num_components"]), options["covariance"], reg_covar=float(options["reg_covar"]),
                   n_init=int(options["n_init"]), max_iter=int(options["max_iter"]))
    raise ValueError(f"unknown classical model {name!r}; choose one of {CLASSICAL_MODELS}")


def _check_options(name: str, options: dict) -> dict:
    unknown = sorted(set(options) - set(_OPTION_NAMES[name]))
    if unknown:
        raise ValueError(f"{name} does not take the option(s) {unknown}; it takes {list(_OPTION_NAMES[name])}")
    if name == "histogram":
        if not int(options["bins"]) >= 1:
            raise ValueError(f"histogram: bins must be >= 1, got {options['bins']}")
        if not float(options["padding"]) >= 0:
            raise ValueError(f"histogram: padding must be >= 0, got {options['padding']}")
    return options


def _nll(log_prob, params, x, levels, key, num_draws=8, batch=2048) -> dict:
    """Mean NLL in nats of ``x`` as given (dequantisation bound for pixels)."""

    def lp_all(xs):
        return np.concatenate([np.asarray(log_prob(params, xs[i:i + batch])) for i in range(0, len(xs), batch)])

    if levels is None:
        lp = lp_all(jnp.asarray(x))
        zero = int(np.sum(~np.isfinite(lp)))
        return {"nll": float(-lp.mean()) if zero == 0 else None, "zero_density": zero}
    draws, zero = [], 0
    for k in jax.random.split(key, num_draws):
        lp = lp_all(uniform_dequantize(k, jnp.asarray(x)))
        zero = max(zero, int(np.sum(~np.isfinite(lp))))
        draws.append(-lp.mean())
    if zero:
        return {"nll": None, "zero_density": zero}
    value = float(np.mean(draws))
    return {"nll": value, "nll_stderr": float(np.std(draws) / math.sqrt(num_draws)),
            "bits_per_dim": float(nats_to_bits_per_dim(value, x.shape[1])), "zero_density": 0}


def fit_run(name: str, dataset: Dataset, out: str | None = None, *, seed: int = 0, data_seed: int = 0,
            options: dict | None = None) -> tuple[Any, dict, dict]:
    """Fits a classical estimator to ``dataset.train``; writes the run to ``out``.

    Returns ``(params, config, metrics)``. Metrics: ``train_nll``/``test_nll``
    in nats per example of the data as given (``None`` when some point has zero
    density, e.g. a histogram test point outside the box, with the count in
    ``test_zero_density``), ``test_nll_standardized`` for the toys (comparable
    with the flows' figure) and ``test_bits_per_dim`` for pixels.
    """
    if name not in CLASSICAL_MODELS:
        raise ValueError(f"unknown classical model {name!r}; choose one of {CLASSICAL_MODELS}")
    opts = default_options(name, dataset)
    opts.update({k: v for k, v in (options or {}).items() if v is not None})
    opts = _check_options(name, opts)
    train = check_data(dataset.train, "training data")
    levels = dataset.discrete_levels
    key_fit, key_deq, key_eval, key_sample = jax.random.split(jax.random.PRNGKey(seed), 4)
    fit_data = np.asarray(uniform_dequantize(key_deq, jnp.asarray(train))) if levels is not None else train
    build = dict(opts)
    if name == "histogram":
        low, high = fit_data.min(0), fit_data.max(0)
        pad = float(opts["padding"]) * np.maximum(high - low, 1e-12)
        build["range"] = [[float(a), float(b)] for a, b in zip(low - pad, high + pad)]
    estimator = build_estimator(name, build)
    params = estimator.fit(key_fit, jnp.asarray(fit_data))
    cfg = {"family": "classical", "model": name, "data": dataset.name, "data_seed": int(data_seed),
           "seed": int(seed), "dim": int(train.shape[1]), "discrete_levels": levels, "options": build}
    tr = _nll(estimator.log_prob, params, train[:5000], levels, key_eval)
    te = _nll(estimator.log_prob, params, dataset.test, levels, key_eval)
    metrics = {"model": name, "data": dataset.name, "train_nll": tr["nll"], "test_nll": te["nll"],
               "num_test": int(dataset.test.shape[0]), "test_zero_density": te["zero_density"]}
    if levels is not None and te["nll"] is not None:
        metrics["test_bits_per_dim"] = te["bits_per_dim"]
        metrics["test_nll_stderr"] = te["nll_stderr"]
    if levels is None and te["nll"] is not None:
        from genlearn.data.scaling import standardize_stats

        _, std = standardize_stats(train)
        metrics["test_nll_standardized"] = te["nll"] - float(np.sum(np.log(np.asarray(std))))
    if name == "kde":
        metrics["bandwidth_factor"] = float(np.asarray(params["chol"])[0, 0])
    if out:
        from genlearn import plotting
        from genlearn.train import save_pytree

        os.makedirs(out, exist_ok=True)
        save_pytree(os.path.join(out, "model"), params, metadata=cfg, overwrite=True)
        with open(os.path.join(out, "config.json"), "w") as fh:
            json.dump(cfg, fh, indent=2)
        with open(os.path.join(out, "metrics.json"), "w") as fh:
            json.dump(metrics, fh, indent=2)
        samples = np.asarray(estimator.sample(params, key_sample, 2000))
        title = f"{name} on {dataset.name}"
        if cfg["dim"] == 2:
            plotting.plot_samples_2d(samples, dataset.test, os.path.join(out, "samples.png"), title=f"{title}: samples")
            lp = jax.jit(estimator.log_prob)
            plotting.plot_density_2d(lambda g: lp(params, jnp.asarray(g)), dataset.test,
                                     os.path.join(out, "density.png"), title=f"{title}: density")
        elif levels is not None:
            plotting.plot_digit_grid(samples, os.path.join(out, "samples.png"), levels=levels,
                                     title=f"{title}: samples")
    return params, cfg, metrics


def load_classical_run(run_dir: str, cfg: dict):
    """``(estimator, params)`` of a saved classical run (``cfg`` from its config.json)."""
    from genlearn.train import load_pytree

    estimator = build_estimator(cfg["model"], cfg["options"])
    params, _ = load_pytree(os.path.join(run_dir, "model"))
    params = {k: jnp.asarray(v) for k, v in params.items()}
    return estimator, params
