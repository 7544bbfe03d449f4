"""Input validation for data sets and generator arguments.

``check_data`` is the single gate every public entry point that takes a data
matrix goes through (training loops, density models, metrics), so that a bad
array fails early with a message that names the problem instead of surfacing
later as a NaN loss or a broadcasting error deep inside a jitted function.

The private ``_check_*`` helpers validate the scalar arguments of the toy
generators and loaders. They are written to be safe under ``jax.jit``: a
traced value cannot be inspected, so it is let through unchecked.
"""

from __future__ import annotations

import math
import operator
from typing import Any

import jax
import numpy as np

__all__ = ["check_data", "as_integer", "check_positive"]


def check_data(x: Any, name: str = "data", dim: int | None = None) -> np.ndarray:
    """Validates a data matrix and returns it as a float32 NumPy array.

    Args:
      x: array-like of shape ``(n, d)``: ``n`` examples (rows) of ``d``
        real features. Integer and boolean arrays are accepted and converted.
      name: what ``x`` is, used in error messages (e.g. ``"train"``).
      dim: if given, the required number of features ``d``.

    Returns:
      ``np.ndarray`` of shape ``(n, d)`` and dtype float32 (a copy only when a
      conversion was needed).

    Raises:
      ValueError: if ``x`` is not numeric, not 2-D, empty (``n == 0`` or
        ``d == 0``), contains NaN or inf (the message says how many rows and
        the first one), does not fit in float32, or has ``d != dim``.
    """
    arr = np.asarray(x)
    if arr.dtype == object or not (
        np.issubdtype(arr.dtype, np.floating)
        or np.issubdtype(arr.dtype, np.integer)
        or np.issubdtype(arr.dtype, np.bool_)
    ):
        raise ValueError(
            f"{name}: expected a real numeric array, got dtype {arr.dtype}"
        )
    if arr.ndim != 2:
        raise ValueError(
            f"{name}: expected an array of shape (n, d), got shape {arr.shape}"
        )
    n, d = arr.shape
    if n == 0:
        raise ValueError(
            f"{name}: data is empty (n == 0 rows), got shape {arr.shape}; "
            "need at least one example"
        )
    if d == 0:
        raise ValueError(
            f"{name}: data is empty (d == 0 features), got shape {arr.shape}"
        )
    if dim is not None and d != dim:
        raise ValueError(
            f"{name}: expected {dim} features per row, i.e. shape (n, {dim}), "
            f"got shape {arr.shape}"
        )
    if np.issubdtype(arr.dtype, np.floating):
        bad_rows = ~np.all(np.isfinite(arr), axis=1)
        n_bad = int(bad_rows.sum())
        if n_bad:
            n_nan = int(np.isnan(arr).any(axis=1).sum())
            first = int(np.argmax(bad_rows))
            raise ValueError(
                f"{name}: {n_bad} of {n} rows contain NaN or inf values "
                f"({n_nan} with NaN; first bad row is {first})"
            )
    with np.errstate(over="ignore", invalid="ignore"):  # reported below
        out = arr.astype(np.float32, copy=False)
    if out is not arr and not np.all(np.isfinite(out)):
        n_bad = int((~np.all(np.isfinite(out), axis=1)).sum())
        raise ValueError(
            f"{name}: {n_bad} of {n} rows overflow float32 (|x| > 3.4e38)"
        )
    return out


def all_finite(leaf: Any) -> bool:
    """Whether every element of a concrete array is finite (not NaN or +-inf); non-float arrays are.

    An array on the host (numpy, or a jax array on a CPU device) is checked by numpy: no XLA program per
    shape, which op-by-op ``jnp.all(jnp.isfinite(leaf))`` would compile (two programs, ~70 ms on first
    sight of each shape on 2 CPU cores). Arrays on an accelerator are reduced there by one jitted program.
    """
    if not jax.dtypes.issubdtype(np.result_type(leaf), np.inexact):
        return True
    if isinstance(leaf, jax.Array) and not (leaf.is_fully_addressable
                                            and all(d.platform == "cpu" for d in leaf.devices())):
        return bool(_all_finite_on_device(leaf))
    return bool(np.isfinite(np.asarray(leaf)).all())


@jax.jit
def _all_finite_on_device(leaf):
    return jax.numpy.all(jax.numpy.isfinite(leaf))


def _is_traced(value: Any) -> bool:
    return isinstance(value, jax.core.Tracer)


def as_integer(value: Any, name: str, expected: str = "an integer") -> int:
    """``value`` as a Python int (``operator.index``; bools rejected), else a ValueError
    ``"{name} must be {expected}, got {value!r}"``. Range checks stay with the caller."""
    if isinstance(value, bool):
        raise ValueError(f"{name} must be {expected}, got {value!r}")
    try:
        return operator.index(value)
    except TypeError:
        raise ValueError(f"{name} must be {expected}, got {value!r} of type {type(value).__name__}") from None


def check_positive(value: Any, name: str, allow_zero: bool = False) -> float:
    """A finite real number > 0 (>= 0 with ``allow_zero``), as a Python float."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a real number, got {value!r}") from None
    if not math.isfinite(v) or v < 0 or (v == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be finite and {bound}, got {value!r}")
    return v


def _check_n(n: Any, name: str = "n") -> int:
    """Returns ``n`` as a Python int, requiring a static integer >= 1."""
    if _is_traced(n):
        raise ValueError(
            f"{name} must be a static Python int (mark it static under jax.jit, "
            "e.g. jax.jit(f, static_argnums=1)), got a traced value"
        )
    n_int = as_integer(n, name, "an integer >= 1")
    if n_int < 1:
        raise ValueError(f"{name} must be >= 1, got {n_int}")
    return n_int


def _check_seed(seed: Any) -> int:
    seed = as_integer(seed, "seed", "a non-negative integer")
    if seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed}")
    return seed


def _concrete_float(value: Any, name: str) -> float | None:
    """``float(value)`` for a concrete real scalar, None when traced."""
    if _is_traced(value):
        return None
    if np.ndim(value) != 0:
        raise ValueError(
            f"{name} must be a scalar, got shape {np.shape(value)}"
        )
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a real number, got {value!r}") from None
    if not math.isfinite(v):
        raise ValueError(f"{name} must be finite, got {v}")
    return v


def _check_nonnegative(value: Any, name: str) -> None:
    v = _concrete_float(value, name)
    if v is not None and v < 0:
        raise ValueError(f"{name} must be >= 0, got {v}")


def _check_positive(value: Any, name: str) -> None:
    v = _concrete_float(value, name)
    if v is not None and v <= 0:
        raise ValueError(f"{name} must be > 0, got {v}")


def _check_finite(value: Any, name: str) -> None:
    _concrete_float(value, name)
