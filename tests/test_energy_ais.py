"""Annealed importance sampling against exact log Z and 2-D quadrature; log_likelihood; bad input."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from genlearn.data import two_moons
from genlearn.energy import (
    ais_log_z,
    ais_log_z_from,
    beta_schedule,
    denoising_score_matching,
    gaussian_base,
    grid_log_z,
    log_likelihood,
    mlp_energy,
)
from genlearn.train import fit

CENTERS = 2.0 * jnp.stack([jnp.cos(jnp.arange(8) * math.pi / 4), jnp.sin(jnp.arange(8) * math.pi / 4)], 1)
STD = 0.3


def mixture_log_unnormalized(x):
    """``log sum_k exp(-|x - c_k|^2 / (2 s^2))``: ``Z = 8 * 2 pi s^2`` exactly."""
    return jax.scipy.special.logsumexp(-0.5 * jnp.sum((x - CENTERS) ** 2, -1) / STD**2)


LOG_Z_MIXTURE = math.log(8 * 2 * math.pi * STD**2)


def test_grid_quadrature_is_exact_for_the_mixture():
    lz = grid_log_z(jax.vmap(mixture_log_unnormalized), [-4, -4], [4, 4], 800)
    assert abs(lz - LOG_Z_MIXTURE) < 1e-3


@pytest.mark.parametrize("transition", ["mala", "hmc"])
def test_ais_matches_the_analytic_mixture(transition):
    mean, cov = jnp.zeros(2), 4.0 * jnp.eye(2)
    res = ais_log_z(mixture_log_unnormalized, jax.random.PRNGKey(0), mean, cov, num_chains=500,
                    num_temperatures=200, transition=transition)
    assert abs(res.log_z - LOG_Z_MIXTURE) < 0.05, res.log_z
    assert res.stderr < 0.05 and 0 < res.ess <= 500 and 0.2 < res.acceptance_rate < 0.95
    # the estimator is honest: the error is within a few of its own standard errors (or tiny)
    assert abs(res.log_z - LOG_Z_MIXTURE) < max(4 * res.stderr, 0.02)


def test_ais_from_the_target_itself_is_exact():
    # annealing from q = the normalised target: every log weight is log Z exactly (ESS = N), whatever the MCMC
    def log_q(x):
        return mixture_log_unnormalized(x) - LOG_Z_MIXTURE

    def sample_q(key, n):
        k_c, k_z = jax.random.split(key)
        return CENTERS[jax.random.randint(k_c, (n,), 0, 8)] + STD * jax.random.normal(k_z, (n, 2))

    shifted = lambda x: mixture_log_unnormalized(x) + 1.5  # noqa: E731  (Z times e^1.5)
    res = ais_log_z_from(shifted, jax.random.PRNGKey(0), log_q, sample_q, 2, step_size=0.25 * STD**2,
                         num_chains=200, num_temperatures=20)
    np.testing.assert_allclose(res.log_weights, LOG_Z_MIXTURE + 1.5, atol=2e-4)
    assert res.ess == pytest.approx(200, rel=1e-6) and res.stderr < 1e-4


def test_ais_log_z_is_ais_from_its_gaussian():
    mean, cov = jnp.array([0.5, -0.2]), jnp.array([[4.0, 0.5], [0.5, 3.0]])
    chol = jnp.linalg.cholesky(cov)
    log_q = lambda x: jax.scipy.stats.multivariate_normal.logpdf(x, mean, cov)  # noqa: E731
    sample_q = lambda key, n: mean + jax.random.normal(key, (n, 2)) @ chol.T  # noqa: E731
    a = ais_log_z(mixture_log_unnormalized, jax.random.PRNGKey(4), mean, cov, num_chains=100, num_temperatures=30)
    b = ais_log_z_from(mixture_log_unnormalized, jax.random.PRNGKey(4), log_q, sample_q, 2,
                       step_size=0.25 * float(jnp.min(jnp.linalg.eigvalsh(cov))), num_chains=100, num_temperatures=30)
    # the same draws and moves; float32 rounding of the two log q's flips a rare accept/reject
    assert np.median(np.abs(a.log_weights - b.log_weights)) < 1e-4 and abs(a.log_z - b.log_z) < 5e-3


@pytest.fixture(scope="module")
def trained_moons_ebm():
    """A small EBM trained by denoising score matching on two moons (standardised scale)."""
    data = two_moons(jax.random.PRNGKey(0), 4000) * 1.5
    model = mlp_energy(2, (32, 32))
    params = model.init(jax.random.PRNGKey(1))
    res = fit(denoising_score_matching(model, 0.1), params, data, optimizer=optax.adam(3e-3), steps=300,
              batch_size=256, key=jax.random.PRNGKey(2), progress=False)
    return model, res.params, data


def test_ais_matches_quadrature_for_a_trained_ebm(trained_moons_ebm):
    model, params, data = trained_moons_ebm
    f = lambda x: model.unnormalized_log_prob(params, x)  # noqa: E731
    lz_grid = grid_log_z(f, [-9, -9], [9, 9], 600)
    ll = log_likelihood(model, params, data[:500], jax.random.PRNGKey(3), num_chains=500, num_temperatures=200)
    assert abs(ll.log_z - lz_grid) < 0.05, (ll.log_z, lz_grid)
    # log p = -V - log Z, and the quadrature NLL agrees with the AIS one
    np.testing.assert_allclose(ll.log_prob, np.asarray(f(data[:500])) - ll.log_z, rtol=1e-5, atol=1e-5)
    nll_grid = -float(jnp.mean(f(data[:500]))) + lz_grid
    assert abs(ll.nll - nll_grid) < 0.05 and ll.log_prob.shape == (500,)


def test_beta_schedules():
    g = np.asarray(beta_schedule(10))
    assert g[0] == 0 and g[-1] == pytest.approx(1.0) and np.all(np.diff(g) > 0)
    np.testing.assert_allclose(np.diff(np.log(g[1:])), np.log(1e4) / 9, rtol=1e-4)  # geometric
    np.testing.assert_allclose(beta_schedule(4, "linear"), [0, 0.25, 0.5, 0.75, 1.0])


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: ais_log_z(mixture_log_unnormalized, jax.random.PRNGKey(0), jnp.zeros(2),
                           jnp.array([[1.0, 2.0], [2.0, 1.0]])), "positive definite"),
        (lambda: ais_log_z(mixture_log_unnormalized, jax.random.PRNGKey(0), jnp.zeros(2), jnp.eye(3)),
         r"base_cov must have shape \(2, 2\)"),
        (lambda: ais_log_z(mixture_log_unnormalized, jax.random.PRNGKey(0), jnp.zeros(2), jnp.eye(2),
                           num_chains=1), "num_chains must be an integer >= 2"),
        (lambda: ais_log_z(mixture_log_unnormalized, jax.random.PRNGKey(0), jnp.zeros(2), jnp.eye(2),
                           num_temperatures=-3), "num_temperatures must be an integer >= 1"),
        (lambda: ais_log_z(mixture_log_unnormalized, jax.random.PRNGKey(0), jnp.zeros(2), jnp.eye(2),
                           step_size=0.0), "step_size must be a positive"),
        (lambda: ais_log_z(mixture_log_unnormalized, jax.random.PRNGKey(0), jnp.zeros(2), jnp.eye(2),
                           transition="gibbs"), "transition must be 'mala' or 'hmc'"),
        (lambda: ais_log_z(lambda x: x, jax.random.PRNGKey(0), jnp.zeros(2), jnp.eye(2)), "must return a scalar"),
        (lambda: ais_log_z_from(mixture_log_unnormalized, jax.random.PRNGKey(0), mixture_log_unnormalized,
                                lambda k, n: jnp.zeros((n, 3)), 2, step_size=0.1), r"must return shape \(n, 2\)"),
        (lambda: ais_log_z_from(mixture_log_unnormalized, jax.random.PRNGKey(0), lambda x: x,
                                lambda k, n: jnp.zeros((n, 2)), 2, step_size=0.1), "log_base must return a scalar"),
        (lambda: ais_log_z_from(mixture_log_unnormalized, jax.random.PRNGKey(0), mixture_log_unnormalized,
                                lambda k, n: jnp.zeros((n, 2)), 2, step_size=-1.0), "step_size must be a positive"),
        (lambda: beta_schedule(5, "cosine"), "unknown schedule"),
        (lambda: gaussian_base(jnp.array([[jnp.nan, 1.0], [0.0, 1.0]])), "NaN"),
        (lambda: log_likelihood(mlp_energy(2, (4,)), None, jnp.zeros((5, 3)), jax.random.PRNGKey(0)),
         r"x must have shape \(n, 2\)"),
        (lambda: grid_log_z(jax.vmap(mixture_log_unnormalized), [1, 1], [0, 2]), "high > low"),
    ],
)
def test_bad_input_raises_clearly(call, message):
    with pytest.raises(ValueError, match=message):
        call()
