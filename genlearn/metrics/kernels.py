"""Kernel two-sample statistics as float64 metrics: MMD^2, its permutation test, energy distance, KID.

``mmd2`` and ``energy_distance`` are :func:`genlearn.distances.mmd2` and
:func:`genlearn.distances.energy_distance` (formulas there; the weak losses of
``genlearn.gan`` are the same functions) run on validated host arrays in
float64, over row blocks (``block_size``) so ``n = m = 20,000`` needs
``block * max(n, m)`` floats, not ``n * m``, returning Python floats.
Kernels: ``"gaussian"`` ``exp(-||x - y||^2 / (2 h^2))`` (default, with the
bandwidth ``h`` from the median heuristic when not given), ``"imq"``,
``"polynomial"`` ``(x.y / d + 1)^3`` (the KID kernel, Binkowski et al. 2018).
"""

from __future__ import annotations

from functools import partial
from typing import Any, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from genlearn import distances
from genlearn.metrics._checks import as_int, as_pair, as_positive, subsample
from genlearn.metrics._pairwise import pad_rows, x64

__all__ = [
    "median_heuristic_bandwidth",
    "mmd2",
    "MMDTestResult",
    "mmd_permutation_test",
    "energy_distance",
    "KIDResult",
    "kernel_inception_distance",
]

_mmd2 = jax.jit(distances.mmd2, static_argnames=("unbiased", "kernel", "block_size"))
_energy = jax.jit(distances.energy_distance, static_argnames=("block_size",))
_median = jax.jit(distances.median_bandwidth)


def _f64(fn, x, y, *args, **kwargs) -> float:
    with x64():
        return float(fn(jnp.asarray(x, jnp.float64), jnp.asarray(y, jnp.float64), *args, **kwargs))


def median_heuristic_bandwidth(x: Any, y: Any, max_samples: int = 1000, key: jax.Array | None = None) -> float:
    """Median heuristic: ``h = median_{i<j} ||z_i - z_j||`` over the pooled sample ``z = [x; y]``.

    Gretton et al. (2012), section 8. With ``k = exp(-||.||^2 / (2 h^2))`` a
    typical pair then has kernel value ``exp(-1/2)``.

    Args:
      x: ``(n, d)`` samples.
      y: ``(m, d)`` samples.
      max_samples: each set is subsampled (without replacement) to at most this
        many rows, so the cost is ``O(max_samples^2)``.
      key: PRNG key for the subsample; ``PRNGKey(0)`` when None (only used
        when a set has more than ``max_samples`` rows).

    Returns:
      ``h > 0`` as a Python float.

    Raises:
      ValueError: on bad samples, or when all pooled points coincide (h = 0).
    """
    x, y = as_pair(x, y)
    max_samples = as_int(max_samples, "max_samples", 2)
    seed = np.asarray(jax.random.key_data(key if key is not None else jax.random.PRNGKey(0))).ravel()
    rng = np.random.default_rng(seed.astype(np.uint64))
    h = _f64(_median, subsample(x, max_samples, rng), subsample(y, max_samples, rng))
    if not h > 0:
        raise ValueError(
            "median_heuristic_bandwidth: the median pairwise distance is 0 "
            "(most pooled points coincide); pass an explicit bandwidth"
        )
    return h


def mmd2(
    x: Any,
    y: Any,
    bandwidth: float | Sequence[float] | None = None,
    unbiased: bool = True,
    *,
    kernel: str = "gaussian",
    block_size: int = 256,
) -> float:
    """Squared MMD between two sample sets: :func:`genlearn.distances.mmd2` in float64.

    Args:
      x: ``(n, d)`` samples of P; y: ``(m, d)`` samples of Q (``n, m >= 2``).
      bandwidth: Gaussian ``h`` / IMQ ``c``, a sequence sums the kernels; None
        uses :func:`median_heuristic_bandwidth` (IMQ: ``c = h^2``). Ignored
        for ``"polynomial"``.
      unbiased: U-statistic (True, may be slightly negative) or V-statistic.
      kernel: ``"gaussian"``, ``"imq"`` or ``"polynomial"`` (``(x.y/d + 1)^3``).
      block_size: rows per block; peak memory ``block_size * max(n, m)`` floats.

    Returns:
      MMD^2 as a Python float.

    Raises:
      ValueError: bad samples (shape, NaN/inf, fewer than 2 rows, mismatched d),
        unknown kernel or a non-positive bandwidth.
    """
    x, y = as_pair(x, y)
    if kernel not in distances.KERNELS:
        raise ValueError(f"mmd2: kernel must be one of {distances.KERNELS}, got {kernel!r}")
    if kernel == "polynomial":
        scales = (1.0,)
    elif bandwidth is None:
        h = median_heuristic_bandwidth(x, y)
        scales = (h if kernel == "gaussian" else h * h,)
    else:
        seq = bandwidth if isinstance(bandwidth, (list, tuple, np.ndarray)) and np.ndim(bandwidth) == 1 else [bandwidth]
        scales = tuple(as_positive(b, "bandwidth") for b in seq)
        if not scales:
            raise ValueError("bandwidth: expected a positive number or a non-empty sequence, got []")
    return _f64(_mmd2, x, y, scales, bool(unbiased), kernel=kernel, block_size=as_int(block_size, "block_size"))


def energy_distance(x: Any, y: Any, *, block_size: int = 256) -> float:
    """Squared energy distance ``2 E||x - y|| - E||x - x'|| - E||y - y'||``: :func:`genlearn.distances.energy_distance`.

    V-statistic over all pairs (Szekely & Rizzo 2004/2013), in float64 over
    row blocks; ``E^2 >= 0`` with equality iff the empirical measures
    coincide. In 1-D, ``sqrt(E^2)`` equals ``scipy.stats.energy_distance``.

    Args:
      x: ``(n, d)`` samples, ``n >= 2``; y: ``(m, d)`` samples, ``m >= 2``.
      block_size: rows per block.

    Returns:
      ``E^2`` as a Python float, clipped at 0 against rounding.
    """
    x, y = as_pair(x, y)
    return max(_f64(_energy, x, y, block_size=as_int(block_size, "block_size")), 0.0)


class MMDTestResult(NamedTuple):
    """Result of :func:`mmd_permutation_test`.

    Attributes:
      mmd2: the observed statistic on the (possibly subsampled) sets.
      p_value: ``(1 + #{b: MMD^2_b >= MMD^2_obs}) / (1 + B)``.
      bandwidth: the Gaussian bandwidth used.
      num_samples: ``(n, m)`` actually used after subsampling.
    """

    mmd2: float
    p_value: float
    bandwidth: float
    num_samples: tuple[int, int]


@partial(jax.jit, static_argnames=("unbiased",))
def _perm_stats(labels, mask, z, bandwidth, n, m, unbiased):
    """MMD^2 for each labelling column of ``labels (N, B+1)`` (1 = first set, 0 = second or padding)."""
    k = distances._gram("gaussian", (bandwidth,), z, z)
    diag = jnp.diagonal(k)
    total = mask @ k @ mask
    kl = k @ labels
    kxx = jnp.sum(labels * kl, axis=0)
    kxy = jnp.sum((mask[:, None] - labels) * kl, axis=0)
    kyy = total - kxx - 2.0 * kxy
    dx = labels.T @ diag
    dy = mask @ diag - dx
    if unbiased:
        return (kxx - dx) / (n * (n - 1)) + (kyy - dy) / (m * (m - 1)) - 2.0 * kxy / (n * m)
    return kxx / n**2 + kyy / m**2 - 2.0 * kxy / (n * m)


def mmd_permutation_test(
    x: Any,
    y: Any,
    key: jax.Array,
    bandwidth: float | None = None,
    *,
    num_permutations: int = 500,
    unbiased: bool = True,
    max_samples: int = 1000,
) -> MMDTestResult:
    """Kernel two-sample test of ``H0: P = Q`` by permutation (Gretton et al. 2012, sec. 5).

    Under H0 the pooled sample is exchangeable, so the statistic's null
    distribution is that of ``MMD^2`` over random relabellings of ``[x; y]``
    into sets of sizes ``n`` and ``m``. With ``B`` permutations,

        p = (1 + #{b : MMD^2_b >= MMD^2_obs}) / (1 + B),

    which is a valid (slightly conservative) p-value for any ``B``.

    The pooled ``(N, N)`` Gaussian Gram matrix is built once and each
    permutation costs one column of ``K @ L`` (``L`` the label matrix), so the
    sets are subsampled to ``max_samples`` rows each (``N <= 2 max_samples``).

    Args:
      x: ``(n, d)`` samples; y: ``(m, d)`` samples (``n, m >= 2``).
      key: PRNG key (subsampling, permutations).
      bandwidth: Gaussian bandwidth, median heuristic when None.
      num_permutations: ``B >= 1``.
      unbiased: which MMD^2 estimator is the statistic.
      max_samples: cap on the rows used from each set.

    Returns:
      :class:`MMDTestResult`.
    """
    x, y = as_pair(x, y)
    num_permutations = as_int(num_permutations, "num_permutations")
    max_samples = as_int(max_samples, "max_samples", 2)
    k_sub, k_bw, k_perm = jax.random.split(key, 3)
    rng = np.random.default_rng(np.asarray(jax.random.key_data(k_sub)).ravel().astype(np.uint64))
    x = subsample(x, max_samples, rng)
    y = subsample(y, max_samples, rng)
    h = median_heuristic_bandwidth(x, y, key=k_bw) if bandwidth is None else as_positive(bandwidth, "bandwidth")
    # Labellings are drawn on the host: cheap, and no sort to compile per shape.
    prng = np.random.default_rng(np.asarray(jax.random.key_data(k_perm)).ravel().astype(np.uint64))
    big_n = x.shape[0] + y.shape[0]
    z, mask = pad_rows(np.concatenate([x, y]))
    base = (np.arange(big_n) < x.shape[0]).astype(np.float64)
    labels = np.zeros((z.shape[0], num_permutations + 1))
    labels[:big_n] = np.stack([base] + [prng.permutation(base) for _ in range(num_permutations)], axis=1)
    with x64():
        stats = np.asarray(
            _perm_stats(jnp.asarray(labels), jnp.asarray(mask), jnp.asarray(z), jnp.float64(h),
                        float(x.shape[0]), float(y.shape[0]), bool(unbiased))
        )
    obs = float(stats[0])
    p = (1.0 + float(np.sum(stats[1:] >= obs))) / (1.0 + num_permutations)
    return MMDTestResult(obs, p, h, (x.shape[0], y.shape[0]))


class KIDResult(NamedTuple):
    """Kernel inception distance: mean and standard deviation over subsets."""

    mean: float
    std: float


def kernel_inception_distance(
    x: Any,
    y: Any,
    key: jax.Array,
    *,
    subset_size: int = 1000,
    num_subsets: int = 20,
) -> KIDResult:
    """KID (Binkowski et al. 2018): unbiased MMD^2 with ``k(a, b) = (a.b / d + 1)^3``.

    Averaged over ``num_subsets`` random subsets of ``min(subset_size, n, m)``
    rows of each set (drawn without replacement within a subset). Pass
    *features* (e.g. :func:`genlearn.metrics.digits_features`), not pixels;
    values are then in that feature space, not Inception's.

    Args:
      x: ``(n, d)`` features; y: ``(m, d)`` features.
      key: PRNG key for the subsets.
      subset_size: rows per subset (>= 2).
      num_subsets: number of subsets (>= 1).

    Returns:
      :class:`KIDResult` ``(mean, std)`` of the subset estimates.
    """
    x, y = as_pair(x, y)
    s = min(as_int(subset_size, "subset_size", 2), x.shape[0], y.shape[0])
    num_subsets = as_int(num_subsets, "num_subsets")
    vals = []
    for k in jax.random.split(key, num_subsets):
        rng = np.random.default_rng(np.asarray(jax.random.key_data(k)).ravel().astype(np.uint64))
        xs = x[rng.choice(x.shape[0], s, replace=False)]
        ys = y[rng.choice(y.shape[0], s, replace=False)]
        vals.append(_f64(_mmd2, xs, ys, None, True, kernel="polynomial", block_size=256))
    vals = np.asarray(vals)
    return KIDResult(float(vals.mean()), float(vals.std()))
