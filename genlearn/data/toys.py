"""Seeded 2-D toy distributions, as pure JAX generators.

Every generator has the signature ``name(key, n, **params) -> (n, 2) float32``:
``key`` is an explicit ``jax.random`` key, ``n`` the number of samples. The
sample is a deterministic function of ``(key, n, params)``; the same key gives
the same points and there is no hidden state.

The functions are vectorised (no Python loop over samples) and can be jitted
with ``n`` static::

    sample = jax.jit(ring8, static_argnums=1)(jax.random.PRNGKey(0), 1024)

Scalar parameters (``noise``, ``std`` ...) may be traced under jit; they are
validated only when concrete. Each raises ValueError for ``n < 1`` and for a
negative noise or standard deviation.

Sources of the geometries:
  * moons, circles: ``sklearn.datasets.make_moons`` / ``make_circles``, with
    the curve parameter drawn uniformly instead of on a ``linspace`` grid.
  * ring8, grid25: the mode-collapse benchmark of Metz et al. 2017 (Unrolled
    GAN) and Srivastava et al. 2017 (VEEGAN): 8 Gaussians on a circle of
    radius 2 and a 5x5 grid of spacing 2, both with std 0.02.
  * checkerboard, pinwheel, two_spirals, swiss_roll: the toy sets of Grathwohl
    et al. 2019 (FFJORD, ``lib/toy_data.py``).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from genlearn.data.validation import (
    _check_finite,
    _check_n,
    _check_nonnegative,
    _check_positive,
)

__all__ = [
    "two_moons",
    "circles",
    "ring8",
    "ring8_centers",
    "grid25",
    "grid25_centers",
    "checkerboard",
    "pinwheel",
    "two_spirals",
    "swiss_roll",
    "two_moons_log_prob",
    "circles_log_prob",
    "ring8_log_prob",
    "grid25_log_prob",
]

_F32 = jnp.float32


def _gaussian_noise(key: jax.Array, n: int, scale) -> jax.Array:
    return scale * jax.random.normal(key, (n, 2), dtype=_F32)


def _finish(x: jax.Array) -> jax.Array:
    return jnp.asarray(x, dtype=_F32)


def two_moons(key: jax.Array, n: int, noise: float = 0.05) -> jax.Array:
    """Two interleaving half circles (``sklearn.datasets.make_moons`` geometry).

    With ``t ~ U[0, pi]``, the first ``n // 2`` points lie on the outer arc
    ``(cos t, sin t)`` and the remaining ``n - n // 2`` on the inner arc
    ``(1 - cos t, 1 - sin t - 0.5)``; the rows are then randomly permuted and
    isotropic Gaussian noise ``N(0, noise^2 I)`` is added.

    Args:
      key: PRNG key.
      n: number of samples (static), >= 1.
      noise: standard deviation of the additive Gaussian noise, >= 0.

    Returns:
      ``(n, 2)`` float32 array; the support is within ``[-1, 2] x [-0.5, 1]``
      before noise.
    """
    n = _check_n(n)
    _check_nonnegative(noise, "noise")
    k_t, k_perm, k_noise = jax.random.split(key, 3)
    t = jax.random.uniform(k_t, (n,), dtype=_F32, maxval=math.pi)
    n_outer = n // 2
    inner = jnp.arange(n) >= n_outer
    x = jnp.where(inner, 1.0 - jnp.cos(t), jnp.cos(t))
    y = jnp.where(inner, 1.0 - jnp.sin(t) - 0.5, jnp.sin(t))
    pts = jax.random.permutation(k_perm, jnp.stack([x, y], axis=1), axis=0)
    return _finish(pts + _gaussian_noise(k_noise, n, noise))


def circles(
    key: jax.Array, n: int, noise: float = 0.05, factor: float = 0.5
) -> jax.Array:
    """Two concentric circles (``sklearn.datasets.make_circles`` geometry).

    With ``theta ~ U[0, 2 pi)``, the first ``n // 2`` points lie on the unit
    circle and the remaining ``n - n // 2`` on the circle of radius
    ``factor``; rows are randomly permuted and ``N(0, noise^2 I)`` is added.

    Args:
      key: PRNG key.
      n: number of samples (static), >= 1.
      noise: standard deviation of the additive Gaussian noise, >= 0.
      factor: inner radius relative to the outer one, in ``[0, 1)``.

    Returns:
      ``(n, 2)`` float32 array.
    """
    n = _check_n(n)
    _check_nonnegative(noise, "noise")
    _check_finite(factor, "factor")
    if not isinstance(factor, jax.core.Tracer) and not 0.0 <= float(factor) < 1.0:
        raise ValueError(f"factor must be in [0, 1), got {float(factor)}")
    k_t, k_perm, k_noise = jax.random.split(key, 3)
    theta = jax.random.uniform(k_t, (n,), dtype=_F32, maxval=2.0 * math.pi)
    radius = jnp.where(jnp.arange(n) >= n // 2, factor, 1.0).astype(_F32)
    pts = radius[:, None] * jnp.stack([jnp.cos(theta), jnp.sin(theta)], axis=1)
    pts = jax.random.permutation(k_perm, pts, axis=0)
    return _finish(pts + _gaussian_noise(k_noise, n, noise))


def _mixture_sample(
    key: jax.Array, n: int, centers: jax.Array, std
) -> jax.Array:
    """``x = c_k + std * z`` with ``k ~ Uniform{0..K-1}``, ``z ~ N(0, I)``."""
    k_idx, k_noise = jax.random.split(key)
    idx = jax.random.randint(k_idx, (n,), 0, centers.shape[0])
    return _finish(centers[idx] + _gaussian_noise(k_noise, n, std))


def ring8_centers(radius: float = 2.0) -> jax.Array:
    """Centres of the 8-Gaussian ring: ``radius * (cos(2 pi k / 8), sin(2 pi k / 8))``.

    Args:
      radius: circle radius, > 0.

    Returns:
      ``(8, 2)`` float32 array, ``k = 0..7`` counter-clockwise from ``(radius, 0)``.
    """
    _check_positive(radius, "radius")
    angles = 2.0 * math.pi * jnp.arange(8, dtype=_F32) / 8.0
    return _finish(radius * jnp.stack([jnp.cos(angles), jnp.sin(angles)], axis=1))


def ring8(
    key: jax.Array, n: int, radius: float = 2.0, std: float = 0.02
) -> jax.Array:
    """Equal-weight mixture of 8 isotropic Gaussians on a circle.

    ``p(x) = (1/8) sum_k N(x; c_k, std^2 I)`` with ``c_k = ring8_centers(radius)``.
    ``radius=2, std=0.02`` is the protocol of the mode-collapse literature
    (Metz et al. 2017, "Unrolled Generative Adversarial Networks"): a sample
    counts as high quality when within ``3 std`` (or ``4 std``) of a centre.

    Args:
      key: PRNG key.
      n: number of samples (static), >= 1.
      radius: circle radius, > 0.
      std: per-coordinate standard deviation of each component, >= 0.

    Returns:
      ``(n, 2)`` float32 array.
    """
    n = _check_n(n)
    _check_nonnegative(std, "std")
    return _mixture_sample(key, n, ring8_centers(radius), std)


def grid25_centers(spacing: float = 2.0) -> jax.Array:
    """Centres of the 5x5 Gaussian grid, ``spacing * {-2,-1,0,1,2}^2``.

    Args:
      spacing: distance between neighbouring centres, > 0.

    Returns:
      ``(25, 2)`` float32 array in row-major order (first coordinate slowest);
      the default gives ``{-4, -2, 0, 2, 4}^2``.
    """
    _check_positive(spacing, "spacing")
    ticks = spacing * jnp.arange(-2, 3, dtype=_F32)
    gx, gy = jnp.meshgrid(ticks, ticks, indexing="ij")
    return _finish(jnp.stack([gx.ravel(), gy.ravel()], axis=1))


def grid25(
    key: jax.Array, n: int, spacing: float = 2.0, std: float = 0.02
) -> jax.Array:
    """Equal-weight mixture of 25 isotropic Gaussians on a 5x5 grid.

    ``p(x) = (1/25) sum_k N(x; c_k, std^2 I)`` with
    ``c_k = grid25_centers(spacing)`` (Srivastava et al. 2017, VEEGAN).

    Args:
      key: PRNG key.
      n: number of samples (static), >= 1.
      spacing: distance between neighbouring centres, > 0.
      std: per-coordinate standard deviation of each component, >= 0.

    Returns:
      ``(n, 2)`` float32 array.
    """
    n = _check_n(n)
    _check_nonnegative(std, "std")
    return _mixture_sample(key, n, grid25_centers(spacing), std)


def checkerboard(key: jax.Array, n: int) -> jax.Array:
    """Uniform density on the dark squares of a 4x4 checkerboard on ``[-4, 4]^2``.

    FFJORD construction: ``x1 ~ U[-2, 2)``, ``x2 = u - 2 b + (floor(x1) mod 2)``
    with ``u ~ U[0, 1)``, ``b ~ Bernoulli(1/2)``; the point is ``2 (x1, x2)``.
    The density is ``1/32`` on 8 squares of side 2, zero elsewhere.

    Args:
      key: PRNG key.
      n: number of samples (static), >= 1.

    Returns:
      ``(n, 2)`` float32 array in ``[-4, 4)^2``.
    """
    n = _check_n(n)
    k1, k2, k3 = jax.random.split(key, 3)
    x1 = jax.random.uniform(k1, (n,), dtype=_F32, minval=-2.0, maxval=2.0)
    u = jax.random.uniform(k2, (n,), dtype=_F32)
    b = jax.random.bernoulli(k3, 0.5, (n,)).astype(_F32)
    x2 = u - 2.0 * b + jnp.mod(jnp.floor(x1), 2.0)
    return _finish(2.0 * jnp.stack([x1, x2], axis=1))


def pinwheel(
    key: jax.Array,
    n: int,
    num_arms: int = 5,
    radial_std: float = 0.3,
    tangential_std: float = 0.1,
    rate: float = 0.25,
) -> jax.Array:
    """Pinwheel: ``num_arms`` curved Gaussian arms (Johnson et al. 2016; FFJORD).

    For arm ``k ~ Uniform{0..num_arms-1}`` and ``(r, s) = (1 + radial_std z1,
    tangential_std z2)`` with ``z ~ N(0, I)``, the point is ``2 R(a)^T (r, s)``
    where ``R(a)`` is the rotation by ``a = 2 pi k / num_arms + rate exp(r)``:
    the radial coordinate sets how far the arm has curled.

    Args:
      key: PRNG key.
      n: number of samples (static), >= 1.
      num_arms: number of arms (static), >= 1.
      radial_std: spread along each arm, >= 0.
      tangential_std: spread across each arm, >= 0.
      rate: how strongly the arms curl, finite.

    Returns:
      ``(n, 2)`` float32 array.
    """
    n = _check_n(n)
    num_arms = _check_n(num_arms, "num_arms")
    _check_nonnegative(radial_std, "radial_std")
    _check_nonnegative(tangential_std, "tangential_std")
    _check_finite(rate, "rate")
    k_arm, k_feat = jax.random.split(key)
    arm = jax.random.randint(k_arm, (n,), 0, num_arms).astype(_F32)
    z = jax.random.normal(k_feat, (n, 2), dtype=_F32)
    r = 1.0 + radial_std * z[:, 0]
    s = tangential_std * z[:, 1]
    a = 2.0 * math.pi * arm / num_arms + rate * jnp.exp(r)
    cos_a, sin_a = jnp.cos(a), jnp.sin(a)
    x = r * cos_a + s * sin_a
    y = -r * sin_a + s * cos_a
    return _finish(2.0 * jnp.stack([x, y], axis=1))


def two_spirals(key: jax.Array, n: int, noise: float = 0.1) -> jax.Array:
    """Two interleaved Archimedean spirals (FFJORD ``2spirals``).

    With ``t = 3 pi sqrt(u)``, ``u ~ U[0, 1)`` (540 degrees of turn, the square
    root making the density uniform in arc area), the point is
    ``sigma (-t cos t, t sin t) / 3 + noise z`` where ``sigma = +-1`` picks the
    spiral with probability 1/2 each and ``z ~ N(0, I)``. FFJORD also adds a
    ``U[0, 0.5)`` jitter before mirroring; it is left out so that ``noise=0``
    gives points exactly on the two curves.

    Args:
      key: PRNG key.
      n: number of samples (static), >= 1.
      noise: standard deviation of the additive Gaussian noise, >= 0.

    Returns:
      ``(n, 2)`` float32 array, roughly in ``[-3.3, 3.3]^2``.
    """
    n = _check_n(n)
    _check_nonnegative(noise, "noise")
    k_t, k_sign, k_noise = jax.random.split(key, 3)
    t = 3.0 * math.pi * jnp.sqrt(jax.random.uniform(k_t, (n,), dtype=_F32))
    sign = jnp.where(jax.random.bernoulli(k_sign, 0.5, (n,)), 1.0, -1.0)
    pts = (sign / 3.0)[:, None] * jnp.stack([-t * jnp.cos(t), t * jnp.sin(t)], axis=1)
    return _finish(pts + _gaussian_noise(k_noise, n, noise))


def swiss_roll(key: jax.Array, n: int, noise: float = 0.5) -> jax.Array:
    """2-D Swiss roll: the ``(x, z)`` plane of ``sklearn.datasets.make_swiss_roll``.

    With ``t = 1.5 pi (1 + 2 u)``, ``u ~ U[0, 1)``, the point is
    ``((t cos t, t sin t) + noise z) / 5`` with ``z ~ N(0, I)``. ``noise`` is in
    the roll's own units as in scikit-learn (FFJORD uses ``noise=1`` and the
    same ``1/5`` scaling), so the noise std of the output is ``noise / 5``.

    Args:
      key: PRNG key.
      n: number of samples (static), >= 1.
      noise: standard deviation of the Gaussian noise before scaling, >= 0.

    Returns:
      ``(n, 2)`` float32 array, roughly in ``[-2.8, 2.6]^2``.
    """
    n = _check_n(n)
    _check_nonnegative(noise, "noise")
    k_t, k_noise = jax.random.split(key)
    t = 1.5 * math.pi * (1.0 + 2.0 * jax.random.uniform(k_t, (n,), dtype=_F32))
    pts = jnp.stack([t * jnp.cos(t), t * jnp.sin(t)], axis=1)
    return _finish((pts + _gaussian_noise(k_noise, n, noise)) / 5.0)


# ----------------------------------------------------------------------------------------------
# Exact log-densities of the data-generating distributions (where they have one).
#
# They give held-out likelihoods a floor: a model's test NLL minus the true density's NLL on the
# same points estimates KL(p || model) >= 0, and no model beats the true density in expectation.


def _check_points(x) -> jax.Array:
    x = jnp.asarray(x)
    if x.ndim != 2 or x.shape[1] != 2:
        raise ValueError(f"points must have shape (n, 2), got {tuple(x.shape)}")
    if not jnp.issubdtype(x.dtype, jnp.floating):
        x = x.astype(_F32)
    return x


def _gaussian_mixture_log_prob(x: jax.Array, centers: jax.Array, std) -> jax.Array:
    d2 = jnp.sum((x[:, None, :] - centers[None].astype(x.dtype)) ** 2, axis=-1)
    log_k = -0.5 * d2 / std**2 - jnp.log(2.0 * math.pi * std**2)
    return jax.nn.logsumexp(log_k, axis=1) - math.log(centers.shape[0])


def ring8_log_prob(x, radius: float = 2.0, std: float = 0.02) -> jax.Array:
    """``log p(x)`` of :func:`ring8` (the equal-weight Gaussian mixture), ``(n, 2) -> (n,)``."""
    _check_positive(std, "std")
    return _gaussian_mixture_log_prob(_check_points(x), ring8_centers(radius), std)


def grid25_log_prob(x, spacing: float = 2.0, std: float = 0.02) -> jax.Array:
    """``log p(x)`` of :func:`grid25` (the equal-weight Gaussian mixture), ``(n, 2) -> (n,)``."""
    _check_positive(std, "std")
    return _gaussian_mixture_log_prob(_check_points(x), grid25_centers(spacing), std)


def circles_log_prob(x, noise: float = 0.05, factor: float = 0.5) -> jax.Array:
    """``log p(x)`` of :func:`circles`, in closed form, ``(n, 2) -> (n,)``.

    A circle of radius ``r`` with uniform angle, blurred by ``N(0, s^2 I)``, has
    density ``exp(-(|x|^2 + r^2) / 2s^2) I0(r |x| / s^2) / (2 pi s^2)``
    (``I0``: modified Bessel function, through the overflow-free ``i0e``);
    the two circles have weight 1/2 each.
    """
    _check_positive(noise, "noise")
    _check_finite(factor, "factor")
    if not isinstance(factor, jax.core.Tracer) and not 0.0 < float(factor) < 1.0:
        raise ValueError(f"factor must be in (0, 1) for a density, got {float(factor)}")
    x = _check_points(x)
    rho = jnp.linalg.norm(x, axis=1)
    s2 = noise**2

    def one(r):
        z = r * rho / s2
        return -0.5 * (rho - r) ** 2 / s2 + jnp.log(jax.scipy.special.i0e(z)) - jnp.log(2.0 * math.pi * s2)

    return jnp.logaddexp(one(1.0), one(factor)) - math.log(2.0)


def two_moons_log_prob(x, noise: float = 0.05, num_nodes: int = 16384) -> jax.Array:
    """``log p(x)`` of :func:`two_moons`, ``(n, 2) -> (n,)``.

    ``p(x) = 1/2 sum_arcs (1/pi) int_0^pi N(x; c(t), noise^2 I) dt`` by the
    midpoint rule with ``num_nodes`` nodes per arc (arcs of radius 1; with the
    default 16384 the result agrees with 4x as many nodes to ~2e-6 in float64,
    4096 nodes to ~5e-5). Evaluated in blocks of 512 points (``lax.map``), so
    memory stays bounded.
    """
    _check_positive(noise, "noise")
    num_nodes = _check_n(num_nodes, "num_nodes")
    x = _check_points(x)
    t = (jnp.arange(num_nodes, dtype=x.dtype) + 0.5) * (math.pi / num_nodes)
    arcs = jnp.concatenate([jnp.stack([jnp.cos(t), jnp.sin(t)], 1),
                            jnp.stack([1.0 - jnp.cos(t), 1.0 - jnp.sin(t) - 0.5], 1)])
    s2 = noise**2

    def one(p):
        log_k = -0.5 * jnp.sum((p - arcs) ** 2, axis=1) / s2
        return jax.nn.logsumexp(log_k) - math.log(2 * num_nodes) - jnp.log(2.0 * math.pi * s2)

    return jax.lax.map(one, x, batch_size=512)
