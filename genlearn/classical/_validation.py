"""Argument and data checks shared by the classical estimators.

Data matrices go through :func:`genlearn.data.check_data` for the messages
(shape, emptiness, NaN/inf) but keep JAX's default float dtype (float64 under
``jax.enable_x64``), so reference comparisons can run in double precision.
Inside ``jax.jit`` a traced query cannot be inspected, so only its static
shape is checked there.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from genlearn.data.validation import as_integer, check_data, check_positive  # noqa: F401 (re-exported)

Array = jax.Array


def _float_dtype():
    return jnp.zeros(()).dtype  # float32, or float64 under x64


def check_fit_data(x: Any, where: str) -> Array:
    """``(n, d)`` finite training data as a JAX array of the default float dtype."""
    check_data(x, f"{where}: data")
    return jnp.asarray(np.asarray(x), dtype=_float_dtype())


def check_query(x: Any, dim: int, where: str) -> Array:
    """A query batch ``(m, dim)``; NaN/inf rejected when ``x`` is concrete."""
    if isinstance(x, jax.core.Tracer):
        shape = tuple(x.shape)
        if len(shape) != 2 or shape[1] != dim:
            raise ValueError(
                f"{where}: expected a batch of shape (n, {dim}), got shape {shape}"
            )
        if shape[0] == 0:
            raise ValueError(f"{where}: empty batch (shape {shape})")
        return x if jnp.issubdtype(x.dtype, jnp.floating) else x.astype(_float_dtype())
    arr = np.asarray(x)
    if arr.ndim == 2 and arr.shape[1] != dim:
        raise ValueError(
            f"{where}: model has dim {dim} but the query has dim {arr.shape[1]} "
            f"(expected shape (n, {dim}), got {arr.shape})"
        )
    check_data(arr, f"{where}: x", dim)
    return jnp.asarray(arr, dtype=_float_dtype())


def check_int(value: Any, name: str, minimum: int = 1, maximum: int | None = None) -> int:
    """A Python int in ``[minimum, maximum]``."""
    v = as_integer(value, name)
    if v < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {v}")
    if maximum is not None and v > maximum:
        raise ValueError(f"{name} must be <= {maximum}, got {v}")
    return v


def check_key(key: Any, where: str) -> Array:
    if key is None:
        raise ValueError(f"{where}: key must be a PRNG key (jax.random.key(seed)), got None")
    return key


def check_num_samples(n: Any, where: str) -> int:
    if isinstance(n, jax.core.Tracer):
        raise ValueError(f"{where}: n must be a static Python int, got a traced value")
    return check_int(n, f"{where}: n", 1)
