"""Classical density estimators under the flows' protocol.

The lecture's "History" slide: histogram, kernel density and Gaussian mixture
estimators all have the basis-expansion form
:math:`\\hat f_h(x) = \\sum_j a_j k_h(x, \\mu_j)` with :math:`a_j \\ge 0`,
:math:`\\sum_j a_j = 1`. Each factory takes the hyperparameters and returns a
NamedTuple with

* ``name: str``;
* ``fit(key, data) -> params``: data ``(n, d)``, params a dict of arrays (it
  can be saved with ``genlearn.train.save_pytree``);
* ``log_prob(params, x) -> (m,)`` for x ``(m, d)``;
* ``sample(params, key, n) -> (n, d)``.

So ``genlearn.losses.nll(model)`` and every metric apply to them as to flows.
"""

from genlearn.classical.gmm import COVARIANCE_TYPES, GMM, EMInfo, gmm, kmeans_plusplus
from genlearn.classical.histogram import CV_BINS, MAX_CELLS, Histogram, histogram
from genlearn.classical.kde import (
    KDE,
    KERNELS,
    kde,
    kernel_log_norm,
    scott_factor,
    silverman_factor,
)

__all__ = [
    "COVARIANCE_TYPES",
    "CV_BINS",
    "EMInfo",
    "GMM",
    "Histogram",
    "KDE",
    "KERNELS",
    "MAX_CELLS",
    "gmm",
    "histogram",
    "kde",
    "kernel_log_norm",
    "kmeans_plusplus",
    "scott_factor",
    "silverman_factor",
]
