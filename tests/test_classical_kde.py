"""Kernel density estimator against scikit-learn and scipy, blocking, sampling, bad input."""

import jax
import numpy as np
import pytest
import scipy.stats
from hypothesis import given
from hypothesis import strategies as st
from sklearn.neighbors import KernelDensity

from genlearn.classical import KERNELS, kde, scott_factor, silverman_factor


def _data(n=200, d=3, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, d)) @ rng.normal(size=(d, d)), rng


@pytest.mark.parametrize("kernel", KERNELS)
def test_matches_sklearn_kernel_density(kernel):
    with jax.enable_x64(True):
        x, rng = _data(200, 3)
        q = x[:90] + rng.normal(size=(90, 3))
        h = 1.3
        model = kde(kernel, h, block_size=37)  # several padded blocks each way
        params = model.fit(jax.random.PRNGKey(0), x)
        ours = np.asarray(model.log_prob(params, q))
        ref = KernelDensity(kernel=kernel, bandwidth=h).fit(x).score_samples(q)
        fin = np.isfinite(ours)
        assert fin.sum() >= 45
        np.testing.assert_allclose(ours[fin], ref[fin], rtol=1e-6)
        # Where no training point is within h the density is exactly 0; scikit-learn's
        # tree returns a round-off floor there (about exp(-38)) instead of -inf.
        dist = np.sqrt(((q[~fin][:, None] - x[None]) ** 2).sum(-1)).min(1)
        assert np.all(dist >= h)
        assert np.all(ref[~fin] < -30)


@pytest.mark.parametrize("rule", ["scott", "silverman"])
def test_rules_match_scipy_gaussian_kde(rule):
    with jax.enable_x64(True):
        x, rng = _data(150, 2, seed=1)
        ref = scipy.stats.gaussian_kde(x.T, bw_method=rule)
        factor = {"scott": scott_factor, "silverman": silverman_factor}[rule](150, 2)
        np.testing.assert_allclose(factor, ref.factor, rtol=1e-14)
        model = kde("gaussian", rule, covariance="full")
        params = model.fit(None, x)
        chol = np.asarray(params["chol"])
        np.testing.assert_allclose(chol @ chol.T, ref.covariance, rtol=1e-12)
        q = rng.normal(size=(40, 2))
        np.testing.assert_allclose(np.asarray(model.log_prob(params, q)), ref.logpdf(q.T), rtol=1e-10)
        # Isotropic rule: h = factor * sqrt(tr(Sigma) / d).
        iso = kde("gaussian", rule).fit(None, x)
        h = factor * np.sqrt(np.trace(np.cov(x.T)) / 2)
        np.testing.assert_allclose(np.asarray(iso["chol"]), h * np.eye(2), rtol=1e-12)


@pytest.mark.parametrize("kernel", KERNELS)
def test_full_bandwidth_integrates_to_one(kernel):
    with jax.enable_x64(True):
        x, _ = _data(30, 2, seed=2)
        model = kde(kernel, 0.8, covariance="full", block_size=512)
        params = model.fit(None, x)
        lo, hi = x.min(0) - 4, x.max(0) + 4
        g = [np.linspace(lo[j], hi[j], 300) for j in range(2)]
        grid = np.stack(np.meshgrid(*g, indexing="ij"), -1).reshape(-1, 2)
        mass = np.exp(np.asarray(model.log_prob(params, grid))).sum() * np.prod([gi[1] - gi[0] for gi in g])
        np.testing.assert_allclose(mass, 1.0, atol=2e-2)


@given(block=st.sampled_from([5, 29]), seed=st.integers(0, 1000))
def test_blocking_does_not_change_the_result(block, seed):
    with jax.enable_x64(True):
        x, rng = _data(53, 2, seed)
        q = rng.normal(size=(29, 2))
        whole = kde("epanechnikov", 2.0, block_size=4096)
        ref = np.asarray(whole.log_prob(whole.fit(None, x), q))
        blocked = kde("epanechnikov", 2.0, block_size=block)
        np.testing.assert_allclose(np.asarray(blocked.log_prob(blocked.fit(None, x), q)), ref, rtol=1e-12)


def test_cv_bandwidth_maximises_kfold_likelihood():
    with jax.enable_x64(True):
        x, _ = _data(120, 2, seed=3)
        key = jax.random.PRNGKey(7)
        grid = [0.3, 0.6, 1.0, 1.8, 3.0]
        params = kde("gaussian", "cv", cv_folds=4, cv_grid=grid).fit(key, x)
        # Reference: the same folds scored with scikit-learn.
        sbar = np.sqrt(np.trace(np.cov(x.T)) / 2)
        hs = np.asarray(grid) * scott_factor(120, 2) * sbar
        folds = np.array_split(np.asarray(jax.random.permutation(key, 120)), 4)
        scores = []
        for h in hs:
            s = 0.0
            for f in folds:
                mask = np.ones(120, bool)
                mask[f] = False
                s += KernelDensity(bandwidth=h).fit(x[mask]).score(x[f])
            scores.append(s)
        np.testing.assert_allclose(np.asarray(params["chol"]), hs[int(np.argmax(scores))] * np.eye(2), rtol=1e-10)


@pytest.mark.parametrize("kernel,mean_r2", [("gaussian", 3.0), ("tophat", 3 / 5), ("epanechnikov", 3 / 7)])
def test_sample_kernel_moments(kernel, mean_r2):
    # One training point: samples are x0 + h u with E|u|^2 = d, d/(d+2), d/(d+4).
    with jax.enable_x64(True):
        x0 = np.array([[1.0, -2.0, 0.5]])
        model = kde(kernel, 0.5)
        s = np.asarray(model.sample(model.fit(None, x0), jax.random.PRNGKey(0), 20_000))
        r2 = np.sum(((s - x0) / 0.5) ** 2, axis=1)
        np.testing.assert_allclose(np.mean(s, 0), x0[0], atol=0.02)
        np.testing.assert_allclose(r2.mean(), mean_r2, rtol=0.03)
        if kernel != "gaussian":
            assert r2.max() < 1.0


def test_bad_input():
    x, _ = _data(40, 2)
    for bad in (0.0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="bandwidth must be finite and > 0"):
            kde("gaussian", bad)
    with pytest.raises(ValueError, match="positive definite"):
        kde("gaussian", np.array([[1.0, 0.0], [0.0, -1.0]]))
    with pytest.raises(ValueError, match="kernel must be one of"):
        kde("cosine")
    with pytest.raises(ValueError, match="bandwidth must be a number > 0 or one of"):
        kde("gaussian", "auto")
    bad = x.copy()
    bad[0, 0] = np.inf
    with pytest.raises(ValueError, match="NaN or inf"):
        kde().fit(None, bad)
    model = kde("gaussian", 0.5)
    params = model.fit(None, x)
    with pytest.raises(ValueError, match="model has dim 2 but the query has dim 1"):
        model.log_prob(params, np.zeros((3, 1)))
    with pytest.raises(ValueError, match=r"expected a batch of shape \(n, 2\)"):
        jax.jit(model.log_prob)(params, np.zeros((3, 5)))
    singular = np.column_stack([x[:, 0], 2 * x[:, 0]])
    with pytest.raises(ValueError, match="non-singular data covariance"):
        kde("gaussian", "scott", covariance="full").fit(None, singular)
    with pytest.raises(ValueError, match="cv_folds"):
        kde("gaussian", "cv", cv_folds=5).fit(jax.random.PRNGKey(0), x[:3])
