"""Host-side input validation shared by the metrics.

Every public metric takes sample arrays of shape ``(n, d)``. A bad array must
fail here with a message that names it, never come back as NaN or a complex
number from deep inside a solver. Validation needs concrete values (to look
for NaN/inf), so it runs on the host before the jitted float64 kernels.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from genlearn.data.validation import as_integer, check_data, check_positive


def as_samples(x: Any, name: str, min_n: int = 2) -> np.ndarray:
    """``x`` as a float64 ``(n, d)`` array with ``n >= min_n`` finite rows.

    ``check_data`` does the shape/NaN/inf checks (and reports the first bad
    row); the float64 copy is taken from the caller's array so that float64
    inputs keep their precision (``check_data`` itself returns float32).
    """
    if hasattr(x, "dtype") and np.issubdtype(np.asarray(x).dtype, np.complexfloating):
        raise ValueError(f"{name}: expected a real numeric array, got dtype {np.asarray(x).dtype}")
    check_data(x, name=name)
    arr = np.asarray(x, dtype=np.float64)
    if arr.shape[0] < min_n:
        raise ValueError(
            f"{name}: need at least {min_n} samples (rows), got shape {arr.shape}"
        )
    return arr


def as_pair(x: Any, y: Any, names=("x", "y"), min_n: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Two sample sets with the same feature dimension ``d``."""
    a = as_samples(x, names[0], min_n)
    b = as_samples(y, names[1], min_n)
    if a.shape[1] != b.shape[1]:
        raise ValueError(
            f"dimension mismatch: {names[0]} has shape {a.shape} and {names[1]} "
            f"has shape {b.shape}; both need the same number of features d"
        )
    return a, b


def as_int(value: Any, name: str, low: int = 1) -> int:
    v = as_integer(value, name, f"an integer >= {low}")
    if v < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {v}")
    return v


as_positive = check_positive


def as_weights(w: Any, n: int, name: str) -> np.ndarray:
    """Uniform ``1/n`` when ``w`` is None, else non-negative weights summing to 1."""
    if w is None:
        return np.full(n, 1.0 / n)
    arr = np.asarray(w, dtype=np.float64)
    if arr.shape != (n,):
        raise ValueError(f"{name}: expected weights of shape ({n},), got shape {arr.shape}")
    if not np.all(np.isfinite(arr)) or np.any(arr < 0):
        raise ValueError(f"{name}: weights must be finite and >= 0")
    total = arr.sum()
    if not np.isclose(total, 1.0, rtol=1e-6, atol=0):
        raise ValueError(f"{name}: weights must sum to 1, got sum {total!r}")
    return arr / total


def subsample(x: np.ndarray, max_n: int | None, rng: np.random.Generator) -> np.ndarray:
    """At most ``max_n`` rows of ``x`` chosen without replacement."""
    if max_n is None or x.shape[0] <= max_n:
        return x
    return x[np.sort(rng.choice(x.shape[0], size=max_n, replace=False))]
