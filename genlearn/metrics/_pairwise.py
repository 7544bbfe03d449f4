"""Blocked pairwise computations in float64 JAX.

A full ``(n, m)`` distance matrix at ``n = m = 20,000`` is 3.2 GB in float64;
the metrics never build it. ``row_reduce`` (from :mod:`genlearn.distances`)
maps a row-block function over ``block`` rows of ``a`` at a time
(``lax.map``), so the peak memory is ``block * m`` entries whatever ``n`` is.
Rows are padded to a few bucket sizes so that nearby ``n`` share a compilation.
"""

from __future__ import annotations

import jax

from genlearn.distances import row_reduce, sq_dists

__all__ = ["x64", "sq_dists", "row_reduce", "bucket_size", "pad_rows"]


def x64():
    """Context in which the metric kernels run: float64 on every backend."""
    return jax.enable_x64(True)


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
