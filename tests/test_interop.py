"""genlearn <-> distrax: converted flows/bijectors agree with ours, and our affine
coupling agrees with distrax's own MaskedCoupling + ScalarAffine."""

import distrax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from genlearn import core, flows
from genlearn.interop import to_distrax, to_distrax_bijector, to_distrax_distribution
from genlearn.nn import MLP
from tests.helpers import perturb

H = (16, 16)


def _params(flow, seed=0, scale=0.1):
    return jax.jit(lambda k: perturb(flow.init(k), jax.random.fold_in(k, 1), scale))(jax.random.PRNGKey(seed))


def test_to_distrax_log_prob_and_samples_equal_ours():
    flow = flows.realnvp(3, num_layers=2, hidden=H, base="diag_gaussian")
    params = _params(flow)
    key = jax.random.PRNGKey(7)
    x = jax.random.normal(jax.random.PRNGKey(3), (50, 3)) * 1.5

    @jax.jit
    def both(params, key, x):  # the distrax object is built inside jit: no eager dispatch
        dist = to_distrax(flow, params)
        xs, lp = dist.sample_and_log_prob(seed=key, sample_shape=(4, 5))
        return (dist.sample(seed=key, sample_shape=64), flow.sample(params, key, 64), dist.log_prob(x),
                flow.log_prob(params, x), xs, lp, flow.log_prob(params, xs.reshape(-1, 3)))

    theirs, ours, lp_d, lp_o, xs, lp, lp_xs = both(params, key, x)
    dist = to_distrax(flow, params)
    assert isinstance(dist, distrax.Distribution)
    assert dist.event_shape == (3,)
    np.testing.assert_allclose(theirs, ours, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(lp_d, lp_o, rtol=1e-5, atol=1e-5)
    # distrax's sample_and_log_prob (forward log-det) agrees with our density at those samples
    assert xs.shape == (4, 5, 3) and lp.shape == (4, 5)
    np.testing.assert_allclose(lp.reshape(-1), lp_xs, rtol=1e-4, atol=1e-4)


def test_to_distrax_glow_with_data_init():
    x = jax.random.normal(jax.random.PRNGKey(0), (200, 2)) * jnp.array([3.0, 0.5]) + 2.0
    flow = flows.glow(2, num_layers=2, hidden=(8,))
    params = perturb(flow.init(jax.random.PRNGKey(1), x), jax.random.PRNGKey(2), 0.02)
    lp_d, lp_o = jax.jit(lambda p, v: (to_distrax(flow, p).log_prob(v), flow.log_prob(p, v)))(params, x[:20])
    np.testing.assert_allclose(lp_d, lp_o, rtol=1e-5, atol=1e-5)


def test_to_distrax_bijector_batch_shapes_and_chain_order():
    d = 4
    a = flows.coupling(d, flows.affine(), hidden=H)
    b = core.chain(core.scale(d), core.reverse(d))
    pa = perturb(a.init(jax.random.PRNGKey(0)), jax.random.PRNGKey(1), 0.1)
    pb = perturb(b.init(jax.random.PRNGKey(2)), jax.random.PRNGKey(3), 0.3)
    ours = core.chain(a, b)  # flow order: b(a(z))
    params = (pa, pb)
    z = jax.random.normal(jax.random.PRNGKey(4), (2, 3, d))
    conv = to_distrax_bijector(ours, params)
    assert isinstance(conv, distrax.Bijector)
    x, ld = conv.forward_and_log_det(z)
    assert x.shape == (2, 3, d) and ld.shape == (2, 3)
    x_ref, ld_ref = jax.vmap(ours.apply_and_log_det, (None, 0))(params, z.reshape(-1, d))
    np.testing.assert_allclose(x.reshape(-1, d), x_ref, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(ld.reshape(-1), ld_ref, rtol=1e-6, atol=1e-6)
    # distrax.Chain is function composition: Chain([b, a]) = b o a = our chain(a, b)
    dchain = distrax.Chain([to_distrax_bijector(b, pb), to_distrax_bijector(a, pa)])
    x2, ld2 = dchain.forward_and_log_det(z)
    np.testing.assert_allclose(x2, x, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(ld2, ld, rtol=1e-5, atol=1e-5)
    z_back, ild = dchain.inverse_and_log_det(x)
    np.testing.assert_allclose(z_back, z, atol=1e-5)
    np.testing.assert_allclose(ild, -ld, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("mask_kind,scale", [("half", "exp"), ("parity", "exp"), ("half", "softplus")])
def test_affine_coupling_equals_distrax_masked_coupling(mask_kind, scale):
    d, bound, floor = 5, 3.0, 0.05
    mask = flows.half_mask(d) if mask_kind == "half" else flows.parity_mask(d)
    ours = flows.coupling(d, flows.affine(scale, min_scale=floor, max_log_scale=bound), mask=mask, hidden=H)
    params = perturb(ours.init(jax.random.PRNGKey(0)), jax.random.PRNGKey(1), 0.3)
    cond_idx, trans_idx = np.flatnonzero(~mask), np.flatnonzero(mask)
    net = MLP(hidden=H, out=trans_idx.size * 2, activation="relu", zero_init_last=True, hidden_init="uniform")

    def conditioner(masked_x):  # same network, same params; outputs per coordinate
        h = net.apply(params, masked_x[..., cond_idx]).reshape(masked_x.shape[:-1] + (trans_idx.size, 2))
        raw = jnp.zeros(masked_x.shape).at[..., trans_idx].set(h[..., 0])
        shift = jnp.zeros(masked_x.shape).at[..., trans_idx].set(h[..., 1])
        return raw, shift

    def inner(p):
        raw, shift = p
        if scale == "exp":
            return distrax.ScalarAffine(shift=shift, log_scale=bound * jnp.tanh(raw / bound))
        # z = x s + t in the normalizing direction: x = (z - t) / s
        s = jax.nn.softplus(raw + np.log(np.expm1(1.0 - floor))) + floor
        s = jnp.where(s > 1.0, jnp.exp(bound * jnp.tanh(jnp.log(s) / bound)), s)  # log s soft-bounded above
        return distrax.ScalarAffine(shift=-shift / s, scale=1.0 / s)

    theirs = distrax.MaskedCoupling(mask=jnp.asarray(~mask), conditioner=conditioner, bijector=inner)
    z = 2.0 * jax.random.normal(jax.random.PRNGKey(2), (16, d))
    x_ref, ld_ref = theirs.forward_and_log_det(z)
    x, ld = jax.vmap(ours.apply_and_log_det, (None, 0))(params, z)
    assert float(jnp.abs(ld).max()) > 0.1  # a non-trivial layer
    np.testing.assert_allclose(x, x_ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(ld, ld_ref, rtol=1e-5, atol=1e-5)
    z_ref, ild_ref = theirs.inverse_and_log_det(x_ref)
    z_ours, ild = jax.vmap(ours.inverse_and_log_det, (None, 0))(params, x_ref)
    np.testing.assert_allclose(z_ours, z_ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(ild, ild_ref, rtol=1e-5, atol=1e-5)
    # and through the converter
    conv = to_distrax_bijector(ours, params)
    np.testing.assert_allclose(conv.forward(z), x_ref, rtol=1e-5, atol=1e-5)


def test_conditional_flow_converted_for_a_fixed_context():
    flow = flows.realnvp(2, num_layers=2, hidden=(8,), context_dim=2)
    params = perturb(flow.init(jax.random.PRNGKey(0)), jax.random.PRNGKey(1), 0.1)
    c = jnp.array([0.5, -1.0])
    x = jax.random.normal(jax.random.PRNGKey(2), (10, 2))
    np.testing.assert_allclose(to_distrax(flow, params, context=c).log_prob(x), flow.log_prob(params, x, c),
                               rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="conditional and needs a context"):
        to_distrax(flow, params)


def test_base_distribution_and_bad_input():
    base = core.standard_normal(3)
    dd = to_distrax_distribution(base, {})
    x = jnp.ones((2, 3))
    np.testing.assert_allclose(dd.log_prob(x), distrax.MultivariateNormalDiag(jnp.zeros(3)).log_prob(x), rtol=1e-6)
    flow = flows.realnvp(3, num_layers=1, hidden=(4,))
    params = flow.init(jax.random.PRNGKey(0))
    with pytest.raises(ValueError, match=r"shape \(\.\.\., 3\)"):
        to_distrax(flow, params).log_prob(jnp.ones((4, 2)))
    with pytest.raises(ValueError, match="keys 'base' and 'bijector'"):
        to_distrax(flow, params["bijector"])
    with pytest.raises(TypeError, match="genlearn Bijector"):
        to_distrax_bijector(flow, params)
