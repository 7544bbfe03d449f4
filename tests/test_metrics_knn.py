"""Precision/recall, density/coverage and mode coverage against NumPy references of the papers' formulas."""

import jax
import numpy as np
import pytest
from scipy.spatial.distance import cdist

from genlearn.data import grid25, grid25_centers, ring8, ring8_centers
from genlearn.metrics import (
    birthday_support_estimate,
    density_coverage,
    knn_metrics,
    knn_radii,
    mode_coverage,
    precision_recall,
)


def _ref(real, fake, k):
    """Kynkaanniemi et al. 2019 eqs. 1-2 and Naeem et al. 2020 eqs. 3-4, straight from the formulas."""
    r_rad = np.sort(cdist(real, real), axis=1)[:, k]  # column 0 is the point itself
    f_rad = np.sort(cdist(fake, fake), axis=1)[:, k]
    d = cdist(real, fake)  # (N, M)
    in_real_ball = d <= r_rad[:, None]
    precision = in_real_ball.any(axis=0).mean()
    recall = (d.T <= f_rad[:, None]).any(axis=0).mean()
    density = in_real_ball.sum() / (k * fake.shape[0])
    coverage = in_real_ball.any(axis=1).mean()
    return precision, recall, density, coverage


@pytest.mark.parametrize("d,k", [(2, 3), (16, 5)])
def test_prdc_match_reference(d, k):
    rng = np.random.default_rng(d)
    real = rng.normal(size=(400, d))
    fake = rng.normal(size=(300, d)) * 0.8 + 0.4
    p, r, dens, cov = _ref(real, fake, k)
    pr = precision_recall(real, fake, k)
    dc = density_coverage(real, fake, k, block_size=64)
    assert pr.precision == pytest.approx(p, abs=1e-12)
    assert pr.recall == pytest.approx(r, abs=1e-12)
    assert dc.density == pytest.approx(dens, rel=1e-12)
    assert dc.coverage == pytest.approx(cov, abs=1e-12)
    np.testing.assert_allclose(knn_radii(real, k), np.sort(cdist(real, real), axis=1)[:, k], rtol=1e-9)
    # all four at once: the same numbers, with the padding of uneven block splits (block 64 over 400 and 300 rows)
    pr4, dc4 = knn_metrics(real, fake, k, block_size=64)
    assert pr4 == pr and dc4.coverage == dc.coverage and dc4.density == pytest.approx(dc.density, rel=1e-12)


def test_prdc_identical_sets_and_collapse():
    real = np.random.default_rng(0).normal(size=(200, 3))
    pr = precision_recall(real, real, 5)
    dc = density_coverage(real, real, 5)
    assert pr.precision == 1.0 and pr.recall == 1.0 and dc.coverage == 1.0
    collapsed = real[:1] + 1e-3 * np.random.default_rng(1).normal(size=(200, 3))
    pr = precision_recall(real, collapsed, 5)
    dc = density_coverage(real, collapsed, 5)
    assert pr.recall < 0.1 and dc.coverage < 0.1


def test_knn_bad_inputs():
    real = np.random.default_rng(0).normal(size=(6, 2))
    with pytest.raises(ValueError, match="k = 6 must be smaller"):
        precision_recall(real, real, 6)
    for fn in (precision_recall, knn_metrics):
        with pytest.raises(ValueError, match="k = 5 must be smaller than the number of fake"):
            fn(real, real[:5], 5)
    with pytest.raises(ValueError, match="k = 9 must be smaller"):
        density_coverage(real, real, 9)
    with pytest.raises(ValueError, match="dimension mismatch"):
        density_coverage(real, real[:, :1], 2)
    with pytest.raises(ValueError, match="NaN or inf"):
        precision_recall(real, np.full((6, 2), np.nan), 2)
    with pytest.raises(ValueError, match="k must be an integer"):
        precision_recall(real, real, 0)


def test_mode_coverage_ring8_and_grid25():
    centers = ring8_centers()
    x = np.asarray(ring8(jax.random.PRNGKey(0), 1600))
    mc = mode_coverage(x, centers, 0.02)
    # reference: nearest centre, within 3 std
    d = cdist(x, np.asarray(centers))
    idx, hq = d.argmin(1), d.min(1) <= 0.06
    counts = np.bincount(idx[hq], minlength=8)
    h = counts / counts.sum()
    assert mc.modes_covered == 8
    np.testing.assert_array_equal(mc.counts, counts)
    assert mc.high_quality_fraction == pytest.approx(hq.mean())
    assert mc.high_quality_fraction == pytest.approx(1 - np.exp(-4.5), abs=0.015)  # chi2_2 mass within 3 std
    assert mc.kl_to_uniform == pytest.approx(np.sum(h * np.log(8 * h)), rel=1e-9)
    # same row count as x, so the compiled kernel is reused
    collapsed = np.asarray(centers[3]) + 0.02 * np.random.default_rng(0).normal(size=x.shape)
    mc = mode_coverage(collapsed, centers, 0.02)
    assert mc.modes_covered == 1 and mc.kl_to_uniform == pytest.approx(np.log(8))
    g = np.asarray(grid25(jax.random.PRNGKey(1), 1600))
    assert mode_coverage(g, grid25_centers(), 0.02).modes_covered == 25
    assert mode_coverage(g + 1.0, grid25_centers(), 0.02).high_quality_fraction == 0.0


def test_mode_coverage_bad_inputs():
    c = ring8_centers()
    x = np.zeros((4, 2))
    with pytest.raises(ValueError, match="std"):
        mode_coverage(x, c, 0.0)
    with pytest.raises(ValueError, match="dimension mismatch"):
        mode_coverage(np.zeros((4, 3)), c, 0.02)
    with pytest.raises(ValueError, match="NaN or inf"):
        mode_coverage(np.full((4, 2), np.inf), c, 0.02)


def test_birthday_support_estimate_on_discrete_support():
    rng = np.random.default_rng(0)
    support = rng.normal(size=(400, 3))
    samples = support[rng.integers(0, 400, size=3000)]
    est = birthday_support_estimate(samples, jax.random.PRNGKey(0), 1e-6)
    assert 200 <= est.support_size <= 1600
    cont = rng.normal(size=(600, 3))
    assert birthday_support_estimate(cont, jax.random.PRNGKey(0), 1e-9).support_size == float("inf")
    with pytest.raises(ValueError, match="exceeds the number of samples"):
        birthday_support_estimate(cont[:100], jax.random.PRNGKey(0), 1e-3)


@pytest.mark.parametrize("k", [1, 3, 5])
def test_knn_radii_count_tied_and_duplicate_points_with_multiplicity(k):
    """NND_k is the (k+1)-th smallest distance of a row counted with multiplicity (the point itself first), as
    sorting each row of the distance matrix gives: duplicated rows (radius 0 while k copies remain) and ties on
    a lattice included."""
    from genlearn.metrics import knn_radii

    rng = np.random.default_rng(k)
    x = np.concatenate([rng.normal(size=(150, 2)), np.repeat(rng.normal(size=(1, 2)), 4, 0),
                        np.stack(np.meshgrid(np.arange(5.0), np.arange(5.0)), -1).reshape(-1, 2),
                        np.repeat(np.array([[9.0, 9.0]]), 2, 0)])
    want = np.sort(cdist(x, x), axis=1)[:, k]
    np.testing.assert_allclose(knn_radii(x, k, block_size=64), want, rtol=1e-12, atol=1e-12)
