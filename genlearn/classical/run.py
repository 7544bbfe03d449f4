"""The classical families of the run registry: ``genlearn fit histogram|kde|gmm --data NAME``.

Estimators are fitted in data units by their own ``fit`` (the Model's
``init(key, data)``); pixel data are dequantised once (uniform noise) before
fitting and scored like every family (`genlearn.runs`).
"""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp
import numpy as np

from genlearn import registry
from genlearn.classical.gmm import gmm
from genlearn.classical.histogram import CV_BINS, MAX_CELLS, histogram
from genlearn.classical.kde import kde
from genlearn.core.model import from_estimator
from genlearn.data import Dataset

__all__ = ["CLASSICAL_MODELS", "default_options", "build_estimator"]

CLASSICAL_MODELS = ("histogram", "kde", "gmm")


def default_options(name: str, dataset: Dataset) -> dict[str, Any]:
    """Defaults per estimator and data kind (chosen on held-out data).

    Histogram: bins per axis by leave-one-out likelihood (``"cv"``, from
    `genlearn.classical.histogram.CV_BINS`) over the training box padded by
    10 %, a pseudocount of 0.01 per cell (exactly normalised). KDE: Gaussian kernel,
    bandwidth by 5-fold cross-validated likelihood. GMM: 32 full components on
    continuous data (held-out standardised NLL against 16: grid25's 25 modes
    -1.672 -> -3.844, truth -3.846; moons 1.173 -> 1.159; ring8 -3.595 -> -3.593;
    not used to choose: pinwheel 1.598 -> 1.544, checkerboard 2.062 -> 1.985);
    on digits 10 full components with ``reg_covar = 0.1`` (the best of a sweep,
    benchmarks/results/foundation.md).
    """
    pixels = dataset.discrete_levels is not None
    if name == "histogram":
        return {"bins": "cv", "pseudocount": 0.01, "padding": 0.1}
    if name == "kde":
        return {"kernel": "gaussian", "bandwidth": "cv", "covariance": "isotropic"}
    if name == "gmm":
        return {"num_components": 10 if pixels else 32, "covariance": "full",
                "reg_covar": 0.1 if pixels else 1e-6, "n_init": 1 if pixels else 3, "max_iter": 200}
    raise ValueError(f"unknown classical model {name!r}; choose one of {CLASSICAL_MODELS}")


def build_estimator(name: str, options: dict, range=None):
    """The estimator of a run; the histogram's box is ``range`` (default: the data's)."""
    if name == "histogram":
        bins = options["bins"] if options["bins"] == "cv" else int(options["bins"])
        return histogram(bins, range=range, pseudocount=float(options["pseudocount"]))
    if name == "kde":
        return kde(options["kernel"], options["bandwidth"], covariance=options["covariance"])
    if name == "gmm":
        return gmm(int(options["num_components"]), options["covariance"], reg_covar=float(options["reg_covar"]),
                   n_init=int(options["n_init"]), max_iter=int(options["max_iter"]))
    raise ValueError(f"unknown classical model {name!r}; choose one of {CLASSICAL_MODELS}")


def build(name: str, options: dict, dim: int, pre: dict):
    """``init(key, data)`` fits the estimator (the histogram over the data's box padded by ``padding``)."""
    model = from_estimator(build_estimator(name, options), dim)
    if name != "histogram":
        return model

    def init(key, data=None):
        if data is None:
            return model.init(key, data)
        x = np.asarray(data)
        low, high = x.min(0), x.max(0)
        pad = float(options["padding"]) * np.maximum(high - low, 1e-12)
        box = [[float(a), float(b)] for a, b in zip(low - pad, high + pad)]
        return build_estimator(name, options, range=box).fit(key, jnp.asarray(data))

    return model._replace(init=init)


def _applies(name: str, dataset: Dataset) -> str | None:
    if name != "histogram":
        return None
    bins, dim = CV_BINS[0], int(dataset.train.shape[1])  # the fewest bins "cv" (the default) can choose
    if float(bins) ** dim > MAX_CELLS:
        return f"{bins}^{dim} histogram cells exceed MAX_CELLS = {MAX_CELLS} (the curse of dimensionality)"
    return None


def _bins_arg(text: str):
    return text if text == "cv" else registry.positive_int(text)


def _bandwidth_arg(text: str):
    return text if text in ("scott", "silverman", "cv") else registry.positive_float(text)


_OPTIONS = {
    "histogram": (
        registry.Option("--bins", "bins", _bins_arg,
                        "histogram: bins per axis, or cv (default: by leave-one-out likelihood)"),
        registry.Option("--pseudocount", "pseudocount", registry.nonneg_float,
                        "histogram: count added to every cell (default 0.01)"),
        registry.Option("--padding", "padding", registry.nonneg_float,
                        "histogram: box padding as a fraction of the data range"),
    ),
    "kde": (
        registry.Option("--kernel", "kernel", str, "kde: kernel", ("gaussian", "epanechnikov", "tophat")),
        registry.Option("--bandwidth", "bandwidth", _bandwidth_arg,
                        "kde: a number > 0, scott, silverman or cv (default)"),
        registry.Option("--covariance", "covariance", str, "kde: isotropic|full", ("isotropic", "full")),
    ),
    "gmm": (
        registry.Option("--covariance", "covariance", str, "gmm: full|diag|spherical|tied",
                        ("full", "diag", "spherical", "tied")),
        registry.Option("--components", "num_components", registry.positive_int, "gmm: number of components"),
        registry.Option("--reg-covar", "reg_covar", registry.nonneg_float, "gmm: added to covariance diagonals"),
        registry.Option("--restarts", "n_init", registry.positive_int, "gmm: EM restarts (n_init)"),
    ),
}

for _name in CLASSICAL_MODELS:
    registry.register(registry.Family(
        name=_name,
        defaults=lambda dataset, chosen, _n=_name: default_options(_n, dataset),
        build=lambda options, dim, pre, _n=_name: build(_n, options, dim, pre),
        options=_OPTIONS[_name],
        applies=lambda dataset, _n=_name: _applies(_n, dataset),
        report=(lambda model, params, *_: {"bandwidth_factor": float(np.asarray(params["chol"])[0, 0])})
        if _name == "kde" else None,
    ))
