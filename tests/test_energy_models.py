"""Energy models: score = -grad V, batching, the plugin route, data-space bookkeeping, bad input."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from genlearn import core
from genlearn.energy import from_function, grid_log_z, mlp_energy, residual_energy, standardized

MODEL = mlp_energy(3, (16, 16))
PARAMS = MODEL.init(jax.random.PRNGKey(0))
ENERGY, SCORE = jax.jit(MODEL.energy), jax.jit(MODEL.score)
# examples are independent, so the gradient of the summed energy is the per-example gradient
GRAD_SUM = jax.jit(jax.grad(lambda p, y: jnp.sum(MODEL.energy(p, y)), argnums=1))


@given(st.integers(0, 2**30))
def test_score_is_minus_grad_energy_and_batches_agree(seed):
    x = jax.random.normal(jax.random.PRNGKey(seed), (5, 3))
    s = SCORE(PARAMS, x)
    np.testing.assert_allclose(s, -GRAD_SUM(PARAMS, x), rtol=1e-5, atol=1e-6)
    e = ENERGY(PARAMS, x)
    assert e.shape == (5,) and s.shape == (5, 3)
    np.testing.assert_allclose(ENERGY(PARAMS, x[3]), e[3], rtol=1e-5, atol=1e-6)


def test_jit_equals_no_jit_and_one_example_equals_batch():
    x = jax.random.normal(jax.random.PRNGKey(3), (4, 3))
    e, s = MODEL.energy(PARAMS, x), SCORE(PARAMS, x)
    np.testing.assert_allclose(ENERGY(PARAMS, x), e, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(MODEL.score(PARAMS, x[2]), s[2], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(MODEL.unnormalized_log_prob(PARAMS, x), -e)


def test_from_function_matches_the_analytic_gaussian():
    prec = jnp.array([[2.0, 0.5], [0.5, 1.0]])
    model = from_function(lambda p, x: 0.5 * x @ prec @ x, 2)
    x = jnp.array([[0.3, -1.2], [1.0, 2.0]])
    np.testing.assert_allclose(model.score({}, x), -x @ prec, rtol=1e-6)
    np.testing.assert_allclose(model.energy({}, x), 0.5 * jnp.sum((x @ prec) * x, 1), rtol=1e-6)


def test_float64_agrees_with_float32():
    x = jax.random.normal(jax.random.PRNGKey(1), (4, 3))
    e32, s32 = ENERGY(PARAMS, x), SCORE(PARAMS, x)
    with jax.enable_x64(True):
        p64 = jax.tree_util.tree_map(lambda a: jnp.asarray(np.asarray(a), jnp.float64), PARAMS)
        x64 = jnp.asarray(np.asarray(x), jnp.float64)
        e64, s64 = jax.jit(MODEL.energy)(p64, x64), jax.jit(MODEL.score)(p64, x64)
        assert e64.dtype == jnp.float64 and s64.dtype == jnp.float64
    np.testing.assert_allclose(e32, e64, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(s32, s64, rtol=1e-4, atol=1e-5)


def test_standardized_moves_the_density_with_the_same_log_z():
    # exp(-V_x) integrates to the same Z as exp(-V_u): check by quadrature in 2-D.
    base = from_function(lambda p, u: 0.5 * jnp.sum(u**2) + 0.3 * jnp.sin(u[0]), 2)
    mean, std = np.array([1.0, -2.0]), np.array([0.5, 3.0])
    data_model = standardized(base, mean, std)
    lz_u = grid_log_z(lambda u: base.unnormalized_log_prob({}, u), [-8, -8], [8, 8], 400)
    lz_x = grid_log_z(lambda x: data_model.unnormalized_log_prob({}, x), mean - 8 * std, mean + 8 * std, 400)
    assert abs(lz_u - lz_x) < 1e-4


def test_residual_energy_at_zero_correction_is_the_fitted_mixture():
    # V = -log q + E with E started at zero (zero last layer): exp(-V) is the EM-fitted mixture itself,
    # normalised (Z = 1), and training the correction leaves the base's params alone.
    x = np.asarray(jax.random.normal(jax.random.PRNGKey(0), (400, 2)) * 0.3
                   + jnp.array([[1.0, 0.0]]) * (jnp.arange(400) % 2)[:, None], np.float32)
    q = core.gaussian_mixture(2, 4)
    model = residual_energy(q, mlp_energy(2, (16, 16), confinement=float("inf"), zero_init=True))
    params = {**model.init(jax.random.PRNGKey(1)), "base": q.fit(jax.random.PRNGKey(2), x)}
    want = jax.vmap(q.log_prob, (None, 0))(params["base"], x[:50])
    np.testing.assert_allclose(model.unnormalized_log_prob(params, x[:50]), want, rtol=1e-6, atol=1e-6)
    assert abs(grid_log_z(lambda y: model.unnormalized_log_prob(params, y), [-3, -3], [4, 3], 500)) < 1e-3
    grads = jax.grad(lambda p: jnp.sum(model.energy(p, x[:50])))(params)
    assert all(float(jnp.max(jnp.abs(g))) == 0 for g in jax.tree_util.tree_leaves(grads["base"]))
    assert any(float(jnp.max(jnp.abs(g))) > 0 for g in jax.tree_util.tree_leaves(grads["correction"]))
    # a nonzero correction adds to -log q, and the score is that of the sum
    corr = jax.tree_util.tree_map(lambda a: a + 0.1, params["correction"])
    shifted = {**params, "correction": corr}
    e_corr = mlp_energy(2, (16, 16), confinement=float("inf")).energy(corr, x[:50])
    np.testing.assert_allclose(model.energy(shifted, x[:50]), e_corr - want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: from_function(lambda p, x: x * 2.0, 2), "must return a scalar"),
        (lambda: from_function(lambda p, x: x @ jnp.ones(5), 2), "failed on one example"),
        (lambda: from_function(lambda p, x: jnp.sum(x), 0), "dim must be a positive integer"),
        (lambda: mlp_energy(2, ()), "hidden must be a non-empty"),
        (lambda: mlp_energy(2, (8,), confinement=-1.0), "confinement must be > 0"),
        (lambda: mlp_energy(2, (8,), activation="nope"), "nope"),
        (lambda: standardized(MODEL, [0.0, 0.0, 0.0], [1.0, 0.0, 1.0]), "std must be positive"),
        (lambda: residual_energy(core.gaussian_mixture(2, 3), MODEL), "base has dimension 2 but the correction 3"),
        (lambda: residual_energy(core.gaussian_mixture(3, 3), lambda p, x: 0.0), "correction must be an EnergyModel"),
        (lambda: residual_energy(object(), MODEL), "base must be a genlearn.core.Distribution"),
        (lambda: MODEL.energy(PARAMS, jnp.zeros((4, 2))), r"shape \(3,\) or \(n, 3\)"),
        (lambda: MODEL.score(PARAMS, jnp.zeros((2, 4, 3))), r"shape \(3,\) or \(n, 3\)"),
    ],
)
def test_bad_input_raises_clearly(make, message):
    with pytest.raises(ValueError, match=message):
        make()
