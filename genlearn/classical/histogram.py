r"""Histogram density estimator in d dimensions.

The support box :math:`[\ell, u] = \prod_j [\ell_j, u_j]` is cut into
:math:`B_1 \times \dots \times B_d` equal cells of widths
:math:`w_j = (u_j - \ell_j) / B_j`. With :math:`c_b` training points in cell
:math:`b` (``numpy.histogramdd`` convention: cells are half-open
:math:`[e, e + w)` except the last one per axis, which includes its right
edge) and an optional pseudo-count :math:`\alpha \ge 0`,

.. math::

    \hat p(x) = \frac{c_{b(x)} + \alpha}{(n + \alpha N) \prod_j w_j}, \qquad
    N = \prod_j B_j ,

which integrates to exactly one over the box (the basis-expansion form of the
lecture's "History" slide, with indicator kernels of the cells). Outside the
box :math:`\hat p = 0`, i.e. ``log_prob = -inf``, unless a ``floor`` is given:
then ``log_prob = max(log p_hat, log floor)`` everywhere, a convenience for
scoring held-out data that makes the density improper (it no longer integrates
to one) and is documented as such.

Params (arrays only): ``{"low": (d,), "high": (d,), "width": (d,), "num_bins":
(d,) int32, "log_density": (N,)}`` with cells flattened in C order (last axis fastest),
as ``numpy.histogramdd(...)[0].ravel()``.
"""

from __future__ import annotations

import functools
import math
from typing import Any, Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from genlearn.classical._validation import (
    check_fit_data,
    check_int,
    check_key,
    check_num_samples,
    check_positive,
    check_query,
)

__all__ = ["Histogram", "histogram", "MAX_CELLS", "CV_BINS"]

MAX_CELLS = 2**24
CV_BINS = (4, 5, 6, 8, 10, 12, 16, 20, 25, 32, 40, 50, 64, 80, 100, 128, 160, 200, 256, 320, 400, 512)
"""The bins per axis that ``bins="cv"`` chooses from (those with at most ``MAX_CELLS`` cells)."""


def _describe_bins(nb: np.ndarray) -> str:
    if np.all(nb == nb[0]):
        return f"{int(nb[0])} bins per axis"
    return f"bins per axis {nb.tolist()}" if nb.size <= 8 else f"{nb.min()}..{nb.max()} bins per axis"
"""Largest number of cells a histogram may have (the table is dense): with
10 bins per axis this is reached at d = 8, the curse of dimensionality."""

Array = jax.Array
Params = dict


class Histogram(NamedTuple):
    """A histogram estimator as pure functions.

    Attributes:
      name: ``"histogram"``.
      fit: ``fit(key, data) -> params`` for data ``(n, d)`` (key unused; kept
        for the uniform estimator interface).
      log_prob: ``log_prob(params, x) -> (m,)`` for x ``(m, d)``.
      sample: ``sample(params, key, n) -> (n, d)``: a cell drawn by its mass,
        then a uniform point in it.
      cell_masses: ``cell_masses(params) -> (N,)`` probability of each cell
        (sums to 1).
    """

    name: str
    fit: Callable[[Array, Any], Params]
    log_prob: Callable[[Params, Array], Array]
    sample: Callable[[Params, Array, int], Array]
    cell_masses: Callable[[Params], Array]


def _check_range(rng, d: int) -> np.ndarray:
    arr = np.asarray(rng, dtype=np.float64)
    if arr.shape == (2,):
        arr = np.tile(arr, (d, 1))
    if arr.shape != (d, 2):
        raise ValueError(
            f"histogram: range must be (low, high) or one (low, high) pair per axis "
            f"(shape ({d}, 2)), got shape {arr.shape}"
        )
    if not np.all(np.isfinite(arr)) or np.any(arr[:, 1] <= arr[:, 0]):
        raise ValueError(f"histogram: range needs finite low < high per axis, got {arr.tolist()}")
    return arr


def histogram(
    bins: int | Sequence[int] = 10,
    *,
    bin_width: float | Sequence[float] | None = None,
    range: Sequence | None = None,
    floor: float | None = None,
    pseudocount: float = 0.0,
) -> Histogram:
    r"""Histogram estimator :math:`\hat p(x) = (c_{b(x)} + \alpha) / ((n + \alpha N) \prod_j w_j)`.

    Args:
      bins: bins per axis, an int >= 1 or one int per axis, or ``"cv"``: the
        count of :data:`CV_BINS` (the same on every axis) with the highest
        leave-one-out log-likelihood of the training data, p_{-i}(x_i) =
        (c_{b(x_i)} - 1 + alpha) / ((n - 1 + alpha N) prod_j w_j) (closed form,
        one pass per candidate). Ignored when ``bin_width`` is given.
      bin_width: cell width h > 0 (a number or one per axis); the number of
        bins per axis is then ``ceil((high - low) / h)`` (at least 1) and the
        box is extended on the right so that the width is exactly h.
      range: the box, ``(low, high)`` for all axes or ``[(low_1, high_1), ...]``.
        Default: the data's per-axis min and max (an axis where they are equal
        gets ``(v - 0.5, v + 0.5)``, as numpy does). Training points outside a
        given range are not counted (numpy's convention).
      floor: if given (> 0), ``log_prob`` returns at least ``log(floor)``,
        instead of ``-inf`` outside the box or in an empty cell. The floored
        density is not normalised.
      pseudocount: alpha >= 0 added to every cell's count (Laplace smoothing);
        keeps exact normalisation.

    Returns:
      A :class:`Histogram`.

    Raises:
      ValueError: ``bins < 1``, non-positive ``bin_width`` or ``floor``, a bad
        ``range``, NaN/inf data, more than ``MAX_CELLS`` cells, or a query of
        the wrong dimension.
    """
    if bin_width is None:
        if isinstance(bins, str):
            if bins != "cv":
                raise ValueError(f"histogram: bins must be an int >= 1, one per axis, or 'cv', got {bins!r}")
        elif np.ndim(bins) == 0:
            check_int(bins, "histogram: bins", 1)
        else:
            for b in bins:
                check_int(b, "histogram: bins", 1)
    else:
        for h in np.atleast_1d(np.asarray(bin_width, dtype=object)):
            check_positive(h, "histogram: bin_width")
    log_floor = None if floor is None else math.log(check_positive(floor, "histogram: floor"))
    alpha = check_positive(pseudocount, "histogram: pseudocount", allow_zero=True)

    def fit(key, data):
        del key  # deterministic estimator
        x = check_fit_data(data, "histogram.fit")
        n, d = x.shape
        xn = np.asarray(x, dtype=np.float64)
        if range is None:
            lo, hi = xn.min(0), xn.max(0)
            same = hi == lo
            lo, hi = np.where(same, lo - 0.5, lo), np.where(same, hi + 0.5, hi)
        else:
            lo, hi = _check_range(range, d).T
        if bin_width is None and isinstance(bins, str):
            nb = np.full((d,), _cv_bins(xn, lo, hi, alpha), np.int64)
        elif bin_width is None:
            nb = np.broadcast_to(np.asarray(bins, dtype=np.int64), (d,)).copy()
            if np.ndim(bins) and len(bins) != d:
                raise ValueError(f"histogram: got {len(bins)} bin counts for {d}-dimensional data")
        else:
            h = np.broadcast_to(np.asarray(bin_width, dtype=np.float64), (d,))
            nb = np.maximum(1, np.ceil((hi - lo) / h - 1e-12)).astype(np.int64)
            hi = lo + nb * h
        cells = int(np.prod(nb.astype(float)))
        if cells > MAX_CELLS:
            raise ValueError(
                f"histogram: {cells:.3g} cells ({_describe_bins(nb)} in d = {d}) exceed "
                f"MAX_CELLS = {MAX_CELLS}; use fewer bins or a larger bin_width (the curse of "
                f"dimensionality: a histogram needs bins**d cells)"
            )
        width = (hi - lo) / nb
        # The same cell index as log_prob, so that no training point can land
        # in an "empty" cell through rounding at an edge.
        flat, inside = _cell_index(np, lo, hi, width, nb, xn)
        counts = np.bincount(flat[inside], minlength=cells).astype(np.float64)
        log_vol = np.sum(np.log(width))
        total = counts.sum() + alpha * cells
        with np.errstate(divide="ignore"):
            log_density = np.log(counts.ravel() + alpha) - np.log(total) - log_vol
        dt = x.dtype
        return {
            "low": jnp.asarray(lo, dt),
            "high": jnp.asarray(hi, dt),
            "width": jnp.asarray(width, dt),
            "num_bins": jnp.asarray(nb, jnp.int32),
            "log_density": jnp.asarray(log_density, dt),
        }

    def log_prob(params, x):
        d = params["low"].shape[0]
        x = check_query(x, d, "histogram.log_prob").astype(params["log_density"].dtype)
        return _log_prob_jit(log_floor, params, x)

    def cell_masses(params):
        return jnp.exp(params["log_density"] + jnp.sum(jnp.log(params["width"])))

    def sample(params, key, n):
        n = check_num_samples(n, "histogram.sample")
        check_key(key, "histogram.sample")
        k_cell, k_pos = jax.random.split(key)
        log_mass = params["log_density"] + jnp.sum(jnp.log(params["width"]))
        flat = jax.random.categorical(k_cell, log_mass, shape=(n,))
        nb = params["num_bins"]
        idx = (flat[:, None] // _strides(jnp, nb)) % nb
        u = jax.random.uniform(k_pos, (n, nb.shape[0]), dtype=params["low"].dtype)
        return params["low"] + (idx + u) * params["width"]

    return Histogram("histogram", fit, log_prob, sample, cell_masses)


def _cv_bins(x: np.ndarray, lo: np.ndarray, hi: np.ndarray, alpha: float) -> int:
    """The bins per axis of :data:`CV_BINS` with the highest mean leave-one-out log-likelihood of ``x``."""
    n, d = x.shape
    fits = [b for b in CV_BINS if float(b) ** d <= MAX_CELLS]
    if not fits:
        raise ValueError(f"histogram: even {CV_BINS[0]}^{d} cells exceed MAX_CELLS = {MAX_CELLS} (the curse "
                         f"of dimensionality: a histogram needs bins**d cells)")
    best, best_score = fits[0], -np.inf
    for b in fits:
        nb = np.full((d,), b, np.int64)
        width = (hi - lo) / nb
        flat, inside = _cell_index(np, lo, hi, width, nb, x)
        counts = np.bincount(flat[inside], minlength=b**d).astype(np.float64)
        with np.errstate(divide="ignore"):  # a point alone in its cell scores log(alpha), -inf for alpha = 0
            loo = (np.log(counts[flat[inside]] - 1.0 + alpha) - np.log(n - 1.0 + alpha * b**d)
                   - np.sum(np.log(width)))
        score = float(np.mean(loo)) if loo.size else -np.inf
        if score > best_score:
            best, best_score = b, score
    return best


def _strides(xp, nb):
    """C-order strides of a ``nb[0] x ... x nb[d-1]`` table."""
    return xp.cumprod(xp.concatenate([nb[1:], xp.ones((1,), nb.dtype)])[::-1])[::-1]


def _cell_index(xp, low, high, width, nb, x):
    """Flat C-order cell index ``(m,)`` and inside-the-box mask, with numpy
    (``xp=np``) or jax.numpy; the last cell of each axis is closed."""
    idx = xp.clip(xp.floor((x - low) / width), 0, nb - 1).astype(nb.dtype)
    inside = xp.all((x >= low) & (x <= high), axis=1)
    return xp.sum(idx * _strides(xp, nb), axis=1), inside


@functools.partial(jax.jit, static_argnums=(0,))
def _log_prob_jit(log_floor, params, x):
    flat, inside = _cell_index(
        jnp, params["low"], params["high"], params["width"], params["num_bins"], x
    )
    lp = jnp.where(inside, params["log_density"][flat], -jnp.inf)
    if log_floor is not None:
        lp = jnp.maximum(lp, log_floor)
    return lp
