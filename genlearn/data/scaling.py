"""Per-feature standardisation as a bijection with a known log-determinant.

Density models are easier to fit on standardised data ``z = (x - m) / s``.
Because this is an affine bijection with diagonal Jacobian ``diag(1 / s)``,
a density ``q`` fitted on ``z`` gives a density on ``x`` by change of
variables:

    log p_x(x) = log q_z((x - m) / s) + log|det dz/dx|
               = log q_z(z) - sum_j log s_j,

so the log-likelihoods (and bits/dim) of a model trained on standardised data
stay comparable with models trained on raw data once ``log_det`` is added.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from genlearn.data.validation import check_data

__all__ = ["standardize_stats", "standardize", "unstandardize"]

_REL_FLOOR = 1e-8


def standardize_stats(x: Any) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature mean and (population) standard deviation of a data matrix.

    ``m_j = mean_i x_ij`` and ``s_j = max(sqrt(mean_i (x_ij - m_j)^2), eps)``
    with the relative floor ``eps = 1e-8 * max(1, max_ij |x_ij|)``, so that a
    constant feature gives a finite (if large) scale instead of a division by
    zero. Statistics are accumulated in float64.

    Args:
      x: array-like of shape ``(n, d)`` with ``n >= 2`` finite rows.

    Returns:
      ``(mean, std)``: float32 NumPy arrays of shape ``(d,)``, ``std > 0``.

    Raises:
      ValueError: if ``x`` fails ``check_data`` or has fewer than 2 rows.
    """
    x = check_data(x, name="standardize_stats input")
    if x.shape[0] < 2:
        raise ValueError(
            "standardize_stats needs at least 2 rows to estimate a standard "
            f"deviation, got shape {x.shape}"
        )
    x64 = x.astype(np.float64)
    mean = x64.mean(axis=0)
    std = x64.std(axis=0)
    floor = _REL_FLOOR * max(1.0, float(np.abs(x64).max()))
    std = np.maximum(std, floor)
    return mean.astype(np.float32), std.astype(np.float32)


def _check_stats(x: jax.Array, mean: jax.Array, std: jax.Array, fn: str) -> None:
    d = x.shape[-1] if x.ndim else None
    if x.ndim not in (1, 2):
        raise ValueError(
            f"{fn}: expected x of shape (d,) or (n, d), got shape {x.shape}"
        )
    for arr, name in ((mean, "mean"), (std, "std")):
        if arr.shape != (d,):
            raise ValueError(
                f"{fn}: expected {name} of shape ({d},) to match x of shape "
                f"{x.shape}, got shape {arr.shape}"
            )
    if not isinstance(std, jax.core.Tracer) and not bool(jnp.all(std > 0)):
        raise ValueError(f"{fn}: std must be > 0 everywhere, got {std}")


def standardize(
    x: Any, mean: Any, std: Any
) -> tuple[jax.Array, jax.Array]:
    """The affine bijection ``z = (x - mean) / std`` and its log-determinant.

    Args:
      x: ``(d,)`` or ``(n, d)`` array.
      mean: ``(d,)`` array (e.g. from ``standardize_stats``).
      std: ``(d,)`` array, all entries > 0.

    Returns:
      ``(z, log_det)``: ``z`` of the shape of ``x``, and the scalar
      ``log_det = log|det dz/dx| = -sum_j log std_j``, the same for every
      example (add it to ``log q(z)`` to get ``log p(x)``).

    Jit- and grad-compatible.
    """
    x, mean, std = jnp.asarray(x), jnp.asarray(mean), jnp.asarray(std)
    _check_stats(x, mean, std, "standardize")
    return (x - mean) / std, -jnp.sum(jnp.log(std))


def unstandardize(
    z: Any, mean: Any, std: Any
) -> tuple[jax.Array, jax.Array]:
    """Inverse of ``standardize``: ``x = z * std + mean``.

    Args:
      z: ``(d,)`` or ``(n, d)`` array.
      mean: ``(d,)`` array.
      std: ``(d,)`` array, all entries > 0.

    Returns:
      ``(x, log_det)`` with ``log_det = log|det dx/dz| = sum_j log std_j``.
    """
    z, mean, std = jnp.asarray(z), jnp.asarray(mean), jnp.asarray(std)
    _check_stats(z, mean, std, "unstandardize")
    return z * std + mean, jnp.sum(jnp.log(std))
