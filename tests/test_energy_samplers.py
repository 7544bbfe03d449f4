"""MCMC samplers against known 2-D targets, against plain blackjax, and on bad input / divergence."""

import math

import blackjax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from genlearn.energy import (
    divergence_rate,
    effective_sample_size,
    hmc,
    langevin,
    mala,
    nuts,
    rhat,
    sample_chains,
    summarize,
)
from genlearn.metrics import mmd_permutation_test

MEAN = jnp.array([1.0, -1.0])
COV = jnp.array([[1.0, 0.8], [0.8, 1.0]])
PREC = jnp.linalg.inv(COV)


def gauss_logpdf(x):
    d = x - MEAN
    return -0.5 * d @ PREC @ d


RING = 2.0 * jnp.stack([jnp.cos(jnp.arange(8) * math.pi / 4), jnp.sin(jnp.arange(8) * math.pi / 4)], 1)
RING_STD = 0.6


def ring_logpdf(x):
    return jax.scipy.special.logsumexp(-0.5 * jnp.sum((x - RING) ** 2, 1) / RING_STD**2)


def exact_gauss(key, n):
    return MEAN + jax.random.normal(key, (n, 2)) @ jnp.linalg.cholesky(COV).T


def exact_ring(key, n):
    k1, k2 = jax.random.split(key)
    return RING[jax.random.randint(k1, (n,), 0, 8)] + RING_STD * jax.random.normal(k2, (n, 2))


def _moments_within_3se(x, exact_mean, exact_cov):
    """Sample mean and covariance of iid rows ``x`` within 3 standard errors of the truth."""
    x = np.asarray(x, np.float64)
    n = x.shape[0]
    mean = x.mean(0)
    se_mean = x.std(0, ddof=1) / math.sqrt(n)
    np.testing.assert_array_less(np.abs(mean - exact_mean), 3 * se_mean)
    d = x - np.asarray(exact_mean)
    prods = d[:, :, None] * d[:, None, :]  # unbiased estimates of cov entries (known mean)
    se_cov = prods.std(0, ddof=1) / math.sqrt(n)
    np.testing.assert_array_less(np.abs(prods.mean(0) - np.asarray(exact_cov)), 3 * se_cov)


N = 2000  # independent chains; the last state of each is one draw


@pytest.mark.parametrize("target", ["gaussian", "ring"])
@pytest.mark.parametrize("kind", ["mala", "hmc"])
def test_mala_hmc_match_moments_and_mmd_of_exact_samples(kind, target):
    logpdf, exact = (gauss_logpdf, exact_gauss) if target == "gaussian" else (ring_logpdf, exact_ring)
    # exact moments: the ring mixture has mean 0 and covariance (r^2 / 2 + std^2) I
    true_mean, true_cov = (MEAN, COV) if target == "gaussian" else (jnp.zeros(2), (2.0 + RING_STD**2) * jnp.eye(2))
    sampler = mala(logpdf, 0.2, dim=2) if kind == "mala" else hmc(logpdf, 0.25, 5, dim=2)
    k0, k1, k3 = jax.random.split(jax.random.PRNGKey(0), 3)
    # start far from the target: a broad isotropic Gaussian (rotation-symmetric, so for the ring every
    # mode starts with the same expected share; within-mode shape and hops must come from the kernel)
    x0 = 3.0 * jax.random.normal(k0, (N, 2))
    samples, info = sample_chains(sampler, k1, x0, 1, burn_in=150 if kind == "mala" else 60)
    x = samples[:, -1]
    assert divergence_rate(info) == 0.0
    _moments_within_3se(x, true_mean, true_cov)
    # MMD to exact samples indistinguishable at n = 2000 (permutation test)
    test = mmd_permutation_test(x, exact(k3, N), jax.random.PRNGKey(4), num_permutations=50, max_samples=N)
    assert test.p_value > 0.01, test


def test_unadjusted_langevin_has_its_known_biased_stationary_variance():
    # ULA on N(0, 1) with step eps: x' = (1 - eps) x + sqrt(2 eps) xi, stationary variance 1 / (1 - eps / 2).
    eps = 0.4
    sampler = langevin(lambda x: -0.5 * jnp.sum(x**2), eps, dim=1)
    samples, info = sample_chains(sampler, jax.random.PRNGKey(0), jnp.zeros((N, 1)), 1, burn_in=60)
    x = np.asarray(samples[:, -1, 0], np.float64)
    var_true = 1.0 / (1.0 - eps / 2)
    se = var_true * math.sqrt(2.0 / N)
    assert abs(x.var() - var_true) < 3 * se
    assert np.all(np.asarray(info.acceptance_rate) == 1.0)


def test_langevin_step_clips_the_gradient_and_scales_the_noise():
    sampler = langevin(lambda x: -50.0 * jnp.sum(x**2), 0.01, noise_scale=0.5, grad_clip=1.0)
    state = sampler.init(jnp.array([1.0, -0.001]))
    key = jax.random.PRNGKey(3)
    new, info = sampler.step(key, state)
    grad = jnp.clip(-100.0 * state.position, -1.0, 1.0)
    expected = state.position + 0.01 * grad + 0.5 * math.sqrt(0.02) * jax.random.normal(key, (2,))
    np.testing.assert_allclose(new.position, expected, rtol=1e-6)
    assert bool(info.is_accepted) and not bool(info.is_divergent)


@pytest.mark.parametrize("kind", ["mala", "hmc", "nuts"])
def test_steps_equal_plain_blackjax(kind):
    ours = {"mala": lambda: mala(gauss_logpdf, 0.3, dim=2),
            "hmc": lambda: hmc(gauss_logpdf, 0.2, 7, dim=2),
            "nuts": lambda: nuts(gauss_logpdf, 0.3, dim=2)}[kind]()
    theirs = {"mala": lambda: blackjax.mala(gauss_logpdf, 0.3),
              "hmc": lambda: blackjax.hmc(gauss_logpdf, 0.2, jnp.ones(2), 7),
              "nuts": lambda: blackjax.nuts(gauss_logpdf, 0.3, jnp.ones(2))}[kind]()
    s1, s2 = ours.init(jnp.array([0.5, 0.5])), theirs.init(jnp.array([0.5, 0.5]))
    step1, step2 = jax.jit(ours.step), jax.jit(theirs.step)
    for t in range(5):
        key = jax.random.PRNGKey(t)
        s1, i1 = step1(key, s1)
        s2, i2 = step2(key, s2)
        np.testing.assert_allclose(s1.position, s2.position, rtol=1e-6)
        np.testing.assert_allclose(i1.acceptance_rate, i2.acceptance_rate, rtol=1e-6)


def test_vmap_over_chains_equals_a_loop_and_jit_equals_no_jit():
    sampler = mala(gauss_logpdf, 0.2, dim=2)
    x0 = jnp.array([[0.0, 0.0], [2.0, -3.0]])
    key = jax.random.PRNGKey(5)
    samples, _ = sample_chains(sampler, key, x0, 2, burn_in=1, thin=2)
    assert samples.shape == (2, 2, 2)
    for c, kc in enumerate(jax.random.split(key, 2)):
        state, kept = sampler.init(x0[c]), []
        for t, kt in enumerate(jax.random.split(kc, 1 + 2 * 2)):  # no jit: one step at a time
            state, _ = sampler.step(kt, state)
            if t >= 1 and (t - 1) % 2 == 1:
                kept.append(state.position)
        np.testing.assert_allclose(samples[c], jnp.stack(kept), rtol=1e-5, atol=1e-6)


def _nan_outside(x):
    # a target whose log-density is NaN beyond |x| > 3 (a "diverging" energy)
    return jnp.where(jnp.all(jnp.abs(x) < 3.0), -0.5 * jnp.sum(x**2), jnp.nan)


@pytest.mark.parametrize("make", [lambda: langevin(_nan_outside, 2.0, dim=2), lambda: mala(_nan_outside, 2.0, dim=2),
                                  lambda: hmc(_nan_outside, 2.0, 3, dim=2)])
def test_divergence_is_reported_and_never_propagated(make):
    samples, info = sample_chains(make(), jax.random.PRNGKey(0), jnp.full((64, 2), 2.5), 20)
    assert np.all(np.isfinite(np.asarray(samples)))
    assert divergence_rate(info) > 0.1
    np.testing.assert_array_equal(np.asarray(info.acceptance_rate)[np.asarray(info.is_divergent)], 0.0)


def test_diagnostics_ess_and_rhat():
    iid = jax.random.normal(jax.random.PRNGKey(0), (4, 500, 2))
    ess = effective_sample_size(iid)
    assert np.all((ess > 1400) & (ess < 2800)), ess
    assert np.all(np.abs(rhat(iid) - 1.0) < 0.02)
    stuck = iid + jnp.arange(4.0)[:, None, None]  # chains in different places
    assert np.all(rhat(stuck) > 1.5)
    # an autocorrelated AR(1) chain (rho = 0.9) has ESS ~ n (1 - rho) / (1 + rho)
    e = np.random.default_rng(1).normal(size=(4, 2000, 2))
    chain = np.zeros_like(e)
    for t in range(1, 2000):
        chain[:, t] = 0.9 * chain[:, t - 1] + math.sqrt(1 - 0.81) * e[:, t]
    ess_ar = effective_sample_size(chain)
    assert np.all((ess_ar > 0.5 * 8000 / 19) & (ess_ar < 2 * 8000 / 19)), ess_ar
    summary = summarize(iid)
    assert set(summary) >= {"ess", "min_ess", "rhat", "max_rhat"}


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: mala(gauss_logpdf, 0.0), "step_size must be a positive"),
        (lambda: langevin(gauss_logpdf, -1.0), "step_size must be a positive"),
        (lambda: hmc(gauss_logpdf, 0.1, 0, dim=2), "num_integration_steps must be an integer >= 1"),
        (lambda: langevin(gauss_logpdf, 0.1, grad_clip=0.0), "grad_clip must be a positive"),
        (lambda: langevin(gauss_logpdf, 0.1, noise_scale=-1.0), "noise_scale must be >= 0"),
        (lambda: mala(lambda x: x, 0.1, dim=2), "must return a scalar"),
        (lambda: mala(gauss_logpdf, 0.1, dim=2).init(jnp.zeros(3)), r"shape \(2,\)"),
        (lambda: sample_chains(mala(gauss_logpdf, 0.1, dim=2), jax.random.PRNGKey(0), jnp.zeros((4, 3)), 5),
         r"\(C, 2\)"),
        (lambda: sample_chains(mala(gauss_logpdf, 0.1, dim=2), jax.random.PRNGKey(0), jnp.zeros((4, 2)), -1),
         "num_steps must be an integer >= 1"),
        (lambda: sample_chains(mala(gauss_logpdf, 0.1, dim=2), jax.random.PRNGKey(0), jnp.zeros((4, 2)), 5,
                               burn_in=-2), "burn_in must be a non-negative"),
        (lambda: sample_chains(mala(gauss_logpdf, 0.1, dim=2), jax.random.PRNGKey(0),
                               jnp.full((4, 2), jnp.nan), 5), "NaN"),
        (lambda: effective_sample_size(jnp.zeros((10, 2))), r"\(chains, draws, dim\)"),
        (lambda: rhat(jnp.zeros((1, 10, 2))), "at least 2 chains"),
    ],
)
def test_bad_input_raises_clearly(call, message):
    with pytest.raises(ValueError, match=message):
        call()
