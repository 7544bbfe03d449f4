"""Tests for genlearn.data: toy generators, digits, registry, scaling, checks."""

from __future__ import annotations

import math
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import genlearn.data as gd
from genlearn.data import digits as digits_mod
from genlearn.data import registry as registry_mod
from genlearn.data import scaling as scaling_mod
from genlearn.data import toys as toys_mod
from genlearn.data import validation as validation_mod

# One sample size for every toy test: JAX caches compiled ops per shape, so
# reusing N keeps the whole file fast.
N = 4097  # odd, so the half/half splits of moons and circles see odd n
KEY = jax.random.PRNGKey(0)
HYP = settings(deadline=None)  # example count comes from the conftest profile

TOYS = {
    "two_moons": gd.two_moons,
    "circles": gd.circles,
    "ring8": gd.ring8,
    "grid25": gd.grid25,
    "checkerboard": gd.checkerboard,
    "pinwheel": gd.pinwheel,
    "two_spirals": gd.two_spirals,
    "swiss_roll": gd.swiss_roll,
}

# Non-negative scale parameters of each generator.
SCALE_PARAMS = {
    "two_moons": ["noise"],
    "circles": ["noise"],
    "ring8": ["std"],
    "grid25": ["std"],
    "checkerboard": [],
    "pinwheel": ["radial_std", "tangential_std"],
    "two_spirals": ["noise"],
    "swiss_roll": ["noise"],
}


@pytest.fixture(scope="module")
def samples():
    return {name: np.asarray(f(KEY, N)) for name, f in TOYS.items()}


# ----------------------------------------------------------------------------
# Package surface
# ----------------------------------------------------------------------------


def test_all_exports_resolve_and_cover_submodules():
    for name in gd.__all__:
        assert hasattr(gd, name), name
    for mod in (digits_mod, registry_mod, scaling_mod, toys_mod, validation_mod):
        assert set(mod.__all__) <= set(gd.__all__), mod.__name__


# ----------------------------------------------------------------------------
# Toys: shapes, determinism, jit
# ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(TOYS))
def test_toy_shape_dtype_finite(samples, name):
    x = samples[name]
    assert x.shape == (N, 2)
    assert x.dtype == np.float32
    assert np.all(np.isfinite(x))


@pytest.mark.parametrize("name", sorted(TOYS))
def test_toy_same_key_same_data_different_key_different(samples, name):
    f = TOYS[name]
    np.testing.assert_array_equal(np.asarray(f(KEY, N)), samples[name])
    other = np.asarray(f(jax.random.PRNGKey(1), N))
    assert not np.allclose(other, samples[name])


def test_toy_accepts_typed_keys():
    x = gd.ring8(jax.random.key(0), 16)
    assert x.shape == (16, 2) and x.dtype == jnp.float32


@pytest.mark.parametrize("name", sorted(TOYS))
def test_toy_traces_with_static_n(name):
    # Tracing (what jax.jit does before compiling) must succeed for any n;
    # eval_shape checks the output shape without paying for compilation.
    f = TOYS[name]
    for n in (1, 2, 3):
        out = jax.eval_shape(lambda k: f(k, n), KEY)
        assert out.shape == (n, 2) and out.dtype == jnp.float32


def test_toy_jit_matches_eager_with_traced_scale_parameters(samples):
    f = jax.jit(gd.ring8, static_argnums=1)
    np.testing.assert_allclose(
        np.asarray(f(KEY, N, 2.0, 0.02)), samples["ring8"], atol=1e-6
    )
    x = f(KEY, N, 2.0, 0.0)
    np.testing.assert_allclose(np.linalg.norm(np.asarray(x), axis=1), 2.0, rtol=1e-5)
    g = jax.jit(gd.two_moons, static_argnums=1)
    np.testing.assert_allclose(
        np.asarray(g(KEY, N, 0.05)), samples["two_moons"], atol=1e-6
    )


@pytest.mark.parametrize("name", sorted(TOYS))
@pytest.mark.parametrize("n", [0, -3])
def test_toy_rejects_nonpositive_n(name, n):
    with pytest.raises(ValueError, match="n must be >= 1"):
        TOYS[name](KEY, n)


@pytest.mark.parametrize("name", sorted(TOYS))
def test_toy_rejects_non_integer_n(name):
    with pytest.raises(ValueError, match="n must be an integer"):
        TOYS[name](KEY, 2.5)


@pytest.mark.parametrize(
    "name,param",
    [(name, p) for name, params in SCALE_PARAMS.items() for p in params],
)
def test_toy_rejects_negative_noise_or_std(name, param):
    with pytest.raises(ValueError, match=f"{param} must be >= 0"):
        TOYS[name](KEY, 8, **{param: -0.1})


def test_other_parameter_checks():
    with pytest.raises(ValueError, match="factor"):
        gd.circles(KEY, 8, factor=1.5)
    with pytest.raises(ValueError, match="radius must be > 0"):
        gd.ring8_centers(0.0)
    with pytest.raises(ValueError, match="spacing must be > 0"):
        gd.grid25(KEY, 8, spacing=-1.0)
    with pytest.raises(ValueError, match="num_arms"):
        gd.pinwheel(KEY, 8, num_arms=0)
    with pytest.raises(ValueError, match="noise must be finite"):
        gd.two_moons(KEY, 8, noise=float("nan"))


# ----------------------------------------------------------------------------
# Toys: geometry
# ----------------------------------------------------------------------------


def _moon_distances(p):
    """Distances of (n, 2) points to the outer and inner sklearn moon arcs."""

    def arc(q, upper):
        on_side = q[:, 1] >= 0 if upper else q[:, 1] <= 0
        radial = np.abs(np.linalg.norm(q, axis=1) - 1.0)
        ends = np.minimum(
            np.linalg.norm(q - [1.0, 0.0], axis=1),
            np.linalg.norm(q + [1.0, 0.0], axis=1),
        )
        return np.where(on_side, radial, ends)

    return arc(p, upper=True), arc(p - [1.0, 0.5], upper=False)


def test_moons_noiseless_points_lie_on_the_two_arcs():
    x = np.asarray(gd.two_moons(KEY, N, noise=0.0), dtype=np.float64)
    d_out, d_in = _moon_distances(x)
    assert np.max(np.minimum(d_out, d_in)) < 1e-5
    on_outer = d_out < d_in
    assert on_outer.sum() == N // 2  # half the points per arc
    # The arcs are interleaved in the row order, not stacked.
    assert 0.4 < on_outer[: N // 2].mean() < 0.6


def test_moons_noisy_points_are_within_noise_of_an_arc(samples):
    noise = 0.05
    d_out, d_in = _moon_distances(samples["two_moons"].astype(np.float64))
    dist = np.minimum(d_out, d_in)
    # |N(0, s^2 I_2)| is Rayleigh: P(> 5 s) = exp(-12.5) ~ 4e-6.
    assert dist.max() < 5 * noise
    assert 0.5 * noise < np.sqrt(np.mean(dist**2)) < 1.5 * noise


def test_circles_noiseless_radii():
    x = np.asarray(gd.circles(KEY, N, noise=0.0, factor=0.3))
    r = np.linalg.norm(x, axis=1)
    outer = np.abs(r - 1.0) < 1e-5
    inner = np.abs(r - 0.3) < 1e-5
    assert np.all(outer | inner)
    assert outer.sum() == N // 2


def _mode_assignment(x, centers):
    d = np.linalg.norm(x[:, None, :] - centers[None, :, :], axis=-1)
    return d.argmin(axis=1), d.min(axis=1)


@pytest.mark.parametrize(
    "name,centers_fn,k",
    [("ring8", gd.ring8_centers, 8), ("grid25", gd.grid25_centers, 25)],
)
def test_mixture_samples_near_centres_and_balanced(samples, name, centers_fn, k):
    std = 0.02
    centers = np.asarray(centers_fn())
    assert centers.shape == (k, 2) and centers.dtype == np.float32
    x = samples[name]
    idx, dist = _mode_assignment(x, centers)
    # Per coordinate, 4 std is exceeded with probability 6e-5.
    within4 = np.all(np.abs(x - centers[idx]) < 4 * std, axis=1)
    assert within4.mean() > 0.99
    assert dist.max() < 6 * std
    counts = np.bincount(idx, minlength=k)
    p = 1.0 / k
    binom_sd = math.sqrt(N * p * (1 - p))
    assert np.all(np.abs(counts - N * p) < 5 * binom_sd), counts
    np.testing.assert_allclose(x.std(axis=0), centers.std(axis=0), rtol=0.1)


def test_mixture_centres_values():
    c8 = np.asarray(gd.ring8_centers(2.0))
    np.testing.assert_allclose(np.linalg.norm(c8, axis=1), 2.0, rtol=1e-6)
    angles = np.sort(np.mod(np.arctan2(c8[:, 1], c8[:, 0]), 2 * np.pi))
    np.testing.assert_allclose(np.diff(angles), np.pi / 4, atol=1e-5)
    c25 = np.asarray(gd.grid25_centers())
    grid = np.array([[a, b] for a in (-4, -2, 0, 2, 4) for b in (-4, -2, 0, 2, 4)])
    np.testing.assert_array_equal(c25, grid)
    np.testing.assert_array_equal(np.asarray(gd.grid25_centers(1.0)), grid / 2)


def test_checkerboard_uses_only_the_dark_squares(samples):
    x = samples["checkerboard"]
    assert np.all((x >= -4) & (x < 4))
    sq = np.floor(x / 2).astype(int)
    assert np.all((sq[:, 0] + sq[:, 1]) % 2 == 0)
    cell = (sq[:, 0] + 2) * 4 + (sq[:, 1] + 2)
    counts = np.bincount(cell, minlength=16)
    assert np.count_nonzero(counts) == 8
    binom_sd = math.sqrt(N / 8 * 7 / 8)
    assert np.all(np.abs(counts[counts > 0] - N / 8) < 5 * binom_sd)


def test_two_spirals_noiseless_points_lie_on_the_spirals():
    x = np.asarray(gd.two_spirals(KEY, N, noise=0.0), dtype=np.float64)
    t = 3 * np.linalg.norm(x, axis=1)  # |p| = t / 3
    assert t.max() <= 3 * np.pi + 1e-4
    curve = np.stack([-t * np.cos(t), t * np.sin(t)], axis=1) / 3
    d = np.minimum(
        np.linalg.norm(x - curve, axis=1), np.linalg.norm(x + curve, axis=1)
    )
    assert d.max() < 1e-3
    on_first = np.linalg.norm(x - curve, axis=1) < np.linalg.norm(x + curve, axis=1)
    assert 0.45 < on_first.mean() < 0.55


def test_swiss_roll_noiseless_points_lie_on_the_roll():
    x = 5 * np.asarray(gd.swiss_roll(KEY, N, noise=0.0), dtype=np.float64)
    t = np.linalg.norm(x, axis=1)
    assert t.min() >= 1.5 * np.pi - 1e-3 and t.max() <= 4.5 * np.pi + 1e-3
    curve = np.stack([t * np.cos(t), t * np.sin(t)], axis=1)
    assert np.max(np.linalg.norm(x - curve, axis=1)) < 1e-3


def test_swiss_roll_default_is_roughly_unit_scale(samples):
    x = samples["swiss_roll"]
    assert 0.5 < x.std() < 2.0
    assert np.abs(x).max() < 4.0


def test_pinwheel_degenerate_spread_gives_one_point_per_arm():
    x = np.asarray(
        gd.pinwheel(KEY, N, num_arms=3, radial_std=0.0, tangential_std=0.0)
    )
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 2.0, rtol=1e-5)
    assert len(np.unique(np.round(x, 4), axis=0)) == 3


def test_pinwheel_arms_are_balanced(samples):
    x = samples["pinwheel"]
    r = np.linalg.norm(x, axis=1)
    assert 1.5 < np.median(r) < 2.5
    np.testing.assert_allclose(x.mean(axis=0), 0.0, atol=0.1)


# ----------------------------------------------------------------------------
# Digits, dequantization, bits/dim
# ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def digits_split():
    return gd.load_digits_split(seed=0)


def test_digits_split_sizes_dtype_and_values(digits_split):
    train, test = digits_split
    assert train.shape == (1400, 64) and test.shape == (397, 64)
    assert train.dtype == np.float32 and test.dtype == np.float32
    for x in (train, test):
        assert np.all(x == np.round(x))
        assert x.min() == 0 and x.max() == gd.DIGITS_LEVELS - 1


def test_digits_split_is_the_documented_permutation(digits_split):
    from sklearn.datasets import load_digits

    train_idx, test_idx = gd.digits_split_indices(0, 1400)
    assert len(np.intersect1d(train_idx, test_idx)) == 0
    np.testing.assert_array_equal(
        np.sort(np.concatenate([train_idx, test_idx])), np.arange(1797)
    )
    perm = np.random.default_rng(0).permutation(1797)
    np.testing.assert_array_equal(train_idx, perm[:1400])
    data = load_digits().data.astype(np.float32)
    np.testing.assert_array_equal(digits_split[0], data[train_idx])
    np.testing.assert_array_equal(digits_split[1], data[test_idx])


def test_digits_reproducible_and_seed_dependent(digits_split):
    train, test = gd.load_digits_split(seed=0)
    np.testing.assert_array_equal(train, digits_split[0])
    np.testing.assert_array_equal(test, digits_split[1])
    other_train, _ = gd.load_digits_split(seed=1)
    assert not np.array_equal(other_train, train)
    small_train, small_test = gd.load_digits_split(seed=0, n_train=100)
    assert small_train.shape == (100, 64) and small_test.shape == (1697, 64)


@pytest.mark.parametrize("n_train", [0, 1797, -1])
def test_digits_rejects_bad_n_train(n_train):
    with pytest.raises(ValueError, match="n_train must be in"):
        gd.load_digits_split(n_train=n_train)


def test_digits_rejects_bad_seed():
    with pytest.raises(ValueError, match="seed must be a non-negative integer"):
        gd.load_digits_split(seed=-1)


_dequantize = jax.jit(gd.uniform_dequantize)


@HYP
@given(
    x=hnp.arrays(
        np.int32,
        st.sampled_from([(7,), (5, 64)]),
        elements=st.integers(0, gd.DIGITS_LEVELS - 1),
    ),
    seed=st.integers(0, 2**31 - 1),
)
def test_dequantize_integer_data_stays_in_unit_bin(x, seed):
    y = _dequantize(jax.random.PRNGKey(seed), x)
    assert y.shape == x.shape and y.dtype == jnp.float32
    y = np.asarray(y)
    assert np.all(y >= x) and np.all(y < x + 1)
    assert np.array_equal(np.floor(y), x)


@HYP
@given(
    x=hnp.arrays(
        np.float32,
        (6, 3),
        elements=st.floats(-1e5, 1e5, width=32),
    ),
    seed=st.integers(0, 2**31 - 1),
)
def test_dequantize_float_data_stays_in_half_open_interval(x, seed):
    y = np.asarray(_dequantize(jax.random.PRNGKey(seed), x))
    assert y.dtype == np.float32
    assert np.all(y >= x) and np.all(y < x + np.float32(1))


def test_dequantize_never_rounds_up_to_the_next_bin():
    # At 2^22 the float32 spacing is 0.5, so x + u rounds to x + 1 whenever
    # u >= 0.75; the result must be clamped below x + 1.
    x = jnp.full((4096,), 2.0**22, jnp.float32)
    y = np.asarray(gd.uniform_dequantize(KEY, x))
    assert np.all(y < 2.0**22 + 1)
    assert set(np.unique(y)) <= {2.0**22, 2.0**22 + 0.5}


@HYP
@given(
    x=hnp.arrays(np.int32, st.sampled_from([(7,), (5, 64)]), elements=st.integers(0, gd.DIGITS_LEVELS - 1)),
    seed=st.integers(0, 2**31 - 1),
)
def test_quantize_inverts_dequantize_exactly(x, seed):
    y = _dequantize(jax.random.PRNGKey(seed), x)
    back = gd.quantize(y, gd.DIGITS_LEVELS)  # jax in, jax out
    assert isinstance(back, jax.Array) and back.dtype == y.dtype
    np.testing.assert_array_equal(np.asarray(back), x)
    back_np = gd.quantize(np.asarray(y, np.float64), gd.DIGITS_LEVELS)  # numpy in, numpy out
    assert isinstance(back_np, np.ndarray) and back_np.dtype == np.float64
    np.testing.assert_array_equal(back_np, x)


def test_quantize_clips_to_the_levels_and_rejects_bad_levels():
    y = np.array([-3.2, -0.01, 0.0, 0.99, 16.5, 16.999, 17.0, 40.0])
    np.testing.assert_array_equal(gd.quantize(y, 17), [0, 0, 0, 0, 16, 16, 16, 16])
    for bad in (1, 0, -4):
        with pytest.raises(ValueError, match="levels must be an integer >= 2"):
            gd.quantize(y, bad)


def test_dequantize_is_uniform_and_key_dependent():
    x = jnp.zeros((N,), jnp.int32)
    u = np.asarray(gd.uniform_dequantize(KEY, x))
    assert abs(u.mean() - 0.5) < 0.03 and abs(u.var() - 1 / 12) < 0.01
    u2 = np.asarray(gd.uniform_dequantize(jax.random.PRNGKey(1), x))
    assert not np.allclose(u, u2)
    np.testing.assert_array_equal(u, np.asarray(gd.uniform_dequantize(KEY, x)))


def test_nats_to_bits_per_dim():
    assert gd.nats_to_bits_per_dim(64 * math.log(2.0), 64) == pytest.approx(1.0)
    # A uniform model over K^d levels costs log2(K) bits per dimension.
    k, d = gd.DIGITS_LEVELS, 64
    assert gd.nats_to_bits_per_dim(d * math.log(k), d) == pytest.approx(
        math.log2(k)
    )
    arr = gd.nats_to_bits_per_dim(jnp.array([0.0, 2 * math.log(2.0)]), 2)
    np.testing.assert_allclose(np.asarray(arr), [0.0, 1.0], rtol=1e-6)
    for bad in (0, -2, 1.5):
        with pytest.raises(ValueError, match="dim must be a positive integer"):
            gd.nats_to_bits_per_dim(1.0, bad)


@HYP
@given(
    mu=st.floats(-5, 5),
    sigma=st.floats(0.3, 5),
    offset=st.integers(-4, 4),
)
def test_dequantized_nll_upper_bounds_discrete_nll(mu, sigma, offset):
    # 1-D Gaussian density p; P(x) = mass of the bin [x, x+1).
    x = math.floor(mu) + offset
    cdf = lambda v: 0.5 * (1 + math.erf((v - mu) / (sigma * math.sqrt(2))))
    mass = cdf(x + 1) - cdf(x)
    assume(mass > 1e-12)  # beyond that erf differences lose all precision
    discrete_nll = -math.log(mass)
    # E_u[-log p(x+u)], u ~ U[0,1): E[(x+u-mu)^2] = (x+0.5-mu)^2 + 1/12.
    dequant_nll = 0.5 * math.log(2 * math.pi * sigma**2) + (
        (x + 0.5 - mu) ** 2 + 1 / 12
    ) / (2 * sigma**2)
    assert discrete_nll <= dequant_nll + 1e-9


# ----------------------------------------------------------------------------
# Registry
# ----------------------------------------------------------------------------

TOY_NAMES = ["moons", "circles", "ring8", "grid25", "checkerboard", "pinwheel",
             "spirals", "swissroll"]


def test_registry_lists_every_dataset():
    assert set(gd.DATASETS) == set(TOY_NAMES) | {"digits"}
    assert all(isinstance(v, str) and v for v in gd.DATASETS.values())
    with pytest.raises(TypeError):
        gd.DATASETS["new"] = "read-only"  # type: ignore[index]


@pytest.mark.parametrize("name", TOY_NAMES)
def test_load_toy_dataset(name):
    ds = gd.load_dataset(name, seed=3, n_train=N, n_test=N)
    assert isinstance(ds, gd.Dataset) and ds.name == name
    assert ds.train.shape == (N, 2) and ds.test.shape == (N, 2)
    assert ds.train.dtype == np.float32 and ds.test.dtype == np.float32
    assert isinstance(ds.train, np.ndarray) and ds.train.flags.writeable
    assert ds.discrete_levels is None
    # Train and test are independent draws, not the same points.
    assert not np.allclose(ds.train, ds.test)
    assert len(np.intersect1d(ds.train[:, 0], ds.test[:, 0])) < N // 100
    again = gd.load_dataset(name, seed=3, n_train=N, n_test=N)
    np.testing.assert_array_equal(again.train, ds.train)
    np.testing.assert_array_equal(again.test, ds.test)
    other = gd.load_dataset(name, seed=4, n_train=N, n_test=N)
    assert not np.allclose(other.train, ds.train)


def test_load_dataset_train_uses_prngkey_seed(samples):
    ds = gd.load_dataset("moons", seed=0, n_train=N, n_test=N)
    np.testing.assert_array_equal(ds.train, samples["two_moons"])


def test_load_dataset_default_sizes():
    ds = gd.load_dataset("swissroll")  # the cheapest generator to compile
    assert ds.train.shape == (gd.TOY_N_TRAIN, 2) == (20_000, 2)
    assert ds.test.shape == (gd.TOY_N_TEST, 2) == (5_000, 2)


@pytest.mark.parametrize(
    "name,centers", [("ring8", gd.ring8_centers()), ("grid25", gd.grid25_centers())]
)
def test_load_mixture_dataset_metadata(name, centers):
    ds = gd.load_dataset(name, n_train=N, n_test=N)
    np.testing.assert_array_equal(ds.centers, np.asarray(centers))
    assert ds.centers.dtype == np.float32
    assert ds.std == 0.02
    for name_other in ("moons", "spirals"):
        other = gd.load_dataset(name_other, n_train=N, n_test=N)
        assert other.centers is None and other.std is None


def test_load_digits_dataset(digits_split):
    ds = gd.load_dataset("digits")
    assert ds.discrete_levels == 17 and ds.centers is None and ds.std is None
    np.testing.assert_array_equal(ds.train, digits_split[0])
    np.testing.assert_array_equal(ds.test, digits_split[1])
    small = gd.load_dataset("digits", n_train=1000, n_test=50, seed=0)
    assert small.train.shape == (1000, 64) and small.test.shape == (50, 64)
    with pytest.raises(ValueError, match="at most 797 remain"):
        gd.load_dataset("digits", n_train=1000, n_test=800)


def test_unknown_dataset_lists_available_names():
    with pytest.raises(ValueError, match="unknown dataset 'mnist'") as err:
        gd.load_dataset("mnist")
    for name in gd.DATASETS:
        assert name in str(err.value)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"seed": -1}, "seed must be a non-negative integer"),
        ({"n_train": 0}, "n_train must be >= 1"),
        ({"n_test": -5}, "n_test must be >= 1"),
    ],
)
def test_load_dataset_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        gd.load_dataset("moons", **kwargs)


# ----------------------------------------------------------------------------
# Standardisation
# ----------------------------------------------------------------------------


# A few fixed shapes keep JAX from recompiling for every hypothesis example.
_SHAPES = [(2, 1), (2, 3), (17, 1), (17, 3)]
_standardize = jax.jit(gd.standardize)
_unstandardize = jax.jit(gd.unstandardize)


@st.composite
def _well_scaled_data(draw):
    n, d = draw(st.sampled_from(_SHAPES))
    z = draw(hnp.arrays(np.float64, (n, d), elements=st.floats(-10, 10)))
    # Exclude near-constant columns: cancellation in float32 would make the
    # "std 1" check about float rounding rather than the formula.
    assume(np.all(z.std(axis=0) > 0.1))
    loc = draw(hnp.arrays(np.float64, (d,), elements=st.floats(-100, 100)))
    scale = draw(hnp.arrays(np.float64, (d,), elements=st.floats(0.01, 100)))
    return (loc + scale * z).astype(np.float32)


@HYP
@given(x=_well_scaled_data())
def test_standardize_gives_zero_mean_unit_std(x):
    mean, std = gd.standardize_stats(x)
    assert mean.shape == std.shape == (x.shape[1],)
    assert mean.dtype == std.dtype == np.float32
    z, log_det = _standardize(x, mean, std)
    assert z.shape == x.shape and np.shape(log_det) == ()
    z = np.asarray(z, dtype=np.float64)
    np.testing.assert_allclose(z.mean(axis=0), 0.0, atol=1e-4)
    np.testing.assert_allclose(z.std(axis=0), 1.0, rtol=1e-3)
    np.testing.assert_allclose(float(log_det), -np.sum(np.log(std)), rtol=1e-5)
    back, inv_log_det = _unstandardize(z.astype(np.float32), mean, std)
    np.testing.assert_allclose(
        np.asarray(back), x, rtol=1e-4, atol=1e-3 * np.abs(x).max()
    )
    np.testing.assert_allclose(float(inv_log_det), -float(log_det), rtol=1e-6)


@jax.jit
def _log_det_and_brute_force(row, mean, std):
    _, log_det = gd.standardize(row, mean, std)
    jac = jax.jacfwd(lambda v: gd.standardize(v, mean, std)[0])(row)
    sign, ref = jnp.linalg.slogdet(jac)
    return log_det, sign, ref


@HYP
@given(d=st.sampled_from([1, 4]), data=st.data())
def test_standardize_log_det_matches_brute_force_jacobian(d, data):
    def vec(lo, hi):
        return data.draw(
            hnp.arrays(np.float64, (d,), elements=st.floats(lo, hi))
        ).astype(np.float32)

    row, mean, std = vec(-10, 10), vec(-5, 5), vec(0.05, 20)
    log_det, sign, ref = _log_det_and_brute_force(row, mean, std)
    assert float(sign) == 1.0
    np.testing.assert_allclose(float(log_det), float(ref), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(
        float(log_det), -np.sum(np.log(std.astype(np.float64))), rtol=1e-5, atol=1e-5
    )


def test_standardize_is_jittable_and_batched():
    x = np.random.default_rng(0).normal(1.0, 3.0, size=(17, 3)).astype(np.float32)
    mean, std = gd.standardize_stats(x)
    z, log_det = _standardize(x, mean, std)
    z_row, log_det_row = gd.standardize(x[0], mean, std)
    np.testing.assert_allclose(np.asarray(z[0]), np.asarray(z_row), rtol=1e-6)
    assert float(log_det) == pytest.approx(float(log_det_row))


def test_standardize_stats_constant_column_is_floored():
    x = np.stack([np.arange(10.0), np.full(10, 5.0)], axis=1)
    mean, std = gd.standardize_stats(x)
    assert std[1] > 0 and std[1] == pytest.approx(1e-8 * 9.0)
    z, log_det = gd.standardize(x, mean, std)
    assert np.all(np.isfinite(np.asarray(z))) and np.isfinite(float(log_det))
    np.testing.assert_array_equal(np.asarray(z)[:, 1], 0.0)


def test_standardize_stats_needs_two_rows():
    with pytest.raises(ValueError, match="at least 2 rows"):
        gd.standardize_stats(np.ones((1, 3)))


def test_standardize_rejects_bad_statistics():
    x = np.ones((4, 3), np.float32)
    with pytest.raises(ValueError, match=r"expected mean of shape \(3,\)"):
        gd.standardize(x, np.zeros(2), np.ones(3))
    with pytest.raises(ValueError, match=r"expected std of shape \(3,\)"):
        gd.standardize(x, np.zeros(3), np.ones((1, 3)))
    with pytest.raises(ValueError, match="std must be > 0"):
        gd.standardize(x, np.zeros(3), np.array([1.0, 0.0, 1.0]))
    with pytest.raises(ValueError, match=r"shape \(d,\) or \(n, d\)"):
        gd.standardize(np.ones((2, 2, 3)), np.zeros(3), np.ones(3))


# ----------------------------------------------------------------------------
# check_data
# ----------------------------------------------------------------------------


def test_check_data_accepts_and_converts():
    x = np.arange(6).reshape(3, 2)
    out = gd.check_data(x, dim=2)
    assert out.dtype == np.float32 and out.shape == (3, 2)
    np.testing.assert_array_equal(out, x)
    x32 = np.ones((2, 2), np.float32)
    assert gd.check_data(x32) is x32  # no copy when nothing to convert
    assert gd.check_data(jnp.ones((4, 3))).shape == (4, 3)


@pytest.mark.parametrize("shape", [(), (5,), (2, 3, 4)])
def test_check_data_rejects_wrong_rank(shape):
    with pytest.raises(
        ValueError,
        match=re.escape(f"train: expected an array of shape (n, d), got shape {shape}"),
    ):
        gd.check_data(np.zeros(shape), name="train")


@pytest.mark.parametrize("shape", [(0, 3), (4, 0)])
def test_check_data_rejects_empty(shape):
    with pytest.raises(ValueError, match="data is empty"):
        gd.check_data(np.zeros(shape))


def test_check_data_reports_non_finite_rows():
    x = np.zeros((5, 2))
    x[1, 0] = np.nan
    x[3, 1] = np.inf
    x[4, :] = np.nan
    with pytest.raises(ValueError, match="batch: 3 of 5 rows contain NaN or inf") as err:
        gd.check_data(x, name="batch")
    assert "first bad row is 1" in str(err.value)
    assert "2 with NaN" in str(err.value)


def test_check_data_rejects_wrong_dim():
    with pytest.raises(ValueError, match=re.escape("expected 3 features per row, i.e. shape (n, 3), got shape (4, 2)")):
        gd.check_data(np.zeros((4, 2)), dim=3)


def test_check_data_rejects_non_numeric_and_overflow():
    with pytest.raises(ValueError, match="expected a real numeric array"):
        gd.check_data(np.array([["a", "b"]]))
    with pytest.raises(ValueError, match="expected a real numeric array"):
        gd.check_data(np.ones((2, 2), np.complex64))
    with pytest.raises(ValueError, match="overflow float32"):
        gd.check_data(np.array([[1e300, 0.0]]))


# --- exact log-densities of the data-generating distributions --------------------------------


def _riemann_mass(log_prob, lo, hi, h):
    g0, g1 = np.arange(lo[0], hi[0], h) + h / 2, np.arange(lo[1], hi[1], h) + h / 2
    pts = np.stack(np.meshgrid(g0, g1, indexing="ij"), -1).reshape(-1, 2)
    with jax.enable_x64(True):
        return float(np.exp(np.asarray(log_prob(jnp.asarray(pts)))).sum() * h * h)


def test_moons_and_circles_densities_integrate_to_one():
    assert _riemann_mass(lambda x: gd.two_moons_log_prob(x, num_nodes=1024), (-1.5, -1.0), (2.5, 1.5), 0.01) \
        == pytest.approx(1.0, abs=2e-4)
    assert _riemann_mass(gd.circles_log_prob, (-1.4, -1.4), (1.4, 1.4), 0.01) == pytest.approx(1.0, abs=2e-4)
    assert _riemann_mass(lambda x: gd.circles_log_prob(x, noise=0.2, factor=0.3), (-2.2, -2.2), (2.2, 2.2), 0.01) \
        == pytest.approx(1.0, abs=2e-4)


def test_moons_density_matches_a_brute_force_quadrature_and_circles_its_angular_integral():
    x = np.asarray(gd.two_moons(KEY, 300), np.float64) + np.array([[0.03, -0.02]])
    t = np.linspace(0.0, np.pi, 20001)
    arcs = np.concatenate([np.stack([np.cos(t), np.sin(t)], 1), np.stack([1 - np.cos(t), 0.5 - np.sin(t)], 1)])
    d2 = ((x[:, None] - arcs[None]) ** 2).sum(-1)
    ref = np.log(np.trapezoid(np.exp(-d2[:, :20001] / 0.005), t) + np.trapezoid(np.exp(-d2[:, 20001:] / 0.005), t)) \
        - np.log(2 * np.pi) - np.log(2 * np.pi * 0.0025)
    with jax.enable_x64(True):
        ours = np.asarray(gd.two_moons_log_prob(jnp.asarray(x)))
    np.testing.assert_allclose(ours, ref, atol=1e-5)
    # circles: the closed form (Bessel I0) equals the angular integral done numerically
    y = np.asarray(gd.circles(KEY, 200), np.float64) * 1.1
    th = np.linspace(0.0, 2 * np.pi, 20001)
    dens = 0.0
    for r in (1.0, 0.5):
        c = r * np.stack([np.cos(th), np.sin(th)], 1)
        dens = dens + 0.5 * np.trapezoid(np.exp(-((y[:, None] - c[None]) ** 2).sum(-1) / 0.005), th) / (2 * np.pi)
    with jax.enable_x64(True):
        np.testing.assert_allclose(np.asarray(gd.circles_log_prob(jnp.asarray(y))),
                                   np.log(dens / (2 * np.pi * 0.0025)), atol=1e-8)


def test_mixture_log_probs_equal_scipy():
    from scipy.special import logsumexp
    from scipy.stats import multivariate_normal

    for fn, centers in ((gd.ring8_log_prob, gd.ring8_centers()), (gd.grid25_log_prob, gd.grid25_centers())):
        x = np.asarray(centers, np.float64)[:5] + 0.03
        comp = np.stack([multivariate_normal(c, 0.02**2 * np.eye(2)).logpdf(x) for c in np.asarray(centers, np.float64)], 1)
        with jax.enable_x64(True):
            np.testing.assert_allclose(np.asarray(fn(jnp.asarray(x))), logsumexp(comp, 1) - np.log(len(centers)),
                                       rtol=1e-10)


def test_datasets_carry_their_true_density_and_it_sets_the_nll_floor():
    ds = gd.load_dataset("moons", n_train=2000, n_test=2000)
    lp = ds.log_prob(ds.test)
    assert lp.shape == (2000,) and lp.dtype == np.float64 and np.all(np.isfinite(lp))
    # the true density beats a Gaussian fitted to the training data on held-out points
    mu, cov = ds.train.mean(0), np.cov(ds.train.T)
    from scipy.stats import multivariate_normal

    assert -lp.mean() < -multivariate_normal(mu, cov).logpdf(ds.test).mean() - 0.5
    for name in ("circles", "ring8", "grid25"):
        assert gd.load_dataset(name, n_train=10, n_test=10).log_prob is not None
    for name in ("checkerboard", "digits"):
        assert gd.load_dataset(name, n_train=10, n_test=10).log_prob is None
    with pytest.raises(ValueError, match=r"shape \(n, 2\)"):
        gd.two_moons_log_prob(np.zeros((3, 3)))
    with pytest.raises(ValueError, match="noise"):
        gd.two_moons_log_prob(np.zeros((3, 2)), noise=0.0)
    with pytest.raises(ValueError, match="factor"):
        gd.circles_log_prob(np.zeros((3, 2)), factor=1.0)
