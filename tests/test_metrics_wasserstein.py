"""Exact and approximate Wasserstein distances against POT and SciPy."""

import jax
import jax.numpy as jnp
import numpy as np
import ot
import pytest
import scipy.stats
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy.optimize import linear_sum_assignment
from scipy.spatial.distance import cdist

from genlearn.metrics import (
    entropic_ot,
    sinkhorn_divergence,
    sliced_wasserstein,
    wasserstein1_dual,
    wasserstein2_exact,
    wasserstein_p,
)


def _pair(seed, n, d, m=None):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, d)), rng.normal(size=(m or n, d)) * 1.3 + 0.4


@pytest.mark.parametrize("n,d", [(50, 2), (300, 64), (1000, 2), (1000, 64)])
def test_w2_exact_matches_pot_emd2_and_scipy_assignment(n, d):
    x, y = _pair(n + d, n, d)
    w2 = wasserstein2_exact(x, y)
    c = ot.dist(x, y)  # squared Euclidean
    ref_pot = np.sqrt(ot.emd2(np.full(n, 1 / n), np.full(n, 1 / n), c, numItermax=10**7))
    r, cidx = linear_sum_assignment(cdist(x, y, "sqeuclidean"))
    ref_lsa = np.sqrt(cdist(x, y, "sqeuclidean")[r, cidx].mean())
    assert abs(w2 - ref_pot) / ref_pot < 1e-6
    assert abs(w2 - ref_lsa) / ref_lsa < 1e-6


@pytest.mark.parametrize("p", [1.0, 1.5, 3.0])
def test_wasserstein_p_equal_sizes_matches_pot(p):
    x, y = _pair(1, 80, 3)
    ref = ot.emd2([], [], cdist(x, y) ** p) ** (1 / p)
    assert wasserstein_p(x, y, p) == pytest.approx(ref, rel=1e-6)


@pytest.mark.parametrize("p", [1.0, 2.0])
def test_wasserstein_p_unequal_weighted_lp_matches_pot(p):
    x, y = _pair(2, 40, 4, m=27)
    rng = np.random.default_rng(3)
    a = rng.random(40)
    a /= a.sum()
    b = np.full(27, 1 / 27)
    ref = ot.emd2(a, b, cdist(x, y) ** p) ** (1 / p)
    assert wasserstein_p(x, y, p, x_weights=a) == pytest.approx(ref, rel=1e-6)
    # unequal sizes, uniform weights: LP path of wasserstein2_exact
    ref2 = np.sqrt(ot.emd2(np.full(40, 1 / 40), b, ot.dist(x, y)))
    assert wasserstein2_exact(x, y) == pytest.approx(ref2, rel=1e-6)


_points = arrays(np.float64, st.tuples(st.integers(2, 12), st.integers(1, 4)),
                 elements=st.floats(-10, 10, allow_nan=False, width=32))


@given(_points)
def test_w2_zero_on_identical_sets_and_permutation_invariant(x):
    assert wasserstein2_exact(x, x) == pytest.approx(0.0, abs=1e-9)
    assert wasserstein2_exact(x, x[::-1]) == pytest.approx(0.0, abs=1e-9)


@given(_points, st.lists(st.floats(-5, 5), min_size=4, max_size=4))
def test_w2_translation_equals_norm_of_shift(x, shift):
    c = np.asarray(shift[: x.shape[1]])
    assert wasserstein2_exact(x, x + c) == pytest.approx(np.linalg.norm(c), rel=1e-6, abs=1e-6)


@given(_points, st.integers(0, 2**31 - 1))
def test_w2_symmetric_and_triangle(x, seed):
    rng = np.random.default_rng(seed)
    y = rng.normal(size=x.shape)
    z = rng.normal(size=x.shape) * 2
    assert wasserstein2_exact(x, y) == pytest.approx(wasserstein2_exact(y, x), rel=1e-9, abs=1e-12)
    assert wasserstein2_exact(x, z) <= wasserstein2_exact(x, y) + wasserstein2_exact(y, z) + 1e-9


def test_entropic_transport_cost_matches_pot_sinkhorn2():
    x, y = _pair(4, 120, 2, m=90)
    res = entropic_ot(x, y, 0.2, tol=1e-12, max_iters=20000)
    ref = ot.sinkhorn2(np.full(120, 1 / 120), np.full(90, 1 / 90), ot.dist(x, y), 0.2,
                       method="sinkhorn_log", stopThr=1e-13, numItermax=100000)
    assert res.transport_cost == pytest.approx(float(ref), rel=1e-6)
    assert res.marginal_error < 1e-8


def test_sinkhorn_divergence_properties():
    x, y = _pair(5, 100, 2)
    assert abs(sinkhorn_divergence(x, x, 0.1)) < 1e-8
    s_big = sinkhorn_divergence(x, y, 0.5)
    assert s_big > 0
    # eps -> 0 recovers W2^2
    w2sq = wasserstein2_exact(x, y) ** 2
    assert sinkhorn_divergence(x, y, 1e-3 * w2sq, max_iters=20000) == pytest.approx(w2sq, rel=0.02)
    assert sinkhorn_divergence(x, y, 0.5) == pytest.approx(sinkhorn_divergence(y, x, 0.5), rel=1e-6)


def test_sliced_is_exact_in_one_dimension_including_unequal_sizes():
    x, y = _pair(6, 70, 1, m=45)
    key = jax.random.PRNGKey(0)
    for p in (1.0, 2.0):
        assert sliced_wasserstein(x, y, key, 3, p=p) == pytest.approx(wasserstein_p(x, y, p), rel=1e-6)
    assert sliced_wasserstein(x, y, key, 3, p=1.0) == pytest.approx(
        scipy.stats.wasserstein_distance(x[:, 0], y[:, 0]), rel=1e-6)


def test_sliced_matches_pot_with_the_same_directions():
    x, y = _pair(7, 150, 5)
    key = jax.random.PRNGKey(3)
    with jax.enable_x64(True):
        theta = jax.random.normal(key, (64, 5), jnp.float32).astype(jnp.float64)
        theta = np.asarray(theta / jnp.linalg.norm(theta, axis=1, keepdims=True))
    ref = ot.sliced_wasserstein_distance(x, y, n_projections=64, p=2, projections=theta.T)
    assert sliced_wasserstein(x, y, key, 64) == pytest.approx(float(ref), rel=1e-6)
    assert sliced_wasserstein(x, x, key, 64) == pytest.approx(0.0, abs=1e-9)


def test_w1_dual_estimate_close_to_exact_w1():
    rng = np.random.default_rng(8)
    x = rng.normal(size=(300, 1))
    y = rng.normal(size=(300, 1)) * 0.5 + 2.0
    exact = wasserstein_p(x, y, 1.0)
    res = wasserstein1_dual(x, y, jax.random.PRNGKey(0), num_steps=250, hidden=32, batch_size=128)
    assert 0.8 * exact < res.estimate <= 1.05 * exact
    assert res.lipschitz > 0


def test_wasserstein_bad_inputs():
    x, y = _pair(9, 10, 2)
    with pytest.raises(ValueError, match="dimension mismatch"):
        wasserstein2_exact(x, y[:, :1])
    with pytest.raises(ValueError, match="NaN or inf"):
        wasserstein2_exact(np.where(np.arange(10)[:, None] == 3, np.nan, x), y)
    with pytest.raises(ValueError, match="NaN or inf"):
        sliced_wasserstein(x, np.full_like(y, np.inf), jax.random.PRNGKey(0))
    with pytest.raises(ValueError, match=r"shape \(n, d\)"):
        wasserstein2_exact(x[:, 0], y[:, 0])
    with pytest.raises(ValueError, match="p must be"):
        wasserstein_p(x, y, 0.5)
    with pytest.raises(ValueError, match="sum to 1"):
        wasserstein_p(x, y, 2, x_weights=np.ones(10))
    with pytest.raises(ValueError, match="epsilon"):
        sinkhorn_divergence(x, y, 0.0)
    with pytest.raises(ValueError, match="at least 2 samples"):
        sinkhorn_divergence(x[:1], y, 0.1)
    with pytest.raises(ValueError, match="at least 2 samples"):
        wasserstein1_dual(x[:1], y, jax.random.PRNGKey(0))
    with pytest.raises(ValueError, match="num_projections"):
        sliced_wasserstein(x, y, jax.random.PRNGKey(0), 0)


def test_single_point_sets_are_rejected():
    x, y = _pair(10, 5, 2)
    with pytest.raises(ValueError, match="at least 2 samples"):
        wasserstein2_exact(x[:1], y)
    with pytest.raises(ValueError, match="at least 2 samples"):
        wasserstein_p(x, y[:1], 1.0)
    with pytest.raises(ValueError, match="at least 2 samples"):
        sliced_wasserstein(x[:1], y, jax.random.PRNGKey(0))


def test_sinkhorn_divergence_pads_with_weightless_points_and_compiles_once_per_bucket(caplog):
    """`metrics.sinkhorn_divergence` pads both sets to bucket sizes with points of weight zero: its value is the
    unpadded divergence's (genlearn.distances with uniform weights), and sizes in one bucket share a program."""
    import logging

    from genlearn import distances

    rng = np.random.default_rng(7)
    values = []
    for n, m in ((70, 53), (90, 60)):  # both pairs pad to (96, 64) rows
        x, y = rng.normal(size=(n, 2)), rng.normal(size=(m, 2)) + 0.5
        with jax.enable_x64(True):
            want = float(distances.sinkhorn_divergence(jnp.asarray(x), jnp.asarray(y), 0.3, tol=1e-9))
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="jax"), jax.log_compiles(True):
            got = sinkhorn_divergence(x, y, 0.3)
        values.append(sum(r.getMessage().startswith("Compiling jit(sinkhorn_divergence)") for r in caplog.records))
        assert got == pytest.approx(want, rel=1e-9, abs=1e-12)
    assert values[0] <= 1 and values[1] == 0, values  # the second pair reuses the first's program
    with pytest.raises(ValueError, match="one weight per point"):
        distances.sinkhorn_divergence(jnp.zeros((3, 2)), jnp.ones((4, 2)), 0.1, a=jnp.ones(4) / 4)
