"""Sample distances, each written once: MMD, energy distance, sliced Wasserstein, Sinkhorn divergence.

For samples ``x (n, d)`` of P and ``y (m, d)`` of Q:

* ``mmd2``: MMD^2 = E k(x, x') + E k(y, y') - 2 E k(x, y) (Gretton et al. 2012,
  JMLR 13), biased (V-statistic, all pairs) or unbiased (U-statistic: the
  within-sample sums skip ``i == j`` and divide by ``n(n-1)``; it can be < 0).
  Kernels: ``gaussian`` ``exp(-||x-y||^2 / (2 h^2))``, ``imq``
  ``c / (c + ||x-y||^2)`` (Tolstikhin et al. 2018), several bandwidths summed
  (the multi-bandwidth kernel of GMMN, Li et al. 2015); ``polynomial``
  ``(x.y / d + 1)^3`` (KID, Binkowski et al. 2018).
* ``energy_distance``: E^2 = 2 E||x-y|| - E||x-x'|| - E||y-y'|| (Szekely & Rizzo),
  the V-statistic, i.e. biased MMD^2 with the kernel ``-||x - y||``.
* ``sliced_wasserstein``: SW_p = (E_theta W_p^p(theta^T x, theta^T y))^(1/p)
  over random unit directions, each 1-D W_p exact by sorting (Rabin et al. 2011).
  It returns SW_p, the distance, not its p-th power.
* ``sinkhorn_divergence``: S_eps = OT_eps(x,y) - OT_eps(x,x)/2 - OT_eps(y,y)/2
  (Feydy et al. 2019), cost ``||x-y||^2`` (squared scale), by ott-jax's
  log-domain Sinkhorn with implicit differentiation (chosen over an in-house
  solver by ``benchmarks/bench_sinkhorn.py``).

Every function takes JAX arrays, is jittable and differentiable, and computes
in the input's precision (float64 inputs under x64 give float64). The weak
losses of ``genlearn.gan`` are these functions; ``genlearn.metrics`` wraps the
same functions with host-side validation, float64, row blocking for large
``n`` and Python-float results.
"""

from __future__ import annotations

from functools import partial
from typing import Any, Callable, Sequence

import chex
import jax
import jax.numpy as jnp

__all__ = ["KERNELS", "sq_dists", "row_reduce", "median_bandwidth", "mmd2", "energy_distance",
           "sliced_wasserstein", "sinkhorn_divergence"]

KERNELS = ("gaussian", "imq", "polynomial")


def check_pair(x: jax.Array, y: jax.Array, min_n: int = 1) -> None:
    """Shape checks shared by the distances (free under jit): ``(n, d)`` and ``(m, d)``, ``n, m >= min_n``."""
    chex.assert_rank([x, y], 2, custom_message="samples must have shape (n, d) and (m, d)",
                     exception_type=ValueError)
    chex.assert_equal_shape_suffix([x, y], 1, custom_message="x and y need the same dimension d",
                                   exception_type=ValueError)
    if min(x.shape[0], y.shape[0]) < min_n:
        raise ValueError(f"need at least {min_n} samples per set, got shapes {x.shape} and {y.shape}")


def sq_dists(a: jax.Array, b: jax.Array) -> jax.Array:
    """``D_ij = ||a_i - b_j||^2`` for ``a (p, d)``, ``b (m, d)`` by one matmul, clipped at 0."""
    aa = jnp.sum(a * a, axis=1)
    bb = jnp.sum(b * b, axis=1)
    return jnp.maximum(aa[:, None] + bb[None, :] - 2.0 * (a @ b.T), 0.0)


def _dists(a: jax.Array, b: jax.Array) -> jax.Array:
    """``||a_i - b_j||`` with gradient 0, not NaN, where points coincide.

    float64 uses the matmul expansion of :func:`sq_dists` (its cancellation,
    ~1e-16 |a|^2, is far below what a metric resolves, and it is ~5x faster);
    lower precisions take explicit differences, since there the expansion
    would put ``sqrt(eps) |a|`` on coinciding pairs.
    """
    if a.dtype == jnp.float64:
        d2 = sq_dists(a, b)
    else:
        diff = a[:, None, :] - b[None, :, :]
        d2 = jnp.sum(diff * diff, axis=-1)
    pos = d2 > 0
    return jnp.where(pos, jnp.sqrt(jnp.where(pos, d2, 1.0)), 0.0)


def row_reduce(fn: Callable[[jax.Array], jax.Array], a: jax.Array, block: int) -> jax.Array:
    """``concat([fn(a[i:i+block]) for i in range(0, n, block)])`` via ``lax.map`` (peak memory ``block`` rows)."""
    n = a.shape[0]
    block = max(1, min(block, n))
    nb = -(-n // block)
    pad = nb * block - n
    a_pad = jnp.concatenate([a, jnp.zeros((pad,) + a.shape[1:], a.dtype)]) if pad else a
    out = jax.lax.map(fn, a_pad.reshape((nb, block) + a.shape[1:]))
    return out.reshape((nb * block,) + out.shape[2:])[:n]


def _pair_sum(fn: Callable, a: jax.Array, b: jax.Array, block: int | None) -> jax.Array:
    """``sum_ij fn(a, b)_ij``; in row blocks of ``block`` rows when given (memory ``block * m``)."""
    if block is None or a.shape[0] <= block:
        return jnp.sum(fn(a, b))
    return jnp.sum(row_reduce(lambda blk: jnp.sum(fn(blk, b), axis=1), a, block))


@jax.jit  # one program per shape when called outside jit (op by op, each op would compile on first sight)
def median_bandwidth(x: jax.Array, y: jax.Array) -> jax.Array:
    """Median heuristic ``h = median_{i<j} ||z_i - z_j||`` of the pooled ``z = [x; y]`` (no gradient).

    Gretton et al. (2012), sec. 8: a typical pair then has Gaussian kernel value ``exp(-1/2)``.
    """
    z = jnp.concatenate([x, y])
    rows, cols = jnp.triu_indices(z.shape[0], k=1)
    return jax.lax.stop_gradient(jnp.sqrt(jnp.median(sq_dists(z, z)[rows, cols])))


def _scales(bandwidth: Any, kernel: str, x: jax.Array, y: jax.Array) -> tuple:
    if kernel == "polynomial":
        return (1.0,)
    if bandwidth is None:
        h = median_bandwidth(x, y)
        return (h if kernel == "gaussian" else h * h,)
    if isinstance(bandwidth, (int, float)) or (hasattr(bandwidth, "ndim") and bandwidth.ndim == 0):
        scales = (bandwidth,)
    else:
        scales = tuple(bandwidth)
    for s in scales:
        if not isinstance(s, jax.core.Tracer) and not float(s) > 0:
            raise ValueError(f"bandwidth must be positive (a number or a non-empty sequence), got {bandwidth!r}")
    if not scales:
        raise ValueError(f"bandwidth must be positive (a number or a non-empty sequence), got {bandwidth!r}")
    return scales


def _gram(kernel: str, scales: tuple, a: jax.Array, b: jax.Array) -> jax.Array:
    if kernel == "polynomial":
        return (a @ b.T / a.shape[1] + 1.0) ** 3
    d2 = sq_dists(a, b)
    if kernel == "gaussian":
        return sum(jnp.exp(-d2 / (2.0 * h * h)) for h in scales)
    return sum(c / (c + d2) for c in scales)


def mmd2(
    x: jax.Array,
    y: jax.Array,
    bandwidth: float | Sequence[float] | jax.Array | None = None,
    unbiased: bool = True,
    *,
    kernel: str = "gaussian",
    block_size: int | None = None,
) -> jax.Array:
    """Squared maximum mean discrepancy (module docstring), a scalar in the inputs' dtype.

    Args:
      x: ``(n, d)`` samples of P; y: ``(m, d)`` samples of Q (``n, m >= 2`` when unbiased).
      bandwidth: ``h`` of the Gaussian kernel or ``c`` of the IMQ kernel; a
        sequence sums the kernels; None: the median heuristic
        (:func:`median_bandwidth`; IMQ gets ``c = h^2``). Ignored by ``polynomial``.
      unbiased: U-statistic (True) or V-statistic (False, ``>= 0``).
      kernel: one of :data:`KERNELS`.
      block_size: rows per block of the Gram sums (static); None: dense ``(n, m)`` matrices.

    Raises:
      ValueError: bad shapes, unknown kernel, a non-positive concrete bandwidth.
    """
    check_pair(x, y, 2 if unbiased else 1)
    if kernel not in KERNELS:
        raise ValueError(f"kernel must be one of {KERNELS}, got {kernel!r}")
    return _mmd2(x, y, _scales(bandwidth, kernel, x, y), bool(unbiased), kernel, block_size)


@partial(jax.jit, static_argnums=(3, 4, 5))  # one program per shape and setting when called outside jit
def _mmd2(x, y, scales, unbiased, kernel, block_size):
    gram = partial(_gram, kernel, scales)
    n, m = x.shape[0], y.shape[0]
    kxx, kyy = _pair_sum(gram, x, x, block_size), _pair_sum(gram, y, y, block_size)
    kxy = _pair_sum(gram, x, y, block_size) / (n * m)
    if not unbiased:
        return kxx / (n * n) + kyy / (m * m) - 2.0 * kxy
    if kernel == "polynomial":
        dx = jnp.sum((jnp.sum(x * x, 1) / x.shape[1] + 1.0) ** 3)
        dy = jnp.sum((jnp.sum(y * y, 1) / y.shape[1] + 1.0) ** 3)
    else:  # k(z, z) = 1 per bandwidth
        dx, dy = n * len(scales), m * len(scales)
    return (kxx - dx) / (n * (n - 1)) + (kyy - dy) / (m * (m - 1)) - 2.0 * kxy


def energy_distance(x: jax.Array, y: jax.Array, *, block_size: int | None = None) -> jax.Array:
    """Squared energy distance ``2 E||x-y|| - E||x-x'|| - E||y-y'||`` (V-statistic, all pairs).

    ``>= 0`` up to rounding, 0 iff the empirical measures coincide; in 1-D its
    square root is ``scipy.stats.energy_distance``. The gradient at coinciding
    points is 0, not NaN.
    """
    check_pair(x, y)
    return _energy_distance(x, y, block_size)


@partial(jax.jit, static_argnums=2)  # one program per shape when called outside jit
def _energy_distance(x, y, block_size):
    n, m = x.shape[0], y.shape[0]
    return (2.0 * _pair_sum(_dists, x, y, block_size) / (n * m) - _pair_sum(_dists, x, x, block_size) / (n * n)
            - _pair_sum(_dists, y, y, block_size) / (m * m))


@partial(jax.jit, static_argnames=("num_projections",))
def _sliced(key, x, n, y, m, p, num_projections):
    """SW_p of the first ``n`` rows of ``x`` and ``m`` of ``y`` (the rest is padding, for shared compilations)."""
    # drawn in float32 whatever the precision, so a key gives the same directions in float32 and float64
    theta = jax.random.normal(key, (num_projections, x.shape[1]), jnp.float32).astype(x.dtype)
    theta = theta / jnp.linalg.norm(theta, axis=1, keepdims=True)
    # padded rows project to +inf and sort to the end, beyond any index used
    xs = jnp.sort(jnp.where(jnp.arange(x.shape[0])[:, None] < n, x @ theta.T, jnp.inf), axis=0)
    ys = jnp.sort(jnp.where(jnp.arange(y.shape[0])[:, None] < m, y @ theta.T, jnp.inf), axis=0)
    # Exact 1-D W_p^p = int_0^1 |F^-1(t) - G^-1(t)|^p dt: both quantile functions
    # are constant between the breakpoints {i/n} U {j/m}.
    tx = jnp.minimum(jnp.arange(1, x.shape[0] + 1, dtype=x.dtype) / n, 1.0)
    ty = jnp.minimum(jnp.arange(1, y.shape[0] + 1, dtype=x.dtype) / m, 1.0)
    t = jnp.sort(jnp.concatenate([tx, ty]))
    t_prev = jnp.concatenate([jnp.zeros(1, x.dtype), t[:-1]])
    mid = 0.5 * (t + t_prev)
    i = jnp.clip(jnp.floor(mid * n).astype(jnp.int32), 0, n - 1)
    j = jnp.clip(jnp.floor(mid * m).astype(jnp.int32), 0, m - 1)
    w = (t - t_prev)[:, None]
    diff = jnp.where(w > 0, jnp.abs(xs[i] - ys[j]), 0.0)  # zero-width intervals may pair an inf
    per_dir = jnp.sum(w * diff**p, axis=0)  # (L,)
    return jnp.mean(per_dir) ** (1.0 / p)


def check_projections(num_projections: Any, p: Any) -> None:
    if isinstance(num_projections, bool) or not isinstance(num_projections, int) or num_projections < 1:
        raise ValueError(f"num_projections must be an integer >= 1, got {num_projections!r}")
    if not isinstance(p, jax.core.Tracer) and not float(p) >= 1:
        raise ValueError(f"p must be >= 1, got {p!r}")


def sliced_wasserstein(x: jax.Array, y: jax.Array, key: jax.Array, num_projections: int = 128,
                       p: float = 2.0) -> jax.Array:
    """``SW_p`` (not its p-th power) over ``num_projections`` random unit directions.

    Each 1-D ``W_p`` is exact: for ``n != m`` the two quantile functions are
    integrated over the merged breakpoints ``{i/n} U {j/m}``; in 1-D the result
    is the exact ``W_p``. ``O(L (n + m) log(n + m))``.
    """
    check_pair(x, y)
    check_projections(num_projections, p)
    return _sliced(key, x, x.shape[0], y, y.shape[0], jnp.asarray(p, x.dtype), num_projections)


def check_sinkhorn(epsilon: Any, tol: Any, max_iters: Any) -> None:
    for name, v in (("epsilon", epsilon), ("tol", tol)):
        if not isinstance(v, jax.core.Tracer) and not float(v) > 0:
            raise ValueError(f"{name} must be > 0, got {v!r}")
    if isinstance(max_iters, bool) or not isinstance(max_iters, int) or max_iters < 1:
        raise ValueError(f"max_iters must be an integer >= 1, got {max_iters!r}")


def sinkhorn_divergence(x: jax.Array, y: jax.Array, epsilon: float, *, tol: float = 1e-9,
                        max_iters: int = 2000, a: jax.Array | None = None, b: jax.Array | None = None) -> jax.Array:
    """Debiased Sinkhorn divergence ``S_eps`` with cost ``||x - y||^2`` (squared scale), by ott-jax.

    ``S_eps >= 0``, ``S_eps(x, x) = 0``, ``S_eps -> W2^2`` as ``eps -> 0``.

    Args:
      epsilon: entropic regularisation ``> 0`` in squared-distance units.
      tol: stop when the L1 marginal error is below ``tol`` (float32 inputs
        cannot reach the default 1e-9 and then run ``max_iters``).
      max_iters: Sinkhorn iterations per term at most.
      a, b: weights of the points of ``x`` ``(n,)`` and ``y`` ``(m,)``, each summing to 1; None: uniform.
        Points of weight 0 take no part (padding rows to a fixed size keeps one compilation).
    """
    check_pair(x, y)
    check_sinkhorn(epsilon, tol, max_iters)
    for name, w, pts in (("a", a, x), ("b", b, y)):
        if w is not None and jnp.shape(w) != pts.shape[:1]:
            raise ValueError(f"{name} must have one weight per point, shape {pts.shape[:1]}, got {jnp.shape(w)}")
    return _sinkhorn(x, y, epsilon, tol, max_iters, a, b)


@partial(jax.jit, static_argnums=4)
def _sinkhorn(x, y, epsilon, tol, max_iters, a, b):
    # One program per shape: called outside jit, ott's geometry set-up would otherwise run (and compile) op by op.
    from ott.geometry import pointcloud
    from ott.tools import sinkhorn_divergence as sd

    value, _ = sd.sinkhorn_divergence(pointcloud.PointCloud, x, y, epsilon=epsilon, a=a, b=b,
                                      solve_kwargs={"threshold": tol, "max_iterations": max_iters})
    return value
