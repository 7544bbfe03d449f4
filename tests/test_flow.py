"""Flow-level properties: the change-of-variables density is a normalised density,
agrees with a brute-force Jacobian, and sampling agrees with log_prob."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import genlearn as gl
from genlearn import core, flows
from tests.helpers import perturb

H = (32, 32)


def _flows():
    return {
        "realnvp": flows.realnvp(2, num_layers=4, hidden=H),
        "nice": flows.nice(2, num_layers=4, hidden=H),
        "nice_normal": flows.nice(2, num_layers=2, hidden=H, base="normal"),
        "realnvp_diag": flows.realnvp(2, num_layers=2, hidden=H, base="diag_gaussian"),
        "realnvp_t": flows.realnvp(2, num_layers=2, hidden=H, base=core.student_t(2, df=3.0)),
    }


@pytest.mark.parametrize("name", ["realnvp", "nice", "nice_normal", "realnvp_diag", "realnvp_t"])
def test_density_integrates_to_one(name):
    flow = _flows()[name]
    params = perturb(flow.init(jax.random.PRNGKey(0)), jax.random.PRNGKey(1), 0.05)
    g = jnp.linspace(-12, 12, 601)
    xx, yy = jnp.meshgrid(g, g)
    grid = jnp.stack([xx.ravel(), yy.ravel()], 1)
    dens = jnp.exp(jax.jit(flow.log_prob)(params, grid))
    mass = float(dens.sum() * (g[1] - g[0]) ** 2)
    assert abs(mass - 1.0) < 1e-2


@given(seed=st.integers(0, 10_000))
def test_log_prob_equals_brute_force_change_of_variables(seed):
    flow = flows.realnvp(3, num_layers=3, hidden=H)
    params = perturb(flow.init(jax.random.PRNGKey(seed)), jax.random.PRNGKey(seed + 1), 0.05)
    x = jax.random.normal(jax.random.PRNGKey(seed + 2), (5, 3))
    inv = lambda xi: flow.bijector.inverse(params["bijector"], xi)
    z = jax.vmap(inv)(x)
    jac = jax.vmap(jax.jacfwd(inv))(x)
    ref = jax.vmap(lambda zi: flow.base.log_prob({}, zi))(z) + jnp.linalg.slogdet(jac)[1]
    np.testing.assert_allclose(flow.log_prob(params, x), ref, rtol=1e-5, atol=1e-4)


def test_sample_and_log_prob_consistent():
    flow = flows.realnvp(4, num_layers=4, hidden=H)
    params = perturb(flow.init(jax.random.PRNGKey(0)), jax.random.PRNGKey(1), 0.05)
    x, lp = flow.sample_and_log_prob(params, jax.random.PRNGKey(2), 64)
    np.testing.assert_allclose(lp, flow.log_prob(params, x), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(x, flow.sample(params, jax.random.PRNGKey(2), 64), rtol=1e-6)
    np.testing.assert_allclose(flow.apply(params, flow.inverse(params, x)), x, atol=1e-5)


def test_samples_follow_the_density():
    """A flow that is a fixed affine map of N(0, I) samples N(mean, diag(std^2))."""
    mean, std = np.array([1.0, -2.0]), np.array([0.5, 3.0])
    flow = gl.make_flow(core.standard_normal(2), core.fixed_affine(mean, std))
    params = flow.init(jax.random.PRNGKey(0))
    x = np.asarray(flow.sample(params, jax.random.PRNGKey(1), 200_000))
    np.testing.assert_allclose(x.mean(0), mean, atol=0.03)
    np.testing.assert_allclose(x.std(0), std, rtol=0.01)
    from scipy.stats import norm

    ref = norm.logpdf(x[:10], mean, std).sum(1)
    np.testing.assert_allclose(flow.log_prob(params, jnp.asarray(x[:10])), ref, rtol=1e-5)


def test_transformed_flow_is_a_density_in_data_space():
    """Appending a fixed bijector (here un-standardisation) keeps params and shifts log p by its log-det."""
    flow = flows.realnvp(2, num_layers=2, hidden=H)
    params = perturb(flow.init(jax.random.PRNGKey(0)), jax.random.PRNGKey(1), 0.05)
    mean, std = np.array([3.0, -1.0]), np.array([2.0, 0.25])
    data_flow = core.transformed(flow, core.fixed_affine(mean, std))
    x = jax.random.normal(jax.random.PRNGKey(2), (7, 2)) * std + mean
    expected = flow.log_prob(params, (x - mean) / std) - np.log(std).sum()
    np.testing.assert_allclose(data_flow.log_prob(params, x), expected, rtol=1e-5, atol=1e-5)
    assert jax.tree_util.tree_structure(data_flow.init(jax.random.PRNGKey(0))) == jax.tree_util.tree_structure(params)


def test_logit_box_flow_lives_on_the_box():
    flow = core.transformed(flows.realnvp(3, num_layers=2, hidden=H), core.logit_box(3, upper=17.0))
    params = flow.init(jax.random.PRNGKey(0))
    x = flow.sample(params, jax.random.PRNGKey(1), 1000)
    c = 17.0 / 0.9  # upper / (1 - 2 alpha): the image of R is (-c alpha, 17 + c alpha)
    assert float(x.min()) > -0.05 * c and float(x.max()) < 17.0 + 0.05 * c
    np.testing.assert_allclose(flow.apply(params, flow.inverse(params, x)), x, atol=1e-3)


def test_jit_equals_no_jit_and_float64():
    flow = flows.realnvp(2, num_layers=2, hidden=H)
    params = perturb(flow.init(jax.random.PRNGKey(0)), jax.random.PRNGKey(1), 0.05)
    x = np.asarray(jax.random.normal(jax.random.PRNGKey(2), (16, 2)))
    lp = flow.log_prob(params, jnp.asarray(x))
    np.testing.assert_allclose(jax.jit(flow.log_prob)(params, jnp.asarray(x)), lp, rtol=1e-5, atol=1e-5)
    with jax.enable_x64(True):
        p64 = jax.tree_util.tree_map(lambda a: jnp.asarray(np.asarray(a), jnp.float64), params)
        lp64 = flow.log_prob(p64, jnp.asarray(x, jnp.float64))
        assert lp64.dtype == jnp.float64
        s64 = flow.sample(p64, jax.random.PRNGKey(3), 4)
        assert s64.dtype == jnp.float64
    np.testing.assert_allclose(lp, lp64, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "x, match",
    [
        (jnp.zeros((4, 3)), "model has dim 2 but data has dim 3"),
        (jnp.zeros((4,)), r"expected a batch of shape \(n, 2\)"),
        (jnp.zeros((0, 2)), "empty batch"),
    ],
)
def test_log_prob_bad_shapes(x, match):
    flow = flows.realnvp(2, num_layers=1, hidden=H)
    with pytest.raises(ValueError, match=match):
        flow.log_prob(flow.init(jax.random.PRNGKey(0)), x)


def test_sample_bad_n():
    flow = flows.nice(2, num_layers=1, hidden=H)
    with pytest.raises(ValueError, match="n must be a positive int"):
        flow.sample(flow.init(jax.random.PRNGKey(0)), jax.random.PRNGKey(1), 0)


def test_nll_loss_and_weight_decay():
    flow = flows.realnvp(2, num_layers=1, hidden=H)
    params = perturb(flow.init(jax.random.PRNGKey(0)), jax.random.PRNGKey(1), 0.05)
    x = jax.random.normal(jax.random.PRNGKey(2), (8, 2))
    loss = gl.losses.nll(flow)
    np.testing.assert_allclose(loss(params, x), -flow.log_prob(params, x).mean(), rtol=1e-6)
    reg = gl.losses.nll(flow, weight_decay=0.1)
    l2 = sum(float(jnp.sum(a**2)) for a in jax.tree_util.tree_leaves(params))
    np.testing.assert_allclose(reg(params, x), loss(params, x) + 0.1 * l2, rtol=1e-5)
    deq = gl.losses.nll(flow, dequantize=lambda k, b: b + jax.random.uniform(k, b.shape))
    a = deq(params, x, jax.random.PRNGKey(0))
    b = deq(params, x, jax.random.PRNGKey(1))
    assert np.isfinite(a) and a != b
    with pytest.raises(ValueError, match="weight_decay"):
        gl.losses.nll(flow, weight_decay=-1.0)


@pytest.mark.parametrize("dim, df", [(1, 3.0), (2, 10.0), (5, None), (16, 0.7)])
def test_student_t_log_prob_equals_scipy(dim, df):
    from scipy import stats

    base = core.student_t(dim, df)
    nu = max(5.0 * dim, 10.0) if df is None else df
    z = 3.0 * np.asarray(jax.random.normal(jax.random.PRNGKey(dim), (64, dim)))
    ref = stats.multivariate_t(loc=np.zeros(dim), shape=np.eye(dim), df=nu).logpdf(z)
    np.testing.assert_allclose(jax.vmap(lambda v: base.log_prob(None, v))(jnp.asarray(z)), ref, rtol=2e-5,
                               atol=2e-5)


def test_student_t_samples_have_its_covariance_and_tails():
    dim, df = 3, 6.0
    z = np.asarray(core.student_t(dim, df).sample(None, jax.random.PRNGKey(0), 200_000))
    assert z.shape == (200_000, dim)
    # Cov = df / (df - 2) I = 1.5 I; the radial law |z|^2 / d ~ F(d, df)
    np.testing.assert_allclose(np.cov(z.T), 1.5 * np.eye(dim), atol=0.05)
    from scipy import stats

    assert stats.kstest(np.sum(z[:20_000] ** 2, 1) / dim, stats.f(dim, df).cdf).pvalue > 1e-3


@pytest.mark.parametrize("df", [0.0, -1.0, float("nan"), float("inf")])
def test_student_t_bad_df(df):
    with pytest.raises(ValueError, match="student_t: df must be a finite number > 0"):
        core.student_t(2, df)


@pytest.mark.parametrize("dim, k", [(1, 1), (2, 3), (5, 8)])
def test_gaussian_mixture_log_prob_equals_scipy(dim, k):
    from scipy import stats
    from scipy.special import logsumexp, log_softmax

    base = core.gaussian_mixture(dim, k)
    p = perturb(base.init(jax.random.PRNGKey(dim)), jax.random.PRNGKey(7), 0.5)
    z = 2.0 * np.asarray(jax.random.normal(jax.random.PRNGKey(k), (64, dim)))
    logw = log_softmax(np.asarray(p["logits"], float))
    per = [logw[j] + stats.multivariate_normal(np.asarray(p["means"][j], float),
                                               np.diag(np.exp(2 * np.asarray(p["log_std"][j], float)))).logpdf(z)
           for j in range(k)]
    ref = logsumexp(np.stack(per).reshape(k, -1), axis=0)
    np.testing.assert_allclose(jax.vmap(base.log_prob, (None, 0))(p, jnp.asarray(z)), ref, rtol=2e-5, atol=2e-5)


def test_gaussian_mixture_samples_follow_its_weights_and_components():
    base = core.gaussian_mixture(2, 3)
    p = {"logits": jnp.log(jnp.array([0.2, 0.3, 0.5])), "means": jnp.array([[-10.0, 0.0], [0.0, 10.0], [10.0, 0.0]]),
         "log_std": jnp.log(jnp.array([[0.5, 1.0], [1.0, 2.0], [1.5, 0.5]]))}
    z = np.asarray(base.sample(p, jax.random.PRNGKey(0), 100_000))
    which = np.argmin(((z[:, None, :] - np.asarray(p["means"])) ** 2).sum(-1), axis=1)
    np.testing.assert_allclose(np.bincount(which) / len(z), [0.2, 0.3, 0.5], atol=0.01)
    for j in range(3):
        np.testing.assert_allclose(z[which == j].std(0), np.exp(np.asarray(p["log_std"][j])), rtol=0.03)
    init = base.init(jax.random.PRNGKey(1))  # equal weights, unit scales, means spread apart
    assert np.ptp(np.asarray(init["means"]), axis=0).min() > 0 and not np.any(init["log_std"])
    flow = flows.realnvp(2, num_layers=2, hidden=(8,), base="mixture")  # a flow takes it by name
    fp = flow.init(jax.random.PRNGKey(0))
    assert fp["base"]["means"].shape == (8, 2)
    assert np.all(np.isfinite(flow.log_prob(fp, jnp.asarray(z[:10]))))
    from genlearn.interop import to_distrax  # and the flow is a distrax distribution with it

    np.testing.assert_allclose(to_distrax(flow, fp).log_prob(jnp.asarray(z[:10])), flow.log_prob(fp, jnp.asarray(z[:10])),
                               rtol=1e-6)


def test_gaussian_mixture_fit_is_em_and_a_flow_model_starts_at_it():
    """``fit(key, z)`` is genlearn.classical.gmm's diagonal EM (checked against scikit-learn's own EM from the
    same start in tests/test_classical.py), in the mixture's parameterisation: equal log-densities. A flow Model's
    ``init(key, data)`` fits the base to the data mapped back through the freshly initialised bijector, and keeps
    the bijector ``init(key)`` gives; without data it is the flow's own ``init(key)``, bit for bit."""
    from genlearn.classical import gmm
    from genlearn.core.model import from_flow

    centres = np.array([[-4.0, 0.0], [0.0, 4.0], [4.0, 0.0]])
    data = jnp.asarray(centres[np.arange(600) % 3] + 0.3 * np.random.default_rng(0).normal(size=(600, 2)),
                       jnp.float32)
    base = core.gaussian_mixture(2, 3)
    key = jax.random.PRNGKey(3)
    fitted = base.fit(key, data)
    assert jax.tree_util.tree_map(jnp.shape, fitted) == jax.tree_util.tree_map(jnp.shape, base.init(key))
    em = gmm(3, "diag")
    np.testing.assert_allclose(jax.vmap(base.log_prob, (None, 0))(fitted, data),
                               em.log_prob(em.fit(key, data), data), rtol=1e-4, atol=1e-4)
    found = np.asarray(fitted["means"])[np.argsort(np.asarray(fitted["means"])[:, 0])]
    np.testing.assert_allclose(found, centres, atol=0.1)  # the three clusters, their weights and scales
    np.testing.assert_allclose(jax.nn.softmax(fitted["logits"]), [1 / 3] * 3, atol=0.01)
    np.testing.assert_allclose(jnp.exp(fitted["log_std"]), 0.3, rtol=0.15)

    flow = flows.realnvp(2, num_layers=2, hidden=(8,), base=base)
    outer = core.fixed_affine(jnp.array([1.0, -2.0]), jnp.array([2.0, 0.5]))
    model = from_flow(flow, outer)
    x = data * jnp.array([2.0, 0.5]) + jnp.array([1.0, -2.0])  # data units: the outer map of the flow's space
    plain = model.init(key)
    chex.assert_trees_all_equal(plain, flow.init(key))
    started = model.init(key, x)
    chex.assert_trees_all_equal(started["bijector"], plain["bijector"])
    kb, _ = jax.random.split(key)
    z = core.transformed(flow, outer).inverse(plain, x)
    chex.assert_trees_all_close(started["base"], base.fit(kb, z), rtol=1e-6, atol=1e-6)
    assert float(jnp.mean(model.log_prob(started, x))) > float(jnp.mean(model.log_prob(plain, x))) + 1.0
    with pytest.raises(ValueError, match="3 components need at least 3 points"):
        base.fit(key, data[:2])
    with pytest.raises(ValueError, match="shape"):
        base.fit(key, data[:, :1])
    with pytest.raises(ValueError, match="NaN|inf|finite"):
        base.fit(key, data.at[0, 0].set(jnp.nan))


@pytest.mark.parametrize("args, match", [((2, 0), "components must be an int >= 1"),
                                         ((2, 2.5), "components must be an int >= 1"),
                                         ((2, 3, float("nan")), "spread must be a finite number >= 0")])
def test_gaussian_mixture_bad_arguments(args, match):
    dim, k, *spread = args
    with pytest.raises(ValueError, match=f"gaussian_mixture: {match}"):
        core.gaussian_mixture(dim, k, **({"spread": spread[0]} if spread else {}))


def test_an_eager_batched_call_is_one_compiled_program(caplog):
    """An eager ``flow.log_prob`` (or ``inverse``) compiles one program on its first call and none on the next
    with the same shapes; op-by-op dispatch of the vmapped couplings compiled dozens. The results equal the
    per-example functions evaluated with jit disabled, and a context shared by the batch or given per row
    reaches its own program."""
    import logging

    flow = flows.realnvp(2, num_layers=2, hidden=(8,))
    params = perturb(flow.init(jax.random.PRNGKey(0)), jax.random.PRNGKey(1), 0.1)
    x = jax.random.normal(jax.random.PRNGKey(2), (5, 2))

    def compiles(fn, *args):
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="jax"), jax.log_compiles(True):
            out = fn(*args)
        return out, [r.getMessage() for r in caplog.records if r.getMessage().startswith("Compiling ")]

    for fn in (flow.log_prob, flow.inverse):
        first, compiled = compiles(fn, params, x)
        assert len(compiled) == 1, compiled
        again, compiled = compiles(fn, params, x)
        assert compiled == [], compiled
        np.testing.assert_array_equal(first, again)
    with jax.disable_jit():
        plain = [flow.bijector.inverse_and_log_det(params["bijector"], xi) for xi in x]
        want = np.array([flow.base.log_prob(params["base"], z) + ld for z, ld in plain])
    np.testing.assert_allclose(flow.log_prob(params, x), want, rtol=1e-5, atol=1e-6)

    cond = flows.realnvp(2, num_layers=2, hidden=(8,), context_dim=3)
    cp = perturb(cond.init(jax.random.PRNGKey(3)), jax.random.PRNGKey(4), 0.1)
    rows = jax.random.normal(jax.random.PRNGKey(5), (5, 3))
    per_row = cond.log_prob(cp, x, rows)
    np.testing.assert_allclose(cond.log_prob(cp, x, rows[1]), [cond.log_prob(cp, x[i:i + 1], rows[1])[0]
                                                                for i in range(5)], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(per_row, [cond.log_prob(cp, x[i:i + 1], rows[i])[0] for i in range(5)],
                               rtol=1e-5, atol=1e-6)
