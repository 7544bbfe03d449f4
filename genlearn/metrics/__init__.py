"""Evaluation metrics for learned distributions: pure functions on sample arrays.

Every metric takes ``(n, d)`` sample arrays, validates them on the host (shape,
NaN/inf, sizes; clear ``ValueError`` messages) and computes in float64 (jitted
JAX kernels in row blocks, or float64 NumPy/SciPy where an exact host solver
is the right tool).

* ``wasserstein``: exact ``wasserstein2_exact`` / ``wasserstein_p`` (assignment,
  LP), ``sinkhorn_divergence``, ``sliced_wasserstein``, ``wasserstein1_dual``.
* ``frechet``: ``frechet_distance`` (FID formula, eigh-based, stable).
* ``kernels``: ``mmd2``, ``mmd_permutation_test``, ``energy_distance``,
  ``kernel_inception_distance``.
* ``knn``: ``precision_recall``, ``density_coverage`` (both at once: ``knn_metrics``),
  ``birthday_support_estimate``.
* ``modes``: ``mode_coverage`` for mixtures with known centres.
* ``features``: the shipped digits classifier, ``inception_score``,
  ``digits_fid`` (values in that network's feature space, not Inception's).
* ``likelihood``: ``log_likelihood_report`` (nats, bits/dim).
* ``evaluate``: everything that applies, as ``dict[str, float]``.
"""

from genlearn.metrics.evaluate import evaluate
from genlearn.metrics.features import (
    DIGITS_FEATURE_DIM,
    DIGITS_WEIGHTS_PATH,
    DigitsClassifier,
    FeatureNet,
    digits_classifier_init,
    digits_features,
    digits_fid,
    feature_frechet_distance,
    inception_score,
    load_digits_feature_net,
)
from genlearn.metrics.frechet import (
    GaussianStats,
    frechet_distance,
    frechet_distance_from_stats,
    gaussian_stats,
)
from genlearn.metrics.kernels import (
    KIDResult,
    MMDTestResult,
    energy_distance,
    kernel_inception_distance,
    median_heuristic_bandwidth,
    mmd2,
    mmd_permutation_test,
)
from genlearn.metrics.knn import (
    BirthdayEstimate,
    DensityCoverage,
    PrecisionRecall,
    birthday_support_estimate,
    density_coverage,
    knn_metrics,
    knn_radii,
    precision_recall,
)
from genlearn.metrics.likelihood import LikelihoodReport, log_likelihood_report
from genlearn.metrics.modes import ModeCoverage, mode_coverage
from genlearn.metrics.wasserstein import (
    EntropicOTResult,
    W1DualResult,
    cost_matrix,
    entropic_ot,
    sinkhorn_divergence,
    sliced_wasserstein,
    wasserstein1_dual,
    wasserstein2_exact,
    wasserstein_p,
)

__all__ = [
    # wasserstein
    "cost_matrix",
    "wasserstein2_exact",
    "wasserstein_p",
    "EntropicOTResult",
    "entropic_ot",
    "sinkhorn_divergence",
    "sliced_wasserstein",
    "W1DualResult",
    "wasserstein1_dual",
    # frechet
    "GaussianStats",
    "gaussian_stats",
    "frechet_distance_from_stats",
    "frechet_distance",
    # kernels
    "median_heuristic_bandwidth",
    "mmd2",
    "MMDTestResult",
    "mmd_permutation_test",
    "energy_distance",
    "KIDResult",
    "kernel_inception_distance",
    # knn
    "knn_radii",
    "PrecisionRecall",
    "precision_recall",
    "DensityCoverage",
    "density_coverage",
    "knn_metrics",
    "BirthdayEstimate",
    "birthday_support_estimate",
    # modes
    "ModeCoverage",
    "mode_coverage",
    # features
    "DIGITS_WEIGHTS_PATH",
    "DIGITS_FEATURE_DIM",
    "DigitsClassifier",
    "FeatureNet",
    "digits_classifier_init",
    "load_digits_feature_net",
    "digits_features",
    "inception_score",
    "feature_frechet_distance",
    "digits_fid",
    # likelihood
    "LikelihoodReport",
    "log_likelihood_report",
    # evaluate
    "evaluate",
]
