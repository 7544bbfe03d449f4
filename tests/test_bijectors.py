"""Property tests run over a registry of every bijector: adding a bijector to
BIJECTORS is enough to have it tested for invertibility, log-det correctness,
jit/vmap agreement and float64 support."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import genlearn as gl
from genlearn import core, flows
from tests.helpers import perturb

H = (32, 32)  # small conditioners keep compile time within the CI budget

# name -> (factory(dim) -> Bijector, input scale, perturbation scale)
BIJECTORS = {
    "nice_coupling": (lambda d: flows.coupling(d, flows.shift(), hidden=H), 1.0, 0.05),
    "affine_coupling": (lambda d: flows.coupling(d, flows.affine(), hidden=H), 1.0, 0.05),
    "affine_coupling_swap": (
        lambda d: flows.coupling(d, flows.affine(), mask=flows.half_mask(d, swap=True), hidden=H), 1.0, 0.05),
    "affine_coupling_exp": (lambda d: flows.coupling(d, flows.affine("exp"), hidden=H), 1.0, 0.05),
    "affine_coupling_residual": (lambda d: flows.coupling(d, flows.affine(), hidden=H, residual=True), 1.0, 0.05),
    "affine_coupling_parity": (
        lambda d: flows.coupling(d, flows.affine(), mask=flows.parity_mask(d), hidden=H), 1.0, 0.05),
    "scale": (core.scale, 1.0, 0.3),
    "reverse": (core.reverse, 1.0, 0.0),
    "random_permutation": (lambda d: core.random_permutation(jax.random.PRNGKey(3), d), 1.0, 0.0),
    "fixed_affine": (lambda d: core.fixed_affine(np.linspace(-1, 1, d), np.linspace(0.5, 2, d)), 1.0, 0.0),
    # data inside the box maps to |y| <= logit(0.95) = 2.94; beyond that float32 conditioning, not the code, limits the round trip
    "logit_box": (lambda d: core.logit_box(d, upper=17.0, alpha=0.05), 0.5, 0.0),
    "chain": (lambda d: core.chain(core.scale(d), core.reverse(d), flows.coupling(d, flows.affine(), hidden=H)), 1.0, 0.05),
    "nice": (lambda d: flows.nice(d, num_layers=2, hidden=H).bijector, 1.0, 0.05),
    "nice_odd_depth": (lambda d: flows.nice(d, num_layers=3, hidden=H).bijector, 1.0, 0.05),
    "repeat": (lambda d: core.repeat(core.chain(flows.coupling(d, flows.affine(), hidden=H), core.reverse(d)), 3),
               1.0, 0.02),
    "realnvp": (lambda d: flows.realnvp(d, num_layers=2, hidden=H).bijector, 1.0, 0.02),
    "realnvp_odd_depth": (lambda d: flows.realnvp(d, num_layers=3, hidden=H, mask="parity").bijector, 1.0, 0.02),
    "realnvp_random_masks": (lambda d: flows.realnvp(d, num_layers=3, hidden=H, mask="random", seed=4).bijector,
                             1.0, 0.02),
    # flows II: autoregressive and spline (MADE widths must be >= d; bound 2 puts some inputs in the tails)
    "maf_layer_random_order": (
        lambda d: flows.masked_autoregressive(d, hidden=(max(32, d),), order="random", seed=1), 1.0, 0.05),
    "iaf_layer": (lambda d: flows.inverse_autoregressive(d, hidden=(max(32, d),)), 1.0, 0.05),
    "rq_coupling": (lambda d: flows.coupling(d, flows.rational_quadratic(bound=2.0), hidden=H), 1.0, 0.05),
    "rq_autoregressive": (
        lambda d: flows.masked_autoregressive(d, flows.rational_quadratic(5, bound=2.0), hidden=(max(32, d),)), 1.0, 0.05),
    "maf": (lambda d: flows.maf(d, num_layers=2, hidden=(max(32, d),) * 2).bijector, 1.0, 0.05),
    # direct connections perturbed by 0.05 make a random 64 x 64 triangular linear part that compounds over the d
    # passes of sampling (|x| ~ 1e4, past float32 round trips); 0.01 keeps it well conditioned
    "maf_direct": (lambda d: flows.maf(d, num_layers=2, hidden=(max(32, d),), direct=True).bijector, 1.0, 0.01),
    # flows II: glow, batch norm, cnf (the CNF has its own tests in tests/test_flows_cnf.py: its
    # round trip is bounded by the ODE tolerance, which cannot meet the float64 1e-10 check here)
    "actnorm": (flows.actnorm, 1.0, 0.3),
    "lu_linear": (lambda d: flows.lu_linear(d, key=jax.random.PRNGKey(d)), 1.0, 0.02),
    "batch_norm_eval": (lambda d: flows.batch_norm(d).bijector, 1.0, 0.1),
    "glow": (lambda d: flows.glow(d, num_layers=2, hidden=H, data_init=False).bijector, 1.0, 0.02),
}
# The round trip and log-det run at an odd and a large dimension for every bijector (uneven mask splits,
# MADE degrees). Compositions of the layers above (chains and whole flows) run at d = 5 and, like
# every d = 2 case, under `pytest -m slow`: most of each case's time is compiling it (the 2-D flows
# also train in tests/test_stability.py, where their log-densities must learn ring8).
DIMS = (2, 5, 64)
COMPOSITES = ("chain", "nice", "nice_odd_depth", "repeat", "realnvp", "realnvp_odd_depth", "realnvp_random_masks", "maf",
              "glow")


def _case(name, d):
    default = d == 5 or (d == 64 and name not in COMPOSITES)
    return pytest.param(name, d, id=f"{name}-{d}", marks=() if default else pytest.mark.slow)


CASES = [_case(name, d) for name in BIJECTORS for d in DIMS]
LAYERS = [pytest.param(n, marks=pytest.mark.slow) if n in COMPOSITES else n for n in BIJECTORS]


@functools.lru_cache(maxsize=None)
def _checker(name, dim):
    """One jitted function per (bijector, dim): compiled once, reused by every hypothesis example."""
    factory, in_scale, p_scale = BIJECTORS[name]
    bij = factory(dim)

    def check(key, z):
        kp, _ = jax.random.split(key)
        params = perturb(bij.init(kp), kp, p_scale)
        x, ld = jax.vmap(bij.apply_and_log_det, (None, 0))(params, z)
        z_back, ild = jax.vmap(bij.inverse_and_log_det, (None, 0))(params, x)
        jac = jax.vmap(jax.jacfwd(bij.apply, argnums=1), (None, 0))(params, z)
        ref = jnp.linalg.slogdet(jac)[1]
        return x, z_back, ld, ild, ref

    return bij, in_scale, jax.jit(check)


@pytest.mark.parametrize("name,dim", CASES)
@given(seed=st.integers(0, 2**31 - 1), spread=st.floats(0.1, 2.0))
def test_roundtrip_and_log_det(name, dim, seed, spread):
    bij, in_scale, check = _checker(name, dim)
    z = spread * in_scale * jax.random.normal(jax.random.PRNGKey(seed), (4, dim))
    x, z_back, ld, ild, ref = check(jax.random.PRNGKey(seed + 1), z)
    assert np.all(np.isfinite(np.asarray(x)))
    np.testing.assert_allclose(z_back, z, atol=1e-5 * max(1.0, float(jnp.abs(z).max())))
    np.testing.assert_allclose(ld, ref, atol=1e-4, rtol=1e-5)
    np.testing.assert_allclose(ild, -ld, atol=1e-4, rtol=1e-5)


@pytest.mark.parametrize("name", LAYERS)
def test_jit_vmap_agree_with_plain_calls(name):
    dim = 5
    bij = BIJECTORS[name][0](dim)
    params = perturb(bij.init(jax.random.PRNGKey(0)), jax.random.PRNGKey(1), BIJECTORS[name][2])
    z = jax.random.normal(jax.random.PRNGKey(2), (3, dim))
    loop = [bij.apply_and_log_det(params, zi) for zi in z]
    vm = jax.vmap(bij.apply_and_log_det, (None, 0))(params, z)
    jt = jax.jit(jax.vmap(bij.apply_and_log_det, (None, 0)))(params, z)
    np.testing.assert_allclose(np.stack([l[0] for l in loop]), vm[0], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(np.stack([l[1] for l in loop]), vm[1], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(vm[0], jt[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(vm[1], jt[1], rtol=1e-5, atol=1e-5)
    # derived functions agree with the primitives
    np.testing.assert_allclose(bij.apply(params, z[0]), loop[0][0], rtol=1e-6)
    np.testing.assert_allclose(bij.log_det(params, z[0]), loop[0][1], rtol=1e-6)
    np.testing.assert_allclose(bij.inverse(params, loop[0][0]), z[0], atol=1e-5)


@pytest.mark.parametrize("name", LAYERS)
def test_float64_agrees_with_float32(name):
    dim = 5
    bij = BIJECTORS[name][0](dim)
    p_scale = BIJECTORS[name][2]
    params = perturb(bij.init(jax.random.PRNGKey(0)), jax.random.PRNGKey(1), p_scale)
    z = np.asarray(jax.random.normal(jax.random.PRNGKey(2), (3, dim)))
    x32, ld32 = jax.vmap(bij.apply_and_log_det, (None, 0))(params, jnp.asarray(z))
    with jax.enable_x64(True):
        p64 = jax.tree_util.tree_map(lambda a: jnp.asarray(np.asarray(a), jnp.float64), params)
        z64 = jnp.asarray(z, jnp.float64)
        x64, ld64 = jax.vmap(bij.apply_and_log_det, (None, 0))(p64, z64)
        assert x64.dtype == jnp.float64 and ld64.dtype == jnp.float64
        z_back = jax.vmap(bij.inverse, (None, 0))(p64, x64)
        np.testing.assert_allclose(z_back, z64, atol=1e-10)
        jac = jax.vmap(jax.jacfwd(bij.apply, argnums=1), (None, 0))(p64, z64)
        np.testing.assert_allclose(ld64, jnp.linalg.slogdet(jac)[1], atol=1e-10)
    np.testing.assert_allclose(x32, x64, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(ld32, ld64, rtol=1e-4, atol=1e-4)


def test_identity_initialisation():
    z = jax.random.normal(jax.random.PRNGKey(1), (6, 4))
    for flow in (flows.realnvp(4, num_layers=2, hidden=H), flows.nice(4, num_layers=2, hidden=H, init_scale=0.0)):
        params = flow.init(jax.random.PRNGKey(0))
        np.testing.assert_allclose(flow.apply(params, z), z, atol=1e-6)
        np.testing.assert_allclose(flow.log_det(params, z), 0.0, atol=1e-6)
    # NICE's default starts near the identity (last conditioner kernels ~ N(0, 1e-2^2)), still volume preserving
    nice = flows.nice(4, num_layers=2, hidden=H)
    params = nice.init(jax.random.PRNGKey(0))
    moved = np.abs(np.asarray(nice.apply(params, z) - z))
    assert 0 < moved.max() < 0.5, moved.max()
    np.testing.assert_allclose(nice.log_det(params, z), 0.0, atol=1e-6)
    with pytest.raises(ValueError, match="last_init_scale must be a finite number >= 0"):
        flows.nice(4, init_scale=-1.0)
    with pytest.raises(ValueError, match="last_init_scale must be a finite number >= 0"):
        flows.coupling(4, flows.shift(), last_init_scale=float("nan"))


@pytest.mark.parametrize("scale_at", ["base", "data"])
def test_nice_scale_sits_next_to_the_base_by_default(scale_at):
    """x = couplings(z * exp(s)) (the paper's top layer of the encoder x -> z) or x = couplings(z) * exp(s);
    the couplings are volume preserving, so either way log|det| = sum(s)."""
    kw = {} if scale_at == "base" else {"scale_at": "data"}
    nice = flows.nice(4, num_layers=2, hidden=H, **kw)
    params = nice.init(jax.random.PRNGKey(0))
    couplings = flows.nice(4, num_layers=2, hidden=H, **kw)  # the same couplings with s = 0
    s = jax.random.normal(jax.random.PRNGKey(2), (4,))
    i = 0 if scale_at == "base" else len(params["bijector"]) - 1
    assert set(params["bijector"][i]) == {"log_scale"}
    scaled = {**params, "bijector": tuple({"log_scale": s} if j == i else p for j, p in enumerate(params["bijector"]))}
    z = jax.random.normal(jax.random.PRNGKey(1), (6, 4))
    want = (couplings.apply(params, z * jnp.exp(s)) if scale_at == "base"
            else couplings.apply(params, z) * jnp.exp(s))
    np.testing.assert_allclose(nice.apply(scaled, z), want, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(nice.log_det(scaled, z), jnp.sum(s) * jnp.ones(6), rtol=1e-5)
    np.testing.assert_allclose(nice.inverse(scaled, nice.apply(scaled, z)), z, atol=1e-5)
    with pytest.raises(ValueError, match="scale_at must be 'base' or 'data'"):
        flows.nice(4, scale_at="top")

def test_chain_order_is_flow_order():
    d = 3
    s = core.fixed_affine(np.zeros(d), 2.0 * np.ones(d))
    t = core.fixed_affine(np.ones(d), np.ones(d))
    ch = core.chain(s, t)  # t(s(z)) = 2 z + 1
    params = ch.init(jax.random.PRNGKey(0))
    z = jnp.arange(d, dtype=jnp.float32)
    np.testing.assert_allclose(ch.apply(params, z), 2 * z + 1)
    np.testing.assert_allclose(ch.inverse(params, 2 * z + 1), z)
    np.testing.assert_allclose(ch.log_det(params, z), d * np.log(2.0), rtol=1e-6)


def test_repeat_is_a_chain_of_independent_copies_traced_once():
    d, n = 4, 3
    block = core.chain(flows.coupling(d, flows.affine(), hidden=H), core.reverse(d))
    rep = core.repeat(block, n)
    params = perturb(rep.init(jax.random.PRNGKey(0)), jax.random.PRNGKey(1), 0.05)
    copies = tuple(jax.tree_util.tree_map(lambda a, i=i: a[i], params) for i in range(n))
    kernels = [np.asarray(c[0]["params"]["Dense_0"]["kernel"]) for c in copies]
    assert not np.allclose(kernels[0], kernels[1])  # each copy has its own initialisation
    unrolled = core.chain(*[block] * n)
    z = jax.random.normal(jax.random.PRNGKey(2), (d,))
    for f in ("apply_and_log_det", "inverse_and_log_det"):
        got, want = getattr(rep, f)(params, z), getattr(unrolled, f)(copies, z)
        np.testing.assert_allclose(got[0], want[0], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(got[1], want[1], rtol=1e-5, atol=1e-5)
    # one traced copy of the block, whatever n: the conditioner's matmuls appear once, not n times
    dots = str(jax.make_jaxpr(rep.apply)(params, z)).count("dot_general")
    assert dots == str(jax.make_jaxpr(block.apply)(copies[0], z)).count("dot_general") > 0
    assert str(jax.make_jaxpr(unrolled.apply)(copies, z)).count("dot_general") == n * dots


def test_user_plugin_bijector():
    """A plugin is three pure functions; it composes with genlearn's own layers."""
    def init(key):
        return {"a": jnp.array(0.5)}

    def fwd(p, z):
        return z + p["a"] * jnp.tanh(z), jnp.sum(jnp.log1p(p["a"] * (1 - jnp.tanh(z) ** 2)))

    def inv(p, x):  # a few Newton steps suffice for this contraction
        z = x
        for _ in range(30):
            f = z + p["a"] * jnp.tanh(z) - x
            z = z - f / (1 + p["a"] * (1 - jnp.tanh(z) ** 2))
        return z, -fwd(p, z)[1]

    plug = gl.make_bijector(init, fwd, inv, dim=2)
    flow = gl.make_flow(core.standard_normal(2), gl.chain(plug, flows.coupling(2, flows.affine(), hidden=H)))
    params = perturb(flow.init(jax.random.PRNGKey(0)), jax.random.PRNGKey(1), 0.05)
    x = flow.sample(params, jax.random.PRNGKey(2), 5)
    np.testing.assert_allclose(flow.apply(params, flow.inverse(params, x)), x, atol=1e-5)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: flows.realnvp(1), "dim must be an integer >= 2"),
        (lambda: flows.nice(2, num_layers=0), "num_layers must be an integer >= 1"),
        (lambda: flows.realnvp(2, hidden=(0,)), "hidden"),
        (lambda: flows.realnvp(2, max_log_scale=-1.0), "max_log_scale"),
        (lambda: flows.realnvp(2, min_scale=0.0), "min_scale"),
        (lambda: flows.realnvp(2, scale="tanh"), "scale must be 'softplus' or 'exp'"),
        (lambda: flows.realnvp(2, mask="checker"), "unknown mask"),
        (lambda: flows.coupling(2, flows.affine(), hidden_init="he"), "hidden_init"),
        (lambda: flows.masked_autoregressive(3, hidden_init="he"), "hidden_init"),
        (lambda: flows.realnvp(2, mask="diagonal"), "unknown mask"),
        (lambda: flows.realnvp(2, base="cauchy"), "unknown base"),
        (lambda: flows.coupling(3, flows.affine(), mask=np.ones(3, bool)), "mask must transform"),
        (lambda: core.permutation([0, 0, 1]), "permutation"),
        (lambda: core.chain(core.scale(2), core.scale(3)), "same dim"),
        (lambda: core.chain(), "at least one"),
        (lambda: core.repeat(core.scale(2), 0), "n must be an integer >= 1"),
        (lambda: core.repeat(core.scale(2), 2.0), "n must be an integer >= 1"),
        (lambda: core.fixed_affine(np.zeros(2), np.array([1.0, 0.0])), "scale must be finite and > 0"),
        (lambda: core.logit_box(2, alpha=0.7), "alpha"),
    ],
)
def test_invalid_hyperparameters(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_wrong_shapes_are_named():
    bij = flows.realnvp(3, num_layers=2, hidden=H).bijector
    params = bij.init(jax.random.PRNGKey(0))
    with pytest.raises(ValueError, match=r"one example of shape \(3,\), got shape \(2,\)"):
        bij.apply(params, jnp.zeros(2))
    with pytest.raises(ValueError, match=r"got shape \(4, 3\)"):
        bij.inverse(params, jnp.zeros((4, 3)))


def test_softplus_scale_is_bounded_above_and_unchanged_below_one():
    """s = softplus(raw + c) + floor, its log soft-bounded above by B: exact for s <= 1, e^B at most."""
    bound, floor = 5.0, 1e-2
    t = flows.affine("softplus", min_scale=floor, max_log_scale=bound)
    raw = jnp.concatenate([jnp.linspace(-30.0, 5.0, 1001), jnp.geomspace(5.1, 1e6, 1000)])
    h = jnp.stack([raw, jnp.zeros_like(raw)], 1)
    z, ld = jax.vmap(lambda hi: t.inverse(hi[None], jnp.ones(1)))(h)
    s_unbounded = jax.nn.softplus(raw + np.log(np.expm1(1.0 - floor))) + floor
    below = s_unbounded <= 1.0
    assert int(below.sum()) > 800
    np.testing.assert_allclose(z[below, 0], s_unbounded[below], rtol=1e-6)
    assert bound - 0.05 < float(ld.max()) <= bound  # approaches the bound, never passes it
    np.testing.assert_allclose(jnp.exp(ld), z[:, 0], rtol=1e-5)  # log-det is log s
    assert float(jnp.diff(ld).min()) >= 0.0  # still monotone in raw
    x, ld_f = jax.vmap(lambda hi, zi: t.forward(hi[None], zi))(h, z)
    np.testing.assert_allclose(x[:, 0], 1.0, rtol=1e-5)
    np.testing.assert_allclose(ld_f, -ld, rtol=1e-6)


@pytest.mark.parametrize("family", ["maf", "iaf", "realnvp", "glow"])
def test_affine_flows_stay_finite_far_from_the_data(family):
    """A ReLU conditioner answers a far-out point with a scale proportional to it; unbounded, |z| would square
    from layer to layer and overflow float32 within a few layers (the log-density of a trained MAF's training
    points became -inf and training stopped). With the soft bound the density stays finite; with the bound
    lifted (B = 1e4) the same params overflow, so the check can fail."""
    kw = dict(num_layers=16, hidden=(32, 32))
    make = {"maf": flows.maf, "iaf": flows.iaf, "realnvp": flows.realnvp,
            "glow": lambda d, **k: flows.glow(d, data_init=False, **k)}[family]
    x = 3.0 * jax.random.normal(jax.random.PRNGKey(2), (512, 2))
    counts = {}
    for bound in (5.0, 1e4):
        f = make(2, max_log_scale=bound, **kw)
        p = perturb(f.init(jax.random.PRNGKey(0)), jax.random.PRNGKey(1), 0.5)
        counts[bound] = int(jnp.sum(~jnp.isfinite(jax.jit(f.log_prob)(p, x))))
    assert counts[5.0] == 0
    assert counts[1e4] > 0
