"""genlearn.distances, the kernel layer under gl.gan's weak losses and gl.metrics: jit, gradients, float64."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from genlearn import distances, metrics


def _pair(n=40, m=30, d=3, seed=0, dtype=np.float32):
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(n, d)).astype(dtype), (rng.normal(size=(m, d)) * 1.3 + 0.4).astype(dtype))


_KEY = jax.random.PRNGKey(3)
_FNS = {
    "mmd2 default (unbiased, median h)": lambda x, y: distances.mmd2(x, y),
    "mmd2 imq, two scales, biased": lambda x, y: distances.mmd2(x, y, (0.5, 2.0), False, kernel="imq"),
    "mmd2 polynomial": lambda x, y: distances.mmd2(x, y, kernel="polynomial"),
    "energy": lambda x, y: distances.energy_distance(x, y),
    "sliced": lambda x, y: distances.sliced_wasserstein(x, y, _KEY, 32),
    "sinkhorn": lambda x, y: distances.sinkhorn_divergence(x, y, 0.5, tol=1e-5),
}


class DistancesJitTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_jit_equals_no_jit(self):
        x, y = _pair()
        for name, fn in _FNS.items():
            got = self.variant(fn)(x, y)
            chex.assert_shape(got, ())
            np.testing.assert_allclose(got, fn(x, y), rtol=2e-5, atol=1e-7, err_msg=name)

    @chex.variants(with_jit=True, without_jit=True)
    def test_row_blocks_equal_dense(self):
        x, y = _pair(70, 50)
        for kernel in ("gaussian", "imq", "polynomial"):
            blocked = self.variant(lambda a, b: distances.mmd2(a, b, 0.9, kernel=kernel, block_size=16))(x, y)
            np.testing.assert_allclose(blocked, distances.mmd2(x, y, 0.9, kernel=kernel), rtol=1e-5)
        blocked = self.variant(lambda a, b: distances.energy_distance(a, b, block_size=16))(x, y)
        np.testing.assert_allclose(blocked, distances.energy_distance(x, y), rtol=1e-5)


@pytest.mark.parametrize("name", list(_FNS))
def test_gradients_are_finite_and_move_the_loss(name):
    x, y = _pair(32, 32, 2)
    fn = _FNS[name]
    g = jax.grad(fn)(jnp.asarray(x), jnp.asarray(y))
    assert np.all(np.isfinite(np.asarray(g))) and float(jnp.abs(g).max()) > 0
    # a small step against the gradient lowers the distance
    assert float(fn(x - 0.05 * g / jnp.abs(g).max(), y)) < float(fn(x, y))


def test_energy_gradient_is_zero_not_nan_at_coinciding_points_in_both_precisions():
    for dtype in (np.float32, np.float64):
        with jax.enable_x64(dtype == np.float64):
            x = jnp.asarray([[0.0, 0.0], [1.0, 1.0], [1.0, 1.0]], dtype)
            g = jax.grad(lambda a: distances.energy_distance(a, x))(x)
            assert g.dtype == dtype and np.all(np.isfinite(np.asarray(g)))


def test_float64_inputs_compute_in_float64_and_match_float32():
    """issue 16: under x64 every distance runs on float64 500 x 2 sets and agrees with float32.

    500 rows: wasserstein2_exact preconditions its assignment with Sinkhorn duals from n * m >= 400^2 on,
    the path whose loop carry broke under x64 (issue 16 saw it at 2000 x 2).
    """
    x32, y32 = _pair(500, 500, 2, seed=1)
    key = jax.random.PRNGKey(0)
    core = {
        "mmd2": lambda x, y: distances.mmd2(x, y, 0.7, block_size=128),
        "energy": lambda x, y: distances.energy_distance(x, y, block_size=128),
        "sliced": lambda x, y: distances.sliced_wasserstein(x, y, key),
        "sinkhorn": lambda x, y: distances.sinkhorn_divergence(x[:200], y[:200], 0.2, tol=1e-4),
    }
    lo = {name: float(jax.jit(fn)(x32, y32)) for name, fn in core.items()}
    host32 = (metrics.wasserstein2_exact(x32, y32), metrics.mmd2(x32, y32), metrics.energy_distance(x32, y32),
              metrics.sliced_wasserstein(x32, y32, key), metrics.sinkhorn_divergence(x32[:200], y32[:200], 0.2))
    with jax.enable_x64(True):
        x64, y64 = jnp.asarray(x32, jnp.float64), jnp.asarray(y32, jnp.float64)
        for name, fn in core.items():
            out = jax.jit(fn)(x64, y64)
            assert out.dtype == jnp.float64, name
            assert float(out) == pytest.approx(lo[name], rel=2e-4), name
        host64 = (metrics.wasserstein2_exact(x64, y64), metrics.mmd2(x64, y64), metrics.energy_distance(x64, y64),
                  metrics.sliced_wasserstein(x64, y64, key), metrics.sinkhorn_divergence(x64[:200], y64[:200], 0.2))
    # the metrics compute in float64 either way: the global flag must not change their numbers
    np.testing.assert_allclose(host64, host32, rtol=1e-9)
    assert metrics.mmd2(x32, y32, 0.7) == pytest.approx(lo["mmd2"], rel=2e-4)


def test_bad_inputs_raise_value_errors_naming_the_problem():
    x, y = _pair()
    with pytest.raises(ValueError, match="same dimension d"):
        distances.mmd2(x, y[:, :2])
    with pytest.raises(ValueError, match=r"shape \(n, d\)"):
        distances.sliced_wasserstein(x[:, 0], y, _KEY)
    with pytest.raises(ValueError, match="bandwidth must be positive"):
        distances.mmd2(x, y, (1.0, -2.0))
    with pytest.raises(ValueError, match="kernel must be one of"):
        distances.mmd2(x, y, kernel="laplace")
    with pytest.raises(ValueError, match="at least 2 samples"):
        distances.mmd2(x[:1], y)
    with pytest.raises(ValueError, match="num_projections"):
        distances.sliced_wasserstein(x, y, _KEY, 0)
    with pytest.raises(ValueError, match="p must be"):
        distances.sliced_wasserstein(x, y, _KEY, 8, p=0.5)
    with pytest.raises(ValueError, match="epsilon"):
        distances.sinkhorn_divergence(x, y, 0.0)
    with pytest.raises(ValueError, match="max_iters"):
        distances.sinkhorn_divergence(x, y, 0.1, max_iters=0)
