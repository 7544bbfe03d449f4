"""Coupling layers place each coordinate where its mask says, whatever the mask.

The coupling reads and writes coordinates with slices, strided slices,
concatenation or interleaving when the mask allows (cheaper than gathers), and
falls back to a gather otherwise. A wrong placement would still be a bijection
with a correct log-det, so the round-trip tests cannot see it: here the
conditioning coordinates must come out unchanged, and the transformed ones must
equal the transformer applied to the conditioner's output.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from genlearn import flows
from genlearn.flows import affine, coupling, half_mask, parity_mask
from genlearn.nn import MLP
from tests.helpers import perturb

MASKS = {
    "half": lambda d: half_mask(d),
    "half_swapped": lambda d: half_mask(d, swap=True),
    "parity": lambda d: parity_mask(d),
    "parity_swapped": lambda d: parity_mask(d, swap=True),
    "irregular": lambda d: np.isin(np.arange(d), [0, 2, 3, d - 1]),
}


@pytest.mark.parametrize("name, dim", [("half", 6), ("half_swapped", 5), ("parity", 6),
                                       ("parity_swapped", 6), ("parity", 5), ("irregular", 6)])
def test_coordinates_land_where_the_mask_says(name, dim):
    mask = MASKS[name](dim)
    layer = coupling(dim, affine("exp"), mask=mask, hidden=(8,))
    params = perturb(layer.init(jax.random.key(0)), jax.random.key(1))
    z = jax.random.normal(jax.random.key(2), (dim,))
    x, log_det = layer.apply_and_log_det(params, z)

    cond, trans = np.flatnonzero(~mask), np.flatnonzero(mask)
    net = MLP(hidden=(8,), out=2 * trans.size, zero_init_last=True)
    h = net.apply(params, z[cond]).reshape(trans.size, 2)
    u = 5.0 * jnp.tanh(h[:, 0] / 5.0)
    np.testing.assert_array_equal(x[cond], z[cond])
    np.testing.assert_allclose(x[trans], z[trans] * jnp.exp(u) + h[:, 1], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(log_det, jnp.sum(u), rtol=1e-6)
    z_back, _ = layer.inverse_and_log_det(params, x)
    np.testing.assert_allclose(z_back, z, atol=1e-5)


def test_residual_conditioner_adds_each_equal_width_layer_to_its_input():
    """``residual=True``: h -> h + relu(W h + b) between hidden layers of equal width (none where the width
    changes), the same parameters as the plain MLP; a coupling built with it conditions through that net."""
    x = jax.random.normal(jax.random.key(0), (3,))
    for hidden in ((8, 8, 8), (8, 16, 16)):
        plain, res = MLP(hidden, 4), MLP(hidden, 4, residual=True)
        params = plain.init(jax.random.key(1), x)
        assert jax.tree.structure(res.init(jax.random.key(1), x)) == jax.tree.structure(params)
        p = params["params"]
        h = jax.nn.relu(x @ p["Dense_0"]["kernel"] + p["Dense_0"]["bias"])
        for i, width in enumerate(hidden[1:], start=1):
            y = jax.nn.relu(h @ p[f"Dense_{i}"]["kernel"] + p[f"Dense_{i}"]["bias"])
            h = h + y if h.shape[-1] == width else y
        out = h @ p[f"Dense_{len(hidden)}"]["kernel"] + p[f"Dense_{len(hidden)}"]["bias"]
        np.testing.assert_allclose(res.apply(params, x), out, rtol=1e-5, atol=1e-6)
        assert not np.allclose(plain.apply(params, x), out, atol=1e-3)  # the skips change the function

    mask = half_mask(6)
    layer = coupling(6, affine("exp"), mask=mask, hidden=(8, 8), residual=True)
    params = perturb(layer.init(jax.random.key(0)), jax.random.key(1))
    z = jax.random.normal(jax.random.key(2), (6,))
    x_out, log_det = layer.apply_and_log_det(params, z)
    h = MLP((8, 8), 6, zero_init_last=True, hidden_init="uniform", residual=True).apply(params, z[:3]).reshape(3, 2)
    u = 5.0 * jnp.tanh(h[:, 0] / 5.0)
    np.testing.assert_allclose(x_out[3:], z[3:] * jnp.exp(u) + h[:, 1], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(log_det, jnp.sum(u), rtol=1e-6)
    for make in (lambda: coupling(4, affine(), residual="yes"),
                 lambda: flows.spline(4, 2, (8, 8), kind="autoregressive", residual=True)):
        with pytest.raises(ValueError, match="residual"):
            make()


def test_default_layouts_are_random_above_two_dims_and_alternating_at_two():
    """mask=None / order=None (the factories' defaults): random halves and orders per layer above 2-D
    (flowjax's random permutations), alternating ones at 2-D; `genlearn fit` records the resolved value,
    and a run saved before it did rebuilds with the alternating layout it was trained with."""
    from genlearn import flows
    from genlearn.data import load_dataset
    from genlearn.data.files import from_array
    from genlearn.flows import run as flow_run
    from genlearn.flows._common import alternating_masks
    from genlearn.flows.autoregressive import layer_orders

    for d, mask, order in ((2, "half", "alternate"), (5, "random", "random")):
        np.testing.assert_array_equal(alternating_masks(d, 4, None, 3), alternating_masks(d, 4, mask, 3))
        assert layer_orders(d, 4, None, 3) == layer_orders(d, 4, order, 3)
    assert len({tuple(m) for m in alternating_masks(6, 8, None)}) > 2  # not two alternating halves
    assert len(set(layer_orders(6, 8, None))) > 2
    x = jax.random.normal(jax.random.PRNGKey(1), (7, 5))
    # the spline's couplings take their masks from alternating_masks as RealNVP's do, IAF its orders as MAF
    for make, kw in ((flows.realnvp, {"mask": "random"}), (flows.nice, {"mask": "random"}),
                     (flows.maf, {"order": "random"})):
        default, explicit = make(5, 2, (8,)), make(5, 2, (8,), **kw)
        params = perturb(default.init(jax.random.PRNGKey(0)), jax.random.PRNGKey(2), 0.3)
        np.testing.assert_allclose(default.log_prob(params, x), explicit.log_prob(params, x), rtol=1e-6)

    toy = load_dataset("moons", seed=0)
    wide = from_array(np.random.default_rng(0).normal(size=(200, 6)) @ np.triu(np.ones((6, 6))))  # a data file
    for name, keyword, on_toy, on_wide in (("realnvp", "mask", "half", "random"), ("nice", "mask", "half", "random"),
                                           ("spline", "mask", "half", "random"), ("glow", "mask", "half", "half"),
                                           ("maf", "order", "alternate", "random"), ("iaf", "order", "alternate", "random")):
        assert flow_run.defaults(name, toy)[keyword] == on_toy, name
        assert flow_run.defaults(name, wide)[keyword] == on_wide, name
    pre, x = flow_run.preprocess(wide), jnp.asarray(wide.test[:5])
    assert flow_run.defaults("nice", toy)["scale_at"] == flow_run.defaults("nice", wide)["scale_at"] == "base"
    assert flow_run.defaults("maf", toy)["max_log_scale"] == flow_run.defaults("maf", wide)["max_log_scale"] == 4.0
    assert "max_log_scale" not in flow_run.defaults("iaf", toy)  # IAF's bound stays the factory's 5
    for name, keyword, then in (("nice", "mask", "half"), ("maf", "order", "alternate"), ("nice", "scale_at", "data"),
                                ("maf", "max_log_scale", 5.0)):
        old = {k: v for k, v in flow_run.defaults(name, wide).items() if k != keyword}  # saved before it was recorded
        old.update(num_layers=2, hidden=[8])
        rebuilt, want = flow_run.build(name, old, 6, pre), flow_run.build(name, {**old, keyword: then}, 6, pre)
        params = perturb(want.init(jax.random.PRNGKey(0)), jax.random.PRNGKey(2), 0.3)
        np.testing.assert_allclose(rebuilt.log_prob(params, x), want.log_prob(params, x), rtol=1e-6)
        if keyword == "max_log_scale":  # the same parameters; today's bound gives another density
            now = flow_run.build(name, {**old, keyword: flow_run.defaults(name, wide)[keyword]}, 6, pre)
            assert not np.allclose(now.log_prob(params, x), want.log_prob(params, x), rtol=1e-6)


def test_random_halves_transform_every_coordinate():
    """Independent random halves, but the last is redrawn when an earlier-untouched coordinate would
    stay untransformed (seed 0, d = 8, 4 layers left coordinate 5 alone); covered layouts are kept."""
    from genlearn.flows._common import alternating_masks

    for dim, layers in [(3, 2), (5, 2), (7, 3), (8, 4), (9, 5), (16, 3)]:
        for seed in range(40):
            masks = np.array(alternating_masks(dim, layers, "random", seed))
            assert masks.any(axis=0).all(), (dim, layers, seed)
            np.testing.assert_array_equal(masks.sum(axis=1), dim - dim // 2)
    for dim in (8, 16, 64):  # the learning-curve layouts cover every coordinate: independent draws kept
        rng = np.random.default_rng(0)
        drawn = [half_mask(dim)[rng.permutation(dim)] for _ in range(8)]
        np.testing.assert_array_equal(alternating_masks(dim, 8, "random", 0), drawn)
    rng = np.random.default_rng(0)
    drawn = np.array([half_mask(8)[rng.permutation(8)] for _ in range(4)])
    assert not drawn.any(axis=0)[5]  # the case the redraw exists for
    np.testing.assert_array_equal(alternating_masks(8, 4, "random", 0)[:3], drawn[:3])


SCANNED = {  # name -> flow(num_layers, scan): every factory whose alternating layers are one scanned pair
    "realnvp": lambda n, scan: flows.realnvp(2, n, (8,), scan=scan),
    "maf": lambda n, scan: flows.maf(2, n, (8,), scan=scan),
    "iaf": lambda n, scan: flows.iaf(2, n, (8,), scan=scan),
    "spline": lambda n, scan: flows.spline(2, n, (8,), scan=scan),
    "spline_autoregressive": lambda n, scan: flows.spline(2, n, (8,), kind="autoregressive", scan=scan),
    "realnvp_parity_5d": lambda n, scan: flows.realnvp(5, n, (8,), mask="parity", scan=scan),
    "spline_residual": lambda n, scan: flows.spline(2, n, (8, 8), scan=scan, residual=True),
}


# Every flow at an odd depth (two stacked pairs and the extra layer); an even depth (pairs only) for RealNVP and
# the spline in the default suite and for the others under `pytest -m slow`: all build their layers through
# flows._common.stacked_layers (~5 s a case at the suite's optimisation level).
_EVEN_BY_DEFAULT = ("realnvp", "spline")


@pytest.mark.parametrize("name,num_layers", [
    pytest.param(n, k, id=f"{k}-{n}", marks=() if k == 5 or n in _EVEN_BY_DEFAULT else pytest.mark.slow)
    for k in (4, 5) for n in SCANNED])
def test_alternating_layers_are_one_scanned_pair(name, num_layers):
    """With alternating masks or orders the layers are one pair repeated under lax.scan (params stacked
    along a leading axis; an odd depth ends with one more layer): the same density and samples as the
    unrolled layers holding the same params."""
    scanned, unrolled = SCANNED[name](num_layers, True), SCANNED[name](num_layers, False)
    params = perturb(scanned.init(jax.random.PRNGKey(0)), jax.random.PRNGKey(1), 0.3)
    (first, second), *last = params["bijector"]
    assert jax.tree_util.tree_leaves(first)[0].shape[0] == num_layers // 2  # stacked, not a list of layers
    layers = [jax.tree_util.tree_map(lambda a, i=i: a[i], pair) for i in range(num_layers // 2)
              for pair in (first, second)] + last
    flat = {**params, "bijector": tuple(layers)}
    assert jax.tree_util.tree_structure(flat) == jax.tree_util.tree_structure(unrolled.init(jax.random.PRNGKey(0)))
    d = scanned.dim
    x = jax.random.normal(jax.random.PRNGKey(2), (9, d)) * 2.0
    # 1e-5 under XLA's default CPU code generation; the suite's faster-compiling emitters (tests/conftest.py)
    # round the 5-layer spline differently: 2 of 9 log-densities 2e-4 relative apart. A wrong layer order or
    # params layout is off by O(1)
    tol = dict(rtol=1e-3, atol=1e-4) if "spline" in name else dict(rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(scanned.log_prob(params, x), unrolled.log_prob(flat, x), **tol)
    np.testing.assert_allclose(scanned.sample(params, jax.random.PRNGKey(3), 9),
                               unrolled.sample(flat, jax.random.PRNGKey(3), 9), **tol)


@pytest.mark.parametrize("name", ["realnvp", "maf", "iaf", "spline"])
def test_fit_records_the_scan_and_old_runs_rebuild_unrolled(name):
    """`genlearn fit` records scan=True; a run saved before it (no "scan" in its options) rebuilds
    unrolled, the params layout it was saved with, so its checkpoint still restores."""
    from genlearn.data import load_dataset
    from genlearn.flows import run as flow_run

    moons = load_dataset("moons", seed=0)
    options = {**flow_run.defaults(name, moons), "num_layers": 4, "hidden": [8]}
    assert options["scan"] is True
    pre, x = flow_run.preprocess(moons), jnp.asarray(moons.train[:64])  # >= the mixture base's 32 components
    old = {k: v for k, v in options.items() if k != "scan"}  # saved before the scan was recorded
    for opts, scan in ((options, True), (old, False)):
        got = flow_run.build(name, opts, 2, pre).init(jax.random.PRNGKey(0), x)["bijector"]
        want = SCANNED[name](4, scan).init(jax.random.PRNGKey(0))["bijector"]
        assert jax.tree_util.tree_structure(got) == jax.tree_util.tree_structure(want), (name, scan)


def test_affine_flows_on_2d_toys_default_to_a_mixture_base_fitted_to_the_data(tmp_path):
    """The CLI's flows take a 32-component mixture base on 2-D continuous data (not on wider data or pixels; the
    CNF only when trained by flow matching, then with the component coupling), the spline and NICE with a 5 %
    learning-rate warmup (NICE at a peak rate of 1e-4); the run records both; ``--components`` sets K and a K beyond the
    initialisation batch is refused by name; a run saved with ``--base mixture`` before K was recorded rebuilds
    with 8; and the trained model's initial density is the EM fit's (the base starts at the data)."""
    from genlearn import runs
    from genlearn.data import load_dataset
    from genlearn.data.files import from_array
    from genlearn.flows import run as flow_run

    toy = load_dataset("ring8", seed=0)
    wide = from_array(np.random.default_rng(0).normal(size=(200, 6)))
    digits = load_dataset("digits")
    for name in flow_run.FACTORIES:
        on_toy = flow_run.defaults(name, toy)
        assert on_toy["base"] == "mixture", name
        assert on_toy["base_components"] == 32
        assert on_toy["warmup"] == (0.05 if name in ("spline", "nice") else 0.0), name
        assert flow_run.defaults(name, wide)["base"] != "mixture" and flow_run.defaults(name, digits)["base"] != "mixture"
    pre = flow_run.preprocess(toy)
    options = {**flow_run.defaults("realnvp", toy), "num_layers": 2, "hidden": [8]}
    model = flow_run.build("realnvp", options, 2, pre)
    x = jnp.asarray(toy.train[:1024])
    params = model.init(jax.random.PRNGKey(0), x)
    assert params["base"]["means"].shape == (32, 2)
    # the initial model is about as good as a GMM: ring8's eight modes, far below the best Gaussian's NLL
    assert float(-jnp.mean(model.log_prob(params, jnp.asarray(toy.test)))) < float(
        -jnp.mean(model.log_prob(model.init(jax.random.PRNGKey(0)), jnp.asarray(toy.test)))) - 2.0
    old = {k: v for k, v in options.items() if k != "base_components"}  # saved at stop 34 with --base mixture
    assert flow_run.build("realnvp", old, 2, pre).init(jax.random.PRNGKey(0))["base"]["means"].shape == (8, 2)
    small = from_array(np.random.default_rng(0).normal(size=(100, 2)))  # 80 training rows: K = 80 // 8
    assert small.train.shape[0] == 80 and flow_run.defaults("realnvp", small)["base_components"] == 10
    with pytest.raises(ValueError, match="--components 2000 exceeds the 1024 rows"):
        runs.fit("maf", toy, {"base_components": 2000, "steps": 1}, out=None, progress=False)
    # NICE on the mixture at a peak rate of 1e-4, on N(0, I) (asked for) at 3e-3
    assert flow_run.defaults("nice", toy)["learning_rate"] == 1e-4
    assert flow_run.defaults("nice", toy, {"base": "normal"})["learning_rate"] == 3e-3
    assert flow_run.defaults("nice", wide)["learning_rate"] == 3e-3
    # the CNF: by flow matching, each row paired with its component; by maximum likelihood, and elsewhere, N(0, I)
    assert flow_run.defaults("cnf", toy)["coupling"] == "component"
    assert flow_run.defaults("cnf", toy, {"objective": "mle"})["base"] == "normal"
    assert flow_run.defaults("cnf", toy, {"base": "normal"})["coupling"] == "independent"
    assert flow_run.defaults("cnf", wide)["coupling"] == "independent"
    _, cfg, _ = runs.fit("realnvp", toy, {"base_components": 4, "steps": 2, "num_layers": 2, "hidden": [8]},
                         out=str(tmp_path / "run"), progress=False)
    assert cfg["options"]["base"] == "mixture" and cfg["options"]["base_components"] == 4


def test_the_flow_matching_cnf_keeps_its_mixture_base_at_the_fit_to_every_training_row():
    """Flow matching never moves the base, so the run fits it to all training rows, not the first INIT_ROWS:
    after a run its mean log-likelihood of the training set beats a fit to the first 1024 rows (EM of the same
    K on fewer rows), and a second run's base is the same up to EM's seeding."""
    from genlearn import core, runs
    from genlearn.data import load_dataset
    from genlearn.flows import run as flow_run

    toy = load_dataset("ring8", n_train=4000, n_test=200, seed=0)
    params, cfg, _ = runs.fit("cnf", toy, {"steps": 1, "hidden": [8], "base_components": 16}, progress=False)
    assert cfg["options"]["coupling"] == "component"
    pre = flow_run.preprocess(toy)
    u = (np.asarray(toy.train) - np.asarray(pre["mean"])) / np.asarray(pre["std"])
    base = core.gaussian_mixture(2, 16)
    ll = lambda p: float(jnp.mean(jax.vmap(base.log_prob, (None, 0))(p, jnp.asarray(u, jnp.float32))))  # noqa: E731
    first_rows = base.fit(jax.random.PRNGKey(0), u[:flow_run.INIT_ROWS])
    assert ll(params["base"]) > ll(first_rows) + 0.01, (ll(params["base"]), ll(first_rows))
