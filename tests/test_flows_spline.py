"""Rational-quadratic splines: agreement with distrax, identity and linear tails and identity
initialisation, C^1 at the boundary, bad hyperparameters, and learning two moons."""

import distrax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from genlearn import flows
from tests.helpers import perturb
from tests.test_learning import GAUSSIAN_NLL_2D, _held_out_moons_nll


@given(seed=st.integers(0, 2**31 - 1), bins=st.integers(2, 10), bound=st.floats(0.5, 4.0),
       raw_scale=st.floats(0.1, 2.0))
def test_matches_distrax_rational_quadratic_spline(seed, bins, bound, raw_scale):
    """distrax's spline with identity boundary slopes is the same map when its
    absolute min_bin_size equals our relative minimum times 2B."""
    min_rel, min_d = 1e-3, 1e-3
    t = flows.rational_quadratic(bins, bound, min_rel, min_rel, min_d)
    rng = np.random.default_rng(seed)
    n = 64
    h = (raw_scale * rng.standard_normal((n, 3 * bins - 1))).astype(np.float32)
    z = (1.5 * bound * rng.standard_normal(n)).astype(np.float32)  # inside and in the tails

    @jax.jit  # one compiled program per example (each has its own shapes), not one per map or operation
    def maps(h, z):
        pad = jnp.zeros((n, 1))
        ref = distrax.RationalQuadraticSpline(
            jnp.concatenate([h[:, : 2 * bins], pad, h[:, 2 * bins :], pad], axis=1),
            range_min=-bound, range_max=bound, boundary_slopes="identity",
            min_bin_size=2 * bound * min_rel, min_knot_slope=min_d)
        x, ld = t.forward(h, z)
        return (x, ld, *ref.forward_and_log_det(z), *t.inverse(h, x), *ref.inverse_and_log_det(x))

    x, ld, x_ref, ld_ref, z_back, ild, z_ref, ild_ref = maps(h, z)
    np.testing.assert_allclose(x, x_ref, atol=2e-5 * bound)
    np.testing.assert_allclose(ld, jnp.sum(ld_ref), atol=1e-3)
    # where the spline is nearly flat the float32 inverse is ill-conditioned (error ~ round-off / slope;
    # ours stays closer to z than distrax's there), so compare with distrax where the slope is moderate
    slope = np.exp(np.asarray(ld_ref))
    ok = slope > 0.2
    np.testing.assert_allclose(np.asarray(z_back)[ok], np.asarray(z_ref)[ok], atol=1e-3 * bound)
    assert np.all(np.abs(np.asarray(z_back - z)) <= 1e-5 * bound * (1 + 1 / slope))
    np.testing.assert_allclose(ild, -ld, atol=1e-3)
    np.testing.assert_allclose(ild, jnp.sum(ild_ref), atol=1e-3)


def test_identity_at_zero_params_and_identity_tails():
    t = flows.rational_quadratic(6, bound=2.0)
    z = jnp.linspace(-5, 5, 101)
    x, ld = t.forward(jnp.zeros((101, 17)), z)
    np.testing.assert_allclose(x, z, atol=1e-6)
    np.testing.assert_allclose(ld, 0.0, atol=1e-5)
    h = 2.0 * jax.random.normal(jax.random.PRNGKey(0), (101, 17))
    x, _ = t.forward(h, z)
    tails = np.abs(np.asarray(z)) >= 2.0
    np.testing.assert_array_equal(np.asarray(x)[tails], np.asarray(z)[tails])  # linear tails of slope 1
    assert np.any(np.abs(np.asarray(x - z))[~tails] > 1e-2)  # a non-trivial spline inside
    _, ld_t = t.forward(h[tails], z[tails])
    assert float(ld_t) == 0.0


@settings(max_examples=3)  # each example compiles afresh (its own bins): ~3-5 s apiece on 2 cores
@given(seed=st.integers(0, 2**31 - 1), bins=st.integers(2, 10), bound=st.floats(0.5, 4.0),
       raw_scale=st.floats(0.1, 2.0))
def test_linear_tails_match_distrax_inside_and_continue_its_boundary_slopes(seed, bins, bound, raw_scale):
    """tails="linear": inside [-B, B] distrax's spline with unconstrained boundary slopes; outside, the
    line through (+-B, +-B) with the learned boundary slope; log-det = log of the autodiff derivative."""
    t = flows.rational_quadratic(bins, bound, 1e-3, 1e-3, 1e-3, tails="linear")
    assert t.params_per_dim == 3 * bins + 1
    rng = np.random.default_rng(seed)
    n = 64
    h = (raw_scale * rng.standard_normal((n, 3 * bins + 1))).astype(np.float32)
    z = (1.5 * bound * rng.standard_normal(n)).astype(np.float32)

    @jax.jit  # one compiled program per example (each has its own shapes), not one per map or operation
    def maps(h, z):
        ref = distrax.RationalQuadraticSpline(
            h, range_min=-bound, range_max=bound, boundary_slopes="unconstrained", min_bin_size=2 * bound * 1e-3,
            min_knot_slope=1e-3)
        x, ld = t.forward(h, z)
        slope = jax.vmap(jax.grad(lambda zi, hi: t.forward(hi[None], zi[None])[0][0]))(z, h)
        lds = jax.vmap(lambda zi, hi: t.forward(hi[None], zi[None])[1])(z, h)
        ilds = jax.vmap(lambda xi, hi: t.inverse(hi[None], xi[None])[1])(x, h)
        return x, ld, ref.forward(z), slope, lds, t.inverse(h, x)[0], ilds

    x, ld, x_ref, slope, lds, z_back, ilds = maps(h, z)
    inside = np.abs(np.asarray(z)) < bound
    np.testing.assert_allclose(np.asarray(x)[inside], np.asarray(x_ref)[inside], atol=2e-5 * bound)
    np.testing.assert_allclose(lds, jnp.log(slope), atol=1e-4)
    np.testing.assert_allclose(ld, jnp.sum(jnp.log(slope)), rtol=1e-4, atol=1e-3)
    d_end = 1e-3 + jax.nn.softplus(h[:, [2 * bins, 3 * bins]] + np.log(np.expm1(1 - 1e-3)))  # left, right
    edge = np.sign(np.asarray(z)) * bound
    want = edge + np.where(np.asarray(z) > 0, d_end[:, 1], d_end[:, 0]) * (np.asarray(z) - edge)
    np.testing.assert_allclose(np.asarray(x)[~inside], want[~inside], rtol=1e-5, atol=1e-5 * bound)
    assert np.all(np.abs(np.asarray(z_back - z)) <= 2e-5 * bound * (1 + 1 / np.asarray(slope)))
    ok = np.asarray(slope) > 1e-3  # the float32 inverse is ill-conditioned where the spline is flat
    np.testing.assert_allclose(np.asarray(ilds)[ok], -np.asarray(lds)[ok], atol=1e-3)


def test_linear_tails_start_at_the_identity_and_stay_c1():
    t = flows.rational_quadratic(6, bound=2.0, tails="linear")
    z = jnp.linspace(-5, 5, 101)
    x, ld = t.forward(jnp.zeros((101, 19)), z)
    np.testing.assert_allclose(x, z, atol=1e-6)
    np.testing.assert_allclose(ld, 0.0, atol=1e-5)
    h = jnp.tile(1.5 * jax.random.normal(jax.random.PRNGKey(4), (1, 19)), (4, 1))
    deriv = jax.vmap(jax.grad(lambda zi, hi: t.forward(hi[None], zi[None])[0][0]))
    for edge in (-2.0, 2.0):
        s = np.sign(edge)
        near = jnp.array([edge - 1e-5 * s, edge + 1e-5 * s, edge + 0.5 * s, edge + 3 * s])
        slopes = np.asarray(deriv(near, h))
        np.testing.assert_allclose(slopes, slopes[1], rtol=2e-2)  # continuous, then constant in the tail
        assert abs(slopes[1] - 1.0) > 1e-2  # and learned: not the identity's slope


def test_monotone_and_c1_at_the_boundary():
    """Dense grid: strictly increasing; the derivative tends to 1 (the tail slope) at +-B."""
    t = flows.rational_quadratic(8, bound=3.0)
    h = jnp.tile(1.5 * jax.random.normal(jax.random.PRNGKey(1), (1, 23)), (2001, 1))
    z = jnp.linspace(-3.5, 3.5, 2001)
    x, _ = t.forward(h, z)
    assert np.all(np.diff(np.asarray(x)) > 0)
    deriv = jax.vmap(jax.grad(lambda zi, hi: t.forward(hi[None], zi[None])[0][0]))
    for edge in (-3.0, 3.0):
        near = jnp.array([edge - 1e-5 * np.sign(edge), edge + 1e-5 * np.sign(edge)])
        np.testing.assert_allclose(deriv(near, h[:2]), 1.0, atol=2e-2)


def test_log_det_is_log_derivative_and_float64_round_trip():
    t = flows.rational_quadratic(5, bound=2.0)
    h = jax.random.normal(jax.random.PRNGKey(2), (50, 14))
    z = 1.5 * jax.random.normal(jax.random.PRNGKey(3), (50,))
    grads = jax.vmap(jax.grad(lambda zi, hi: t.forward(hi[None], zi[None])[0][0]))(z, h)
    lds = jax.vmap(lambda zi, hi: t.forward(hi[None], zi[None])[1])(z, h)
    np.testing.assert_allclose(lds, jnp.log(grads), atol=1e-4)
    with jax.enable_x64(True):
        h64, z64 = jnp.asarray(np.asarray(h), jnp.float64), jnp.asarray(np.asarray(z), jnp.float64)
        x64, ld64 = t.forward(h64, z64)
        zb, ild = t.inverse(h64, x64)
        assert x64.dtype == jnp.float64
        np.testing.assert_allclose(zb, z64, atol=1e-10)
        np.testing.assert_allclose(ild, -ld64, atol=1e-10)


def test_spline_flows_coupling_and_autoregressive():
    for kind in ("coupling", "autoregressive"):
        flow = flows.spline(3, num_layers=2, hidden=(16,), kind=kind, num_bins=4)
        params = flow.init(jax.random.PRNGKey(0))
        z = jax.random.normal(jax.random.PRNGKey(1), (8, 3))
        np.testing.assert_allclose(jax.jit(flow.apply)(params, z), z, atol=1e-5)  # identity at init
        params = perturb(params, jax.random.PRNGKey(2), 0.1)
        x, lp = jax.jit(flow.sample_and_log_prob, static_argnums=2)(params, jax.random.PRNGKey(3), 32)
        np.testing.assert_allclose(jax.jit(flow.log_prob)(params, x), lp, atol=2e-4)
    # a conditional spline flow
    flow = flows.spline(2, num_layers=2, hidden=(16,), context_dim=2, num_bins=4)
    params = perturb(flow.init(jax.random.PRNGKey(0)), jax.random.PRNGKey(1), 0.1)
    x = jax.jit(flow.sample, static_argnums=2)(params, jax.random.PRNGKey(2), 16, jnp.ones(2))
    lp = jax.jit(flow.log_prob)(params, x, jnp.ones(2))
    assert lp.shape == (16,) and np.all(np.isfinite(np.asarray(lp)))
    with pytest.raises(ValueError, match="context"):
        flow.log_prob(params, x, jnp.ones(3))


def test_spline_density_integrates_to_one_in_2d():
    flow = flows.spline(2, num_layers=2, hidden=(16,), num_bins=4, bound=2.5)
    params = perturb(flow.init(jax.random.PRNGKey(0)), jax.random.PRNGKey(1), 0.1)
    g = jnp.linspace(-9, 9, 451)
    xx = jnp.stack(jnp.meshgrid(g, g), -1).reshape(-1, 2)
    mass = float(jnp.exp(jax.jit(flow.log_prob)(params, xx)).sum() * (g[1] - g[0]) ** 2)
    assert abs(mass - 1.0) < 5e-3, mass


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: flows.rational_quadratic(num_bins=1), "num_bins must be an integer >= 2"),
        (lambda: flows.rational_quadratic(num_bins=2.5), "num_bins"),
        (lambda: flows.rational_quadratic(bound=0.0), "bound must be finite and > 0"),
        (lambda: flows.rational_quadratic(bound=-1.0), "bound"),
        (lambda: flows.rational_quadratic(bound=float("nan")), "bound"),
        (lambda: flows.rational_quadratic(8, min_bin_width=0.2), r"min_bin_width \* num_bins must be < 1"),
        (lambda: flows.rational_quadratic(8, min_bin_height=0.0), "min_bin_height"),
        (lambda: flows.rational_quadratic(min_derivative=1.0), "min_derivative must be < 1"),
        (lambda: flows.rational_quadratic(tails="logistic"), "tails must be 'identity' or 'linear'"),
        (lambda: flows.spline(2, tails="exp"), "tails"),
        (lambda: flows.spline(2, kind="radial"), "unknown kind"),
        (lambda: flows.spline(2, bound=0.0), "bound"),
        (lambda: flows.spline(4, kind="autoregressive", hidden=(2,)), "hidden width"),
        (lambda: flows.rational_quadratic().forward(jnp.zeros((3, 5)), jnp.zeros(3)), r"params must have shape \(3, 23\)"),
    ],
)
def test_invalid_hyperparameters(call, match):
    with pytest.raises(ValueError, match=match):
        call()


@pytest.mark.slow  # the library defaults learn ring8: tests/test_stability.py
def test_spline_learns_two_moons():
    held_out = _held_out_moons_nll(flows.spline(2, num_layers=3, hidden=(32, 32)), 400)
    assert held_out < 1.55, held_out  # ~1.45 after 300 steps; full size (benchmarks/flows2_numbers.py) <= 1.15
    assert held_out < GAUSSIAN_NLL_2D - 1.0


def test_run_configs_record_the_tails_and_base_and_old_configs_keep_theirs():
    """`genlearn fit spline` records its tails and base; a run saved with linear tails (stops 32-37 recorded
    them) or before the tails were recorded (identity) rebuilds with the tails it was trained with, so its
    saved params still fit; off 2-D toys the recorded base is the learned diagonal Gaussian."""
    from genlearn.data import load_dataset
    from genlearn.flows import run as flow_run

    ds = load_dataset("moons", seed=0)
    options = flow_run.defaults("spline", ds)
    assert options["tails"] == "identity" and options["base"] == "mixture"  # 2-D toys: the fitted mixture base
    assert options["num_bins"] == flow_run.SPLINE_BINS_2D == 32  # 2-D data: 32 bins per layer
    digits = flow_run.defaults("spline", load_dataset("digits", seed=0))
    assert digits["num_bins"] == 8 and digits["base"] == "diag_gaussian" and digits["tails"] == "identity"
    pre = flow_run.preprocess(ds)
    shapes = lambda p: jax.tree_util.tree_map(jnp.shape, p)  # noqa: E731
    saved = {**options, "tails": "linear"}  # a run of stops 32-37
    old = {k: v for k, v in options.items() if k not in ("tails", "num_bins")}  # saved before either was recorded
    for opts, tails, bins in ((options, "identity", 32), (saved, "linear", 32), (old, "identity", 8)):
        model = flow_run.build("spline", {**opts, "num_layers": 2, "hidden": [8]}, 2, pre)
        want = flows.spline(2, 2, (8,), bound=opts["bound"], tails=tails, num_bins=bins).init(jax.random.PRNGKey(0))
        # the couplings' layout (the base is the 2-D toys' mixture, tests/test_coupling_layout.py)
        assert shapes(model.init(jax.random.PRNGKey(0))["bijector"]) == shapes(want["bijector"])


@pytest.mark.parametrize("make", [lambda: flows.spline(3, 2, (16,)), lambda: flows.nice(3, 2, (16,))],
                         ids=["spline", "nice"])
def test_the_default_base_is_a_learned_diagonal_gaussian_starting_at_n01(make):
    """The spline's and NICE's default base has a trainable mean and scale (as flowjax's ``Normal``), starts at
    N(0, I) (the flow's density at init is the same flow's over a fixed N(0, I)), and training moves it: on data
    shifted by 2 and scaled by 0.3 a few gradient steps move the base mean towards the data and its scale."""
    import optax

    from genlearn.core import standard_normal
    from genlearn.core.flow import make_flow

    flow = make()
    params = flow.init(jax.random.PRNGKey(0))
    assert set(params["base"]) == {"mean", "log_std"}
    fixed = make_flow(standard_normal(3), flow.bijector)
    x = 2.0 + 0.3 * jax.random.normal(jax.random.PRNGKey(1), (256, 3))
    np.testing.assert_allclose(flow.log_prob(params, x), fixed.log_prob(params, x), rtol=1e-6)
    opt = optax.adam(1e-2)
    state = opt.init(params)
    loss = jax.jit(jax.value_and_grad(lambda p: -jnp.mean(flow.log_prob(p, x))))
    first, _ = loss(params)
    for _ in range(30):
        value, g = loss(params)
        updates, state = opt.update(g, state, params)
        params = optax.apply_updates(params, updates)
    assert float(value) < float(first)
    assert np.all(np.asarray(params["base"]["mean"]) > 0.01)
    assert np.all(np.abs(np.asarray(params["base"]["log_std"])) > 1e-3)  # trained (a fixed base stays at 0)
