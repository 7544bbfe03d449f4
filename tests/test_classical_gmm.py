"""Gaussian mixture: EM against scikit-learn, gradient training, sampling, bad input."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import given
from hypothesis import strategies as st
from sklearn.mixture import GaussianMixture

import genlearn
from genlearn.classical import COVARIANCE_TYPES, gmm, histogram, kde, kmeans_plusplus
from genlearn.train import fit, load_pytree, save_pytree


def _blobs(n, seed, d=3):
    rng = np.random.default_rng(seed)
    centres = np.array([[0.0, 0.0, 0.0], [5.0, 0.0, 1.0], [0.0, 6.0, -1.0]])[:, :d]
    labels = rng.integers(0, 3, n)
    scales = np.array([0.5, 1.0, 1.5])[labels][:, None]
    return centres[labels] + scales * rng.normal(size=(n, d)) @ np.array([[1.0, 0.3, 0.0], [0.0, 1.0, 0.2], [0.0, 0.0, 1.0]])[:d, :d]


@pytest.mark.parametrize("cov", COVARIANCE_TYPES)
def test_log_prob_and_bic_equal_sklearn_for_its_params(cov):
    with jax.enable_x64(True):
        x, q = _blobs(300, 0), _blobs(100, 1)
        ref = GaussianMixture(3, covariance_type=cov, random_state=0).fit(x)
        model = gmm(3, cov)
        params = model.from_moments(ref.weights_, ref.means_, ref.covariances_)
        np.testing.assert_allclose(np.asarray(model.log_prob(params, q)), ref.score_samples(q), rtol=1e-10)
        np.testing.assert_allclose(float(model.bic(params, x)), ref.bic(x), rtol=1e-10)
        np.testing.assert_allclose(float(model.aic(params, x)), ref.aic(x), rtol=1e-10)
        np.testing.assert_allclose(np.asarray(model.responsibilities(params, q)), ref.predict_proba(q), atol=1e-10)
        mom = model.to_moments(params)
        np.testing.assert_allclose(np.asarray(mom["covariances"]), ref.covariances_, rtol=1e-8, atol=1e-12)
        assert model.num_parameters(3) == ref._n_parameters()


@pytest.mark.parametrize("cov", COVARIANCE_TYPES)
def test_em_matches_sklearn_heldout_likelihood(cov):
    with jax.enable_x64(True):
        x, q = _blobs(600, 2), _blobs(400, 3)
        model = gmm(3, cov, tol=1e-4, max_iter=200, reg_covar=1e-6, n_init=3)
        params, info = model.fit_with_info(jax.random.PRNGKey(0), x)
        ref = GaussianMixture(3, covariance_type=cov, tol=1e-4, max_iter=200, reg_covar=1e-6, n_init=3, random_state=0).fit(x)
        ours = float(jnp.mean(model.log_prob(params, q)))
        assert abs(ours - ref.score(q)) <= 0.005 * abs(ref.score(q))
        assert np.all(np.asarray(info.converged))
        assert np.all(np.asarray(info.n_iter) <= 200)
        # The reported lower bound is the training mean log-likelihood of the last E-step.
        best = int(info.best)
        train_ll = float(jnp.mean(model.log_prob(params, x)))
        assert abs(train_ll - float(info.lower_bound[best])) < 1e-3


def test_tolerance_stops_early_and_restarts_pick_the_best():
    # Same static config and shapes as the test above, so no new compilation:
    # with a huge tol EM stops at the second iteration (the first change is from -inf).
    with jax.enable_x64(True):
        x = _blobs(600, 4)
        model = gmm(3, "diag", tol=1e9, max_iter=200, reg_covar=1e-6, n_init=3)
        params, info = model.fit_with_info(jax.random.PRNGKey(1), x)
        np.testing.assert_array_equal(np.asarray(info.n_iter), 2)
        assert int(info.best) == int(np.argmax(np.asarray(info.lower_bound)))


def test_gradient_training_lowers_heldout_nll():
    x, q = _blobs(1000, 5).astype(np.float32), _blobs(500, 6).astype(np.float32)
    model = gmm(3, "full")
    params0 = model.init(jax.random.PRNGKey(0), x)
    loss = genlearn.losses.nll(model)
    before = float(loss(params0, q))
    result = fit(loss, params0, x, optimizer=optax.adam(0.02), steps=150, batch_size=128,
                 key=jax.random.PRNGKey(1), progress=False)
    after = float(loss(result.params, q))
    assert after < before - 0.05
    g = jax.grad(loss)(result.params, q)
    assert all(bool(jnp.all(jnp.isfinite(v))) for v in jax.tree_util.tree_leaves(g))


@given(seed=st.integers(0, 1000), cov=st.sampled_from(COVARIANCE_TYPES))
def test_sample_moments_match_params(seed, cov):
    with jax.enable_x64(True):
        rng = np.random.default_rng(seed)
        model = gmm(2, cov)
        a = rng.normal(size=(2, 2, 2))
        covs = {"full": a @ np.swapaxes(a, 1, 2) + 0.5 * np.eye(2), "tied": a[0] @ a[0].T + 0.5 * np.eye(2),
                "diag": rng.uniform(0.3, 2.0, (2, 2)), "spherical": rng.uniform(0.3, 2.0, 2)}[cov]
        w, mu = np.array([0.3, 0.7]), rng.normal(size=(2, 2)) * 3
        params = model.from_moments(w, mu, covs)
        s = np.asarray(model.sample(params, jax.random.PRNGKey(seed), 40_000))
        full = {"full": covs, "tied": np.stack([covs] * 2), "diag": np.stack([np.diag(c) for c in covs]),
                "spherical": covs[:, None, None] * np.eye(2)}[cov]
        mean = w @ mu
        second = np.einsum("k,kde->de", w, full + mu[:, :, None] * mu[:, None, :])
        np.testing.assert_allclose(s.mean(0), mean, atol=0.06)
        np.testing.assert_allclose(np.cov(s.T), second - np.outer(mean, mean), atol=0.15, rtol=0.05)


def test_kmeans_plusplus_picks_one_point_per_cluster():
    x = jnp.asarray(_blobs(300, 7)) * 10
    centres = np.asarray(kmeans_plusplus(jax.random.PRNGKey(0), x, 3))
    assert all(np.any(np.all(np.asarray(x) == c, axis=1)) for c in centres)
    assert np.min(np.linalg.norm(centres[:, None] - centres[None], axis=-1) + 1e9 * np.eye(3)) > 20


def test_params_are_array_pytrees_that_save_and_load(tmp_path):
    # The CLI's path: rebuild the estimator from its hyperparameters, load_pytree the params.
    x = _blobs(50, 9).astype(np.float32)
    models = {"histogram": histogram(6), "kde": kde("tophat", 0.7), "gmm": gmm(2, "diag")}
    params = {name: m.fit(jax.random.PRNGKey(0), x) for name, m in models.items()}
    assert all(isinstance(v, jax.Array) for v in jax.tree_util.tree_leaves(params))
    assert {m.name for m in models.values()} == set(models)
    save_pytree(tmp_path / "all", params, metadata={"names": list(models)})
    loaded, meta = load_pytree(tmp_path / "all")
    assert meta["names"] == list(models)
    for name, model in models.items():
        np.testing.assert_array_equal(
            np.asarray(model.log_prob(loaded[name], x[:20])), np.asarray(model.log_prob(params[name], x[:20]))
        )
        assert model.sample(loaded[name], jax.random.PRNGKey(1), 5).shape == (5, 3)


def test_bad_input():
    x = _blobs(50, 9)
    with pytest.raises(ValueError, match=r"num_components \(k\) must be >= 1"):
        gmm(0)
    with pytest.raises(ValueError, match="exceeds the number of samples n = 50"):
        gmm(51).fit(jax.random.PRNGKey(0), x)
    with pytest.raises(ValueError, match="covariance must be one of"):
        gmm(2, "banded")
    with pytest.raises(ValueError, match="reg_covar must be finite and >= 0"):
        gmm(2, reg_covar=-1.0)
    bad = x.copy()
    bad[4, 2] = np.nan
    with pytest.raises(ValueError, match="NaN or inf"):
        gmm(2).fit(jax.random.PRNGKey(0), bad)
    model = gmm(2, "diag")
    params = model.from_moments(np.array([0.5, 0.5]), x[:2], np.ones((2, 3)))
    with pytest.raises(ValueError, match="model has dim 3 but the query has dim 2"):
        model.log_prob(params, x[:, :2])
    singular = np.column_stack([x[:, 0], x[:, 1], x[:, 0] - x[:, 1]])
    with pytest.raises(ValueError, match=r"singular \(rank 2 < d = 3\).*set reg_covar > 0"):
        gmm(2, "full", reg_covar=0.0).fit(jax.random.PRNGKey(0), singular)
    with pytest.raises(ValueError, match="singular"):
        gmm(2, "tied", reg_covar=0.0).fit(jax.random.PRNGKey(0), singular)
    # Full-rank data, but k = n puts one point in each component: zero covariances.
    with pytest.raises(ValueError, match="every restart produced a singular covariance"):
        gmm(4, "full", reg_covar=0.0).fit(jax.random.PRNGKey(0), x[:4])
