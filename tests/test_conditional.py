"""Conditional flows p(x | c): context plumbing, validation, and learning."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from genlearn import core, flows, losses, train

C = 3


@pytest.fixture(scope="module")
def cond_flow():
    flow = flows.realnvp(2, num_layers=4, hidden=(32, 32), context_dim=C)
    params = flow.init(jax.random.PRNGKey(0))
    params = jax.tree_util.tree_map(
        lambda p: p + 0.05 * jax.random.normal(jax.random.PRNGKey(1), p.shape, p.dtype), params)
    return flow, params


def test_context_broadcast_equals_per_row_and_changes_density(cond_flow):
    flow, params = cond_flow
    x = jax.random.normal(jax.random.PRNGKey(2), (5, 2))
    c = jnp.array([1.0, 0.0, 0.0])
    shared = flow.log_prob(params, x, c)
    rows = flow.log_prob(params, x, jnp.tile(c, (5, 1)))
    np.testing.assert_allclose(shared, rows, rtol=1e-6, atol=1e-6)
    other = flow.log_prob(params, x, jnp.array([0.0, 0.0, 1.0]))
    assert np.max(np.abs(np.asarray(shared - other))) > 1e-4
    loop = jnp.stack([flow.log_prob(params, x[i:i + 1], c)[0] for i in range(5)])
    np.testing.assert_allclose(shared, loop, rtol=1e-5, atol=1e-5)


def test_conditional_roundtrip_and_log_det(cond_flow):
    flow, params = cond_flow
    z = jax.random.normal(jax.random.PRNGKey(3), (4, 2))
    c = jax.random.normal(jax.random.PRNGKey(4), (4, C))
    x = flow.apply(params, z, c)
    np.testing.assert_allclose(flow.inverse(params, x, c), z, atol=1e-5)
    bij = flow.bijector
    for i in range(4):
        jac = jax.jacfwd(bij.apply, argnums=1)(params["bijector"], z[i], c[i])
        np.testing.assert_allclose(bij.log_det(params["bijector"], z[i], c[i]),
                                   jnp.linalg.slogdet(jac)[1], atol=1e-4)
    xs, lp = flow.sample_and_log_prob(params, jax.random.PRNGKey(5), 4, c)
    np.testing.assert_allclose(lp, flow.log_prob(params, xs, c), atol=1e-4)


def test_context_errors(cond_flow):
    flow, params = cond_flow
    x = jnp.zeros((4, 2))
    with pytest.raises(ValueError, match="conditional"):
        flow.log_prob(params, x)
    with pytest.raises(ValueError, match=r"context must have shape \(3,\) or \(4, 3\)"):
        flow.log_prob(params, x, jnp.zeros((4, 2)))
    with pytest.raises(ValueError, match=r"\(3,\) or \(5, 3\)"):
        flow.sample(params, jax.random.PRNGKey(0), 5, jnp.zeros((4, C)))
    plain = flows.realnvp(2, num_layers=2, hidden=(8,))
    with pytest.raises(ValueError, match="unconditional"):
        plain.log_prob(plain.init(jax.random.PRNGKey(0)), x, jnp.zeros((C,)))
    with pytest.raises(ValueError, match="disagree on context_dim"):
        core.chain(flows.coupling(2, flows.affine(), context_dim=2),
                   flows.coupling(2, flows.affine(), context_dim=3))
    with pytest.raises(ValueError, match="context_dim=0 but the model has context_dim=3"):
        losses.nll(flow)


def test_conditional_nice_mixes_conditional_and_plain_layers():
    flow = flows.nice(2, num_layers=2, hidden=(8,), context_dim=1)
    params = flow.init(jax.random.PRNGKey(0))
    assert flow.context_dim == 1
    assert flow.log_prob(params, jnp.zeros((3, 2)), jnp.ones((1,))).shape == (3,)


def test_conditional_flow_learns_class_conditional_densities():
    """Two classes with means -2 and +2: the learned p(x | c) puts each class's
    held-out points far above the other class's conditional, and samples move with c."""
    key = jax.random.PRNGKey(0)
    n = 4000
    labels = jax.random.bernoulli(key, 0.5, (n,)).astype(jnp.float32)
    means = jnp.where(labels[:, None] > 0, 2.0, -2.0) * jnp.ones((n, 2))
    x = means + 0.5 * jax.random.normal(jax.random.PRNGKey(1), (n, 2))
    data = np.asarray(jnp.concatenate([x, labels[:, None]], axis=1))
    flow = flows.realnvp(2, num_layers=4, hidden=(32, 32), context_dim=1)
    res = train.fit(losses.nll(flow, context_dim=1), flow.init(jax.random.PRNGKey(2)), data[:3000],
                    optimizer=optax.adam(3e-3), steps=600, batch_size=256, key=jax.random.PRNGKey(3),
                    val_fraction=0.0, progress=False)
    test = data[3000:]
    xt, ct = test[:, :2], test[:, 2:]
    right = flow.log_prob(res.params, xt, ct)
    wrong = flow.log_prob(res.params, xt, 1.0 - ct)
    # true conditional NLL: 2 * (0.5 log(2 pi 0.25) + 0.5) = 1.452 nats
    assert float(-jnp.mean(right)) < 1.55
    assert float(jnp.mean(right - wrong)) > 10.0
    s1 = flow.sample(res.params, jax.random.PRNGKey(4), 1000, jnp.ones((1,)))
    s0 = flow.sample(res.params, jax.random.PRNGKey(4), 1000, jnp.zeros((1,)))
    np.testing.assert_allclose(np.mean(np.asarray(s1), 0), [2.0, 2.0], atol=0.15)
    np.testing.assert_allclose(np.mean(np.asarray(s0), 0), [-2.0, -2.0], atol=0.15)
