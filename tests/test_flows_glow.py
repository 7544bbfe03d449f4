"""Glow pieces: ActNorm's data-dependent initialisation, the LU-parametrised linear map,
batch norm with explicit running statistics (train vs eval mode), the Glow flow, and
bad input. (Round trip, log-det vs slogdet(jacfwd), jit/vmap and float64 of actnorm,
lu_linear, eval-mode batch norm and glow run through the registry in tests/test_bijectors.py.)"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from genlearn import flows
from tests.helpers import perturb

# badly scaled, shifted, correlated 3-D data
_A = jnp.array([[4.0, 0.0, 0.0], [1.0, 0.2, 0.0], [0.0, 0.5, 0.05]])
X = jax.random.normal(jax.random.PRNGKey(0), (512, 3)) @ _A.T + jnp.array([10.0, -3.0, 0.5])


def test_actnorm_data_init_standardises_its_batch():
    p = flows.actnorm_data_init(X)
    z = jax.vmap(flows.actnorm(3).inverse, (None, 0))(p, X)
    np.testing.assert_allclose(z.mean(0), 0.0, atol=1e-4)
    np.testing.assert_allclose(z.std(0), 1.0, atol=1e-4)
    # and the identity initialisation of the bijector protocol
    p0 = flows.actnorm(3).init(jax.random.PRNGKey(0))
    np.testing.assert_allclose(flows.actnorm(3).apply(p0, X[0]), X[0])


def test_glow_data_init_whitens_the_mean_and_total_variance():
    """At initialisation couplings are the identity and LU maps are rotations, so
    after the per-layer ActNorm initialisation the latent batch has mean 0 and
    total variance d (a rotation keeps the trace of the covariance)."""
    flow = flows.glow(3, num_layers=3, hidden=(16,))
    params = flow.init(jax.random.PRNGKey(1), X)
    z = jax.jit(flow.inverse)(params, X)
    np.testing.assert_allclose(z.mean(0), 0.0, atol=1e-3)
    np.testing.assert_allclose(z.var(0).sum(), 3.0, rtol=1e-3)
    # the outermost ActNorm (met first on the way x -> z) is exactly actnorm_data_init(X)
    last = params["bijector"][-1]
    ref = flows.actnorm_data_init(X)
    np.testing.assert_allclose(last["shift"], ref["shift"], rtol=1e-5)
    np.testing.assert_allclose(last["log_scale"], ref["log_scale"], rtol=1e-5)
    # data init is far better than the identity on badly scaled data
    ident = flows.glow(3, num_layers=3, hidden=(16,), data_init=False).init(jax.random.PRNGKey(1))
    log_prob = jax.jit(flow.log_prob)
    assert float(log_prob(params, X).mean()) > float(log_prob(ident, X).mean()) + 10.0
    # and the density stays consistent with sampling
    params = perturb(params, jax.random.PRNGKey(2), 0.02)
    x, lp = jax.jit(flow.sample_and_log_prob, static_argnums=2)(params, jax.random.PRNGKey(3), 64)
    np.testing.assert_allclose(log_prob(params, x), lp, rtol=1e-4, atol=1e-3)


def test_glow_before_data_init_is_an_error():
    flow = flows.glow(3, num_layers=2, hidden=(8,))
    with pytest.raises(ValueError, match="data-dependent initialisation"):
        flow.init(jax.random.PRNGKey(0))
    with pytest.raises(ValueError, match=r"shape \(n, 3\)"):
        flow.init(jax.random.PRNGKey(0), X[:, :2])
    with pytest.raises(ValueError, match="at least 2 examples"):
        flow.init(jax.random.PRNGKey(0), X[:1])
    with pytest.raises(ValueError, match="NaN or inf"):
        flow.init(jax.random.PRNGKey(0), X.at[3, 1].set(jnp.nan))
    cond = flows.glow(3, num_layers=1, hidden=(8,), context_dim=2)
    with pytest.raises(ValueError, match="conditional"):
        cond.init(jax.random.PRNGKey(0), X)
    params = cond.init(jax.random.PRNGKey(0), X, jnp.ones(2))
    assert np.all(np.isfinite(np.asarray(jax.jit(cond.log_prob)(params, X[:8], jnp.ones(2)))))


def test_lu_linear_log_det_is_cheap_and_exact():
    d = 6
    lu = flows.lu_linear(d, key=jax.random.PRNGKey(3))
    p0 = lu.init(jax.random.PRNGKey(0))
    w0 = jax.jacfwd(lu.apply, argnums=1)(p0, jnp.zeros(d))
    np.testing.assert_allclose(w0.T @ w0, np.eye(d), atol=1e-5)  # starts as a rotation
    p = perturb(p0, jax.random.PRNGKey(1), 0.3)
    w = jax.jacfwd(lu.apply, argnums=1)(p, jnp.zeros(d))
    z = jax.random.normal(jax.random.PRNGKey(2), (d,))
    x, ld = lu.apply_and_log_det(p, z)
    np.testing.assert_allclose(x, w @ z, rtol=1e-5, atol=1e-5)  # linear
    np.testing.assert_allclose(ld, jnp.sum(p["log_scale"]), rtol=1e-6)
    np.testing.assert_allclose(ld, jnp.linalg.slogdet(w)[1], atol=1e-4)
    # only the strictly triangular parts are parameters
    p2 = {**p, "lower": p["lower"] + jnp.triu(jnp.ones((d, d))), "upper": p["upper"] + jnp.tril(jnp.ones((d, d)))}
    np.testing.assert_allclose(lu.apply(p2, z), x, rtol=1e-6)
    assert flows.invertible_linear is flows.lu_linear


def test_batch_norm_train_mode_statistics_and_log_det():
    bn = flows.batch_norm(3, momentum=0.8)
    params = perturb(bn.init(jax.random.PRNGKey(0)), jax.random.PRNGKey(1), 0.3)
    state = bn.init_state()
    z, ld, new = jax.jit(bn.train_inverse)(params, state, X)
    # normalised by the batch's own statistics, then scaled and shifted
    np.testing.assert_allclose(z.mean(0), params["beta"], atol=1e-4)
    np.testing.assert_allclose(z.std(0), jnp.exp(params["log_gamma"]), rtol=1e-4)
    # the log-det treats the batch statistics as constants: the eval-mode map with them as state
    batch_state = {"mean": X.mean(0), "var": X.var(0)}
    ev = bn.eval_params(params, batch_state)
    jac = jax.jacfwd(bn.bijector.inverse, argnums=1)(ev, X[0])
    np.testing.assert_allclose(ld, jnp.full(X.shape[0], jnp.linalg.slogdet(jac)[1]), rtol=1e-5)
    # the train-mode pass is inverted by the eval-mode bijector with the batch's statistics
    x_back = jax.vmap(bn.bijector.apply, (None, 0))(ev, z)
    np.testing.assert_allclose(x_back, X, rtol=1e-5, atol=1e-4)
    # running statistics: an exponential moving average, returned, never stored
    np.testing.assert_allclose(new["mean"], 0.8 * state["mean"] + 0.2 * X.mean(0), rtol=1e-5)
    np.testing.assert_allclose(new["var"], 0.8 * state["var"] + 0.2 * X.var(0), rtol=1e-5)
    np.testing.assert_array_equal(bn.init_state()["mean"], 0.0)


def test_batch_norm_state_is_threaded_through_scan_and_eval_uses_it():
    bn = flows.batch_norm(3, momentum=0.5)
    params = bn.init(jax.random.PRNGKey(0))

    def step(state, xb):
        z, ld, state = bn.train_inverse(params, state, xb)
        return state, -ld.mean()

    state, _ = jax.lax.scan(step, bn.init_state(), X.reshape(16, 32, 3))
    np.testing.assert_allclose(state["mean"], X.mean(0), atol=0.25 * float(X.std(0).max()))
    # eval mode: the bijector with the running statistics standardises fresh data
    ev = bn.eval_params(params, state)
    z = jax.vmap(bn.bijector.inverse, (None, 0))(ev, X)
    np.testing.assert_allclose(z.mean(0), 0.0, atol=0.3)
    np.testing.assert_allclose(z.std(0), 1.0, atol=0.3)
    # and in eval mode the output of one example does not depend on the rest of the batch
    np.testing.assert_allclose(bn.bijector.inverse(ev, X[0]), z[0], rtol=1e-6)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: flows.batch_norm(3, momentum=1.0), r"momentum must be in \[0, 1\)"),
        (lambda: flows.batch_norm(3, eps=0.0), "eps must be > 0"),
        (lambda: flows.batch_norm(0), "dim"),
        (lambda: flows.batch_norm(3).train_inverse(flows.batch_norm(3).init(None), flows.batch_norm(3).init_state(),
                                                   X[:1]), "n >= 2"),
        (lambda: flows.batch_norm(2).train_inverse(flows.batch_norm(2).init(None), flows.batch_norm(2).init_state(),
                                                   X), r"shape \(n, 2\)"),
        (lambda: flows.actnorm_data_init(X[:1]), "at least 2 examples"),
        (lambda: flows.actnorm_data_init(X[0]), r"shape \(n, d\)"),
        (lambda: flows.actnorm_data_init(X, eps=-1.0), "eps"),
        (lambda: flows.glow(1), "dim must be an integer >= 2"),
        (lambda: flows.glow(3, num_layers=0), "num_layers"),
        (lambda: flows.glow(3, mask="diagonal"), "unknown mask"),
        (lambda: flows.glow(3, seed=1.5), "seed"),
        (lambda: flows.lu_linear(0), "dim"),
    ],
)
def test_invalid_hyperparameters(call, match):
    with pytest.raises(ValueError, match=match):
        call()


@pytest.mark.parametrize("dim", [2, 4])
def test_glow_default_base_is_a_t_with_half_the_usual_df(dim):
    from genlearn import core

    flow, ref = flows.glow(dim, num_layers=1, hidden=(8,)), core.student_t(dim, df=max(2.5 * dim, 5.0))
    z = jax.random.normal(jax.random.PRNGKey(1), (7, dim)) * 3.0
    got = jax.vmap(flow.base.log_prob, (None, 0))(None, z)
    np.testing.assert_allclose(got, jax.vmap(ref.log_prob, (None, 0))(None, z), rtol=1e-6)
    other = core.student_t(dim)  # df = max(5 d, 10): a different density in the tails
    assert not np.allclose(got, jax.vmap(other.log_prob, (None, 0))(None, z), rtol=1e-3)
