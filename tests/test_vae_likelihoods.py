"""VAE decoder likelihoods against references: scipy.stats, distrax, and direct sums over the levels."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats as st
from hypothesis import given
from hypothesis import strategies as hst

from genlearn import vae as V


def _raw(key, shape, scale=1.5):
    return scale * jax.random.normal(jax.random.PRNGKey(key), shape)


def test_gaussian_fixed_and_learned_against_scipy_and_distrax():
    x = np.asarray(_raw(0, (4, 5)), np.float64)
    for lik in (V.gaussian(0.3), V.gaussian()):
        raw = np.asarray(_raw(1, (4, 5, lik.params_per_dim)), np.float64)
        mu = raw[..., 0]
        sigma = np.full_like(mu, 0.3) if lik.params_per_dim == 1 else np.exp(-7 + np.logaddexp(0, raw[..., 1] + 7))
        ref = st.norm.logpdf(x, mu, sigma).sum(-1)
        np.testing.assert_allclose(lik.log_prob(jnp.asarray(raw, jnp.float32), jnp.asarray(x, jnp.float32)), ref,
                                   rtol=1e-5)
        np.testing.assert_allclose(lik.to_distrax(jnp.asarray(raw)).log_prob(jnp.asarray(x)), ref, rtol=1e-5)
        np.testing.assert_allclose(lik.mean(jnp.asarray(raw)), mu, rtol=1e-6)
    with pytest.raises(ValueError, match="scale must be a finite number > 0"):
        V.gaussian(0.0)


def test_bernoulli_against_scipy_and_distrax():
    lik = V.bernoulli()
    raw = _raw(2, (6, 7, 1), 3.0)
    x = (jax.random.uniform(jax.random.PRNGKey(3), (6, 7)) < 0.5).astype(jnp.float32)
    p = 1.0 / (1.0 + np.exp(-np.asarray(raw[..., 0], np.float64)))
    ref = st.bernoulli.logpmf(np.asarray(x), p).sum(-1)
    np.testing.assert_allclose(lik.log_prob(raw, x), ref, rtol=1e-5)
    np.testing.assert_allclose(lik.to_distrax(raw).log_prob(x), ref, rtol=1e-5)
    draws = lik.sample(jnp.broadcast_to(raw[:1], (4000, 7, 1)), jax.random.PRNGKey(4))
    np.testing.assert_allclose(draws.mean(0), p[0], atol=0.03)


def _scipy_discretized(raw, x, levels, m):
    """The mixture of discretised logistics straight from the definition, in float64."""
    raw = np.asarray(raw, np.float64)
    h = 1.0 / (levels - 1)
    if m == 1:
        logw, mu, ls = np.zeros_like(raw[..., :1]), raw[..., 0:1], raw[..., 1:2]
    else:
        logw = raw[..., :m] - np.logaddexp.reduce(raw[..., :m], axis=-1, keepdims=True)
        mu, ls = raw[..., m:2 * m], raw[..., 2 * m:]
    s = np.exp(-7 + np.logaddexp(0, ls + 7))
    c = 2 * np.asarray(x, np.float64)[..., None] * h - 1
    upper = np.where(x[..., None] >= levels - 1, 1.0, st.logistic.cdf(c + h, mu, s))
    lower = np.where(x[..., None] <= 0, 0.0, st.logistic.cdf(c - h, mu, s))
    return np.log(np.sum(np.exp(logw) * (upper - lower), -1)).sum(-1)


@pytest.mark.parametrize("m", [1, 3])
def test_discretized_logistic_against_scipy_distrax_and_sums_to_one(m):
    levels = 17
    lik = V.discretized_logistic(levels, m)
    assert lik.params_per_dim == (2 if m == 1 else 3 * m) and lik.discrete_levels == levels
    raw = _raw(5, (3, 8, lik.params_per_dim), 1.0)
    x = jax.random.randint(jax.random.PRNGKey(6), (3, 8), 0, levels).astype(jnp.float32)
    ref = _scipy_discretized(raw, np.asarray(x), levels, m)

    @jax.jit
    def everything(raw, x):
        per_level = jax.vmap(lambda k: lik.log_prob(raw[:, :1], jnp.full((3, 1), k)))(jnp.arange(levels, 
                                                                                                dtype=jnp.float32))
        draws = lik.sample(jnp.broadcast_to(raw[:1, :1], (20000, 1, lik.params_per_dim)), jax.random.PRNGKey(7))
        return (lik.log_prob(raw, x), lik.to_distrax(raw).log_prob(x), per_level, lik.mean(raw[:, :1])[:, 0],
                draws[:, 0])

    lp, lp_distrax, per_level, mean, draws = everything(raw, x)
    np.testing.assert_allclose(lp, ref, rtol=1e-5)
    np.testing.assert_allclose(lp_distrax, ref, rtol=1e-5)  # distrax.Quantized(Logistic)
    # a direct sum of P(x_1 = k) over the levels of one pixel is 1
    np.testing.assert_allclose(jax.nn.logsumexp(per_level, 0), 0.0, atol=1e-6)
    # the conditional mean is sum_k k P(k), and samples follow P
    np.testing.assert_allclose(mean, np.sum(np.exp(per_level) * np.arange(levels)[:, None], 0), rtol=1e-5)
    freq = np.bincount(np.asarray(draws, int), minlength=levels) / 20000
    np.testing.assert_allclose(freq, np.exp(per_level[:, 0]), atol=0.015)


_tail_value_and_grad = jax.jit(lambda r, x: (V.discretized_logistic(17).log_prob(r, x),
                                             jax.grad(lambda u: V.discretized_logistic(17).log_prob(u, x)[0])(r)))


@given(mu=hst.floats(-30, 30), log_s=hst.floats(-9, 4), k=hst.integers(0, 16))
def test_discretized_logistic_is_finite_in_the_tails(mu, log_s, k):
    """Far-away or very sharp logistics: log P is finite, <= 0, matches float64 scipy, with a finite gradient."""
    raw = jnp.asarray([[[mu, log_s]]], jnp.float32)
    x = jnp.asarray([[float(k)]])
    lp, g = _tail_value_and_grad(raw, x)
    assert bool(jnp.isfinite(lp[0])) and float(lp[0]) <= 1e-6
    ref = _scipy_discretized(np.asarray(raw), np.asarray(x), 17, 1)[0]
    if ref > -60:  # beyond, float64 scipy underflows where the stable form does not
        np.testing.assert_allclose(float(lp[0]), ref, rtol=1e-3, atol=1e-4)
    assert bool(jnp.all(jnp.isfinite(g)))


def test_log_sub_sigmoid_is_exact_in_float64():
    a = np.array([-40.0, -3.0, 0.5, 3.0, 40.0, 60.0])
    b = a - np.array([1.0, 1e-3, 2.0, 0.1, 5.0, 1.0])
    with jax.enable_x64(True):
        got = np.asarray(V.log_sub_sigmoid(jnp.asarray(a), jnp.asarray(b)))
    import mpmath

    with mpmath.workdps(80):
        ref = [float(mpmath.log(1 / (1 + mpmath.exp(-mpmath.mpf(u))) - 1 / (1 + mpmath.exp(-mpmath.mpf(v)))))
               for u, v in zip(a, b)]
    np.testing.assert_allclose(got, ref, rtol=1e-12)


def test_bad_likelihood_arguments():
    with pytest.raises(ValueError, match="levels must be an integer >= 2"):
        V.discretized_logistic(1)
    with pytest.raises(ValueError, match="num_mixtures must be an integer >= 1"):
        V.discretized_logistic(17, 0)
