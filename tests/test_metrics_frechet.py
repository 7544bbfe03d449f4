"""Frechet distance against scipy.linalg.sqrtm references, including rank-deficient cases."""

import numpy as np
import pytest
import scipy.linalg
from hypothesis import given
from hypothesis import strategies as st

from genlearn.metrics import frechet_distance, frechet_distance_from_stats, gaussian_stats


def _stats(x):
    return x.mean(0), np.cov(x, rowvar=False)


def _ref_stable(x, y):
    """sqrtm of the symmetric PSD matrix S1^(1/2) S2 S1^(1/2), with scipy."""
    (m1, s1), (m2, s2) = _stats(x), _stats(y)
    r1 = scipy.linalg.sqrtm(s1)
    tr = np.trace(scipy.linalg.sqrtm(r1 @ s2 @ r1)).real
    return float(((m1 - m2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * tr)


def _ref_naive(x, y):
    """The usual implementation: sqrtm(S1 @ S2), may come back complex."""
    (m1, s1), (m2, s2) = _stats(x), _stats(y)
    c = scipy.linalg.sqrtm(s1 @ s2)
    return ((m1 - m2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(c)


@pytest.mark.parametrize("n,d", [(500, 4), (400, 32), (300, 64)])
def test_matches_scipy_sqrtm_full_rank(n, d):
    rng = np.random.default_rng(d)
    a = rng.normal(size=(d, d)) / np.sqrt(d)
    x = rng.normal(size=(n, d)) @ a
    y = rng.normal(size=(n, d)) * 1.1 + 0.2
    fd = frechet_distance(x, y)
    assert fd == pytest.approx(_ref_stable(x, y), rel=1e-6)
    assert fd == pytest.approx(float(np.real(_ref_naive(x, y))), rel=1e-6)


@pytest.mark.parametrize("n,d", [(10, 64), (30, 64), (20, 80)])
def test_rank_deficient_is_real_and_matches_stable_reference(n, d):
    rng = np.random.default_rng(n)
    x = rng.normal(size=(n, d))
    y = rng.normal(size=(n, d)) * 0.7 + 0.1
    fd = frechet_distance(x, y)
    assert isinstance(fd, float) and np.isfinite(fd)
    assert fd == pytest.approx(_ref_stable(x, y), rel=1e-6)
    naive = _ref_naive(x, y)
    assert np.iscomplexobj(naive) or not np.isfinite(naive)  # what we avoid


def test_closed_form_diagonal_gaussians():
    rng = np.random.default_rng(0)
    mu1, mu2 = rng.normal(size=5), rng.normal(size=5)
    a, b = rng.random(5) + 0.1, rng.random(5) + 0.1
    expected = ((mu1 - mu2) ** 2).sum() + ((np.sqrt(a) - np.sqrt(b)) ** 2).sum()
    assert frechet_distance_from_stats(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(expected, rel=1e-10)
    # singular covariances: zero blocks
    a[:2] = 0
    expected = ((mu1 - mu2) ** 2).sum() + ((np.sqrt(a) - np.sqrt(b)) ** 2).sum()
    assert frechet_distance_from_stats(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(expected, rel=1e-10)


@given(st.integers(0, 2**31 - 1), st.integers(1, 6))
def test_symmetric_and_zero_on_identical(seed, d):
    rng = np.random.default_rng(seed)
    x, y = rng.normal(size=(20, d)), rng.normal(size=(15, d)) + 1
    assert frechet_distance(x, x) == pytest.approx(0.0, abs=1e-9)
    assert frechet_distance(x, y) == pytest.approx(frechet_distance(y, x), rel=1e-8, abs=1e-10)


def test_gaussian_stats_unbiased():
    x = np.random.default_rng(1).normal(size=(50, 3))
    s = gaussian_stats(x)
    np.testing.assert_allclose(s.cov, np.cov(x, rowvar=False))
    np.testing.assert_allclose(s.mean, x.mean(0))


def test_frechet_bad_inputs():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(10, 3))
    mu, s = np.zeros(3), np.eye(3)
    with pytest.raises(ValueError, match="dimension mismatch"):
        frechet_distance(x, x[:, :2])
    with pytest.raises(ValueError, match="at least 2 samples"):
        frechet_distance(x[:1], x)
    with pytest.raises(ValueError, match="NaN or inf"):
        frechet_distance(np.where(x > 1, np.inf, x), x)
    with pytest.raises(ValueError, match="square"):
        frechet_distance_from_stats(mu, np.ones((3, 2)), mu, s)
    with pytest.raises(ValueError, match="not symmetric"):
        frechet_distance_from_stats(mu, s + np.triu(np.ones((3, 3)), 1), mu, s)
    with pytest.raises(ValueError, match="positive semi-definite"):
        frechet_distance_from_stats(mu, -s, mu, s)
    with pytest.raises(ValueError, match="NaN or inf"):
        frechet_distance_from_stats(mu, np.full((3, 3), np.nan), mu, s)
    with pytest.raises(ValueError, match="dimension mismatch"):
        frechet_distance_from_stats(mu, s, np.zeros(4), np.eye(4))
    with pytest.raises(ValueError, match="expected"):
        frechet_distance_from_stats(mu, np.eye(4), mu, s)
    with pytest.raises(ValueError, match="real"):
        frechet_distance_from_stats(mu, s.astype(complex), mu, s)
