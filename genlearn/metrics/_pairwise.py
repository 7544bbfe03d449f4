"""Blocked pairwise computations in float64 JAX.

A full ``(n, m)`` distance matrix at ``n = m = 20,000`` is 3.2 GB in float64;
the metrics never build it. ``row_reduce`` maps a row-block function over
``block`` rows of ``a`` at a time (``lax.map``), so the peak memory is
``block * m`` entries whatever ``n`` is.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp


def x64():
    """Context in which the metric kernels run: float64 on every backend."""
    return jax.enable_x64(True)


def sq_dists(a: jax.Array, b: jax.Array) -> jax.Array:
    """``D_ij = ||a_i - b_j||^2`` for ``a (p, d)``, ``b (m, d)``, clipped at 0.

    The expansion ``|a|^2 + |b|^2 - 2 a.b`` is one matmul; in float64 its
    rounding error (~1e-16 |a|^2) is far below what any metric here resolves.
    """
    aa = jnp.sum(a * a, axis=1)
    bb = jnp.sum(b * b, axis=1)
    return jnp.maximum(aa[:, None] + bb[None, :] - 2.0 * (a @ b.T), 0.0)


def row_reduce(fn: Callable[[jax.Array], jax.Array], a: jax.Array, block: int) -> jax.Array:
    """``concat([fn(a[i:i+block]) for i in range(0, n, block)])`` via ``lax.map``.

    ``fn`` maps a ``(block, d)`` slab to a ``(block, ...)`` result row by row;
    the rows padded onto the last slab are dropped from the output. Call it
    inside ``jax.jit`` with ``block`` static.
    """
    n = a.shape[0]
    block = max(1, min(block, n))
    nb = -(-n // block)
    pad = nb * block - n
    a_pad = jnp.concatenate([a, jnp.zeros((pad,) + a.shape[1:], a.dtype)]) if pad else a
    out = jax.lax.map(fn, a_pad.reshape((nb, block) + a.shape[1:]))
    return out.reshape((nb * block,) + out.shape[2:])[:n]


def bucket_size(n: int) -> int:
    """Padded row count for ``n`` rows: the next of 64, 96, 128, 192, 256, ... (<= 4096),
    then the next multiple of 1024.

    Jitted kernels compile once per shape; padding to a few bucket sizes (with
    a mask) lets calls at nearby ``n`` share one compilation, for at most 50%
    (below 4096) or 1024 rows (above) of padding.
    """
    if n > 4096:
        return -(-n // 1024) * 1024
    size = 64
    while size < n:
        size = size * 3 // 2 if (size & (size - 1)) == 0 else size * 4 // 3
    return size


def pad_rows(x, size: int | None = None):
    """``(x padded with zero rows to size, mask (size,) float with 1 on real rows)`` (NumPy)."""
    import numpy as np

    n = x.shape[0]
    size = bucket_size(n) if size is None else size
    out = np.zeros((size,) + x.shape[1:], x.dtype)
    out[:n] = x
    mask = np.zeros(size, x.dtype)
    mask[:n] = 1.0
    return out, mask
