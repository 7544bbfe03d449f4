"""Frechet distance between Gaussian fits (the FID formula), computed stably.

For ``N(mu1, S1)`` and ``N(mu2, S2)`` the squared W2 distance is
(Dowson & Landau 1982; Heusel et al. 2017, "GANs Trained by a Two
Time-Scale Update Rule ...", the FID):

    d^2 = ||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2)).

``(S1 S2)^(1/2)`` is not symmetric, and ``scipy.linalg.sqrtm(S1 @ S2)`` (the
usual implementation) returns complex values or NaN when the covariances are
(near-)singular, e.g. fewer samples than dimensions. Since
``S1 S2 = S1^(1/2) (S1^(1/2) S2 S1^(1/2)) S1^(-1/2)`` is similar to the
symmetric PSD matrix ``M = S1^(1/2) S2 S1^(1/2)`` (for singular ``S1`` by
continuity), the trace term is

    Tr (S1 S2)^(1/2) = Tr M^(1/2) = sum_k sqrt(lambda_k(M)),

which needs only two symmetric eigendecompositions (``numpy.linalg.eigh``,
float64), with eigenvalues clipped at 0 against rounding. The result is
real by construction; it is clipped at 0 as well.

Everything runs in float64 NumPy on the host: the cost is ``O(d^3)`` and
precision, not throughput, is what matters here.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from genlearn.metrics._checks import as_pair, as_samples

__all__ = [
    "GaussianStats",
    "gaussian_stats",
    "frechet_distance_from_stats",
    "frechet_distance",
]


class GaussianStats(NamedTuple):
    """Mean ``(d,)`` and covariance ``(d, d)`` of a Gaussian fit, float64."""

    mean: np.ndarray
    cov: np.ndarray


def gaussian_stats(x: Any, name: str = "x") -> GaussianStats:
    """Sample mean and unbiased covariance (``np.cov``, divisor ``n - 1``) of ``x (n, d)``, ``n >= 2``."""
    x = as_samples(x, name)
    cov = np.atleast_2d(np.cov(x, rowvar=False))
    return GaussianStats(x.mean(axis=0), cov)


def _check_cov(s: Any, d: int | None, name: str) -> np.ndarray:
    s = np.asarray(s)
    if np.iscomplexobj(s):
        raise ValueError(f"{name}: covariance must be real, got dtype {s.dtype}")
    s = s.astype(np.float64)
    if s.ndim != 2 or s.shape[0] != s.shape[1]:
        raise ValueError(f"{name}: covariance must be a square (d, d) matrix, got shape {s.shape}")
    if d is not None and s.shape[0] != d:
        raise ValueError(f"{name}: covariance has shape {s.shape}, expected ({d}, {d}) to match the mean")
    if not np.all(np.isfinite(s)):
        raise ValueError(f"{name}: covariance contains NaN or inf")
    scale = max(float(np.abs(s).max()), np.finfo(np.float64).tiny)
    asym = float(np.abs(s - s.T).max())
    if asym > 1e-8 * scale:
        raise ValueError(
            f"{name}: covariance is not symmetric (max |S - S^T| = {asym:.3g}, "
            f"relative {asym / scale:.3g})"
        )
    s = 0.5 * (s + s.T)
    lam_min = float(np.linalg.eigvalsh(s).min())
    if lam_min < -1e-8 * scale:
        raise ValueError(
            f"{name}: covariance is not positive semi-definite (smallest eigenvalue {lam_min:.3g})"
        )
    return s


def _psd_sqrt(s: np.ndarray) -> np.ndarray:
    lam, v = np.linalg.eigh(s)
    return (v * np.sqrt(np.clip(lam, 0.0, None))) @ v.T


def frechet_distance_from_stats(mu1: Any, sigma1: Any, mu2: Any, sigma2: Any) -> float:
    """``||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2))`` for given Gaussian statistics.

    See the module docstring for the eigendecomposition path.

    Args:
      mu1, mu2: ``(d,)`` means.
      sigma1, sigma2: ``(d, d)`` symmetric positive semi-definite covariances
        (asymmetry or negative eigenvalues beyond ``1e-8`` relative are errors).

    Returns:
      The squared Frechet distance (FID convention: not square-rooted), a
      real Python float ``>= 0``.

    Raises:
      ValueError: mismatched shapes, NaN/inf, non-square, non-symmetric or
        indefinite covariance.
    """
    mu1 = np.asarray(mu1, dtype=np.float64)
    mu2 = np.asarray(mu2, dtype=np.float64)
    for mu, name in ((mu1, "mu1"), (mu2, "mu2")):
        if mu.ndim != 1:
            raise ValueError(f"{name}: expected a mean vector of shape (d,), got shape {mu.shape}")
        if not np.all(np.isfinite(mu)):
            raise ValueError(f"{name}: mean contains NaN or inf")
    if mu1.shape != mu2.shape:
        raise ValueError(f"dimension mismatch: mu1 has shape {mu1.shape}, mu2 has shape {mu2.shape}")
    d = mu1.shape[0]
    s1 = _check_cov(sigma1, d, "sigma1")
    s2 = _check_cov(sigma2, d, "sigma2")
    r1 = _psd_sqrt(s1)
    m = r1 @ s2 @ r1
    lam = np.linalg.eigvalsh(0.5 * (m + m.T))
    tr_sqrt = float(np.sum(np.sqrt(np.clip(lam, 0.0, None))))
    diff = mu1 - mu2
    val = float(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * tr_sqrt)
    return max(val, 0.0)


def frechet_distance(x: Any, y: Any) -> float:
    """Frechet distance between Gaussian fits of two sample sets (FID convention).

        FD = ||mu_x - mu_y||^2 + Tr(S_x + S_y - 2 (S_x S_y)^(1/2))

    with sample means and unbiased covariances (``np.cov``). Stable for
    rank-deficient samples (``n <= d``); always real and ``>= 0``. Apply it to
    features (:func:`genlearn.metrics.digits_fid`) for an FID-style score.

    Args:
      x: ``(n, d)``; y: ``(m, d)``; ``n, m >= 2``.

    Returns:
      The (squared) distance as a Python float.
    """
    x, y = as_pair(x, y)
    sx = gaussian_stats(x, "x")
    sy = gaussian_stats(y, "y")
    return frechet_distance_from_stats(sx.mean, sx.cov, sy.mean, sy.cov)
