"""The scikit-learn 8x8 digits, a seeded train/test split, and dequantization.

The data set ships with scikit-learn (``sklearn.datasets.load_digits``): 1797
images of 8x8 pixels, each pixel an integer intensity in ``{0, ..., 16}``, so
``d = 64`` and ``K = DIGITS_LEVELS = 17`` levels.

Bits per dimension for discrete data
-----------------------------------
A continuous density model cannot be fit to integer data directly (it could
put infinite density on the lattice). The standard fix (Theis et al. 2016, "A
note on the evaluation of generative models"; Uria et al. 2013) is *uniform
dequantization*: train and evaluate on ``y = x + u`` with ``u ~ U[0, 1)^d``.

For ``x`` in ``{0, ..., K-1}^d`` and any density ``p`` on ``[0, K)^d``, define
the discrete model ``P(x) = int_{[0,1)^d} p(x + u) du`` (the mass of the
unit bin above ``x``). By Jensen's inequality,

    -log P(x) = -log E_u[p(x + u)] <= E_u[-log p(x + u)],

so the dequantized negative log-likelihood (in nats) upper-bounds the
discrete one, with equality when ``p`` is constant on each bin. The reported
figure is

    bits/dim = E_{x, u}[-log p(x + u)] / (d ln 2)

(``nats_to_bits_per_dim``). If the model sees rescaled data ``y' = (x + u) / K``
(or standardised data), add the log-Jacobian of the rescaling first:
``-log p_y(y) = -log p_{y'}(y') - d log(1/K)``, i.e. add ``d log K`` nats.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from genlearn.data.validation import _check_seed, as_integer

__all__ = [
    "DIGITS_LEVELS",
    "DIGITS_NUM_EXAMPLES",
    "DIGITS_DIM",
    "digits_split_indices",
    "load_digits_split",
    "uniform_dequantize",
    "quantize",
    "nats_to_bits_per_dim",
]

DIGITS_LEVELS = 17
"""Number of intensity levels of a digits pixel: values are ``0, ..., 16``."""

DIGITS_NUM_EXAMPLES = 1797
"""Number of images in ``sklearn.datasets.load_digits``."""

DIGITS_DIM = 64
"""Pixels per image (8 x 8)."""


def digits_split_indices(
    seed: int = 0, n_train: int = 1400
) -> tuple[np.ndarray, np.ndarray]:
    """Row indices of the seeded digits split.

    ``perm = np.random.default_rng(seed).permutation(1797)``; the train rows are
    ``perm[:n_train]`` and the test rows ``perm[n_train:]``.

    Args:
      seed: non-negative integer seed of the NumPy generator.
      n_train: number of training images, ``1 <= n_train <= 1796``.

    Returns:
      ``(train_idx, test_idx)``: int64 arrays of shapes ``(n_train,)`` and
      ``(1797 - n_train,)``, disjoint, together a permutation of ``0..1796``.
    """
    seed = _check_seed(seed)
    n_train = as_integer(n_train, "n_train")
    if not 1 <= n_train <= DIGITS_NUM_EXAMPLES - 1:
        raise ValueError(
            f"n_train must be in [1, {DIGITS_NUM_EXAMPLES - 1}] so that both "
            f"splits are non-empty, got {n_train}"
        )
    perm = np.random.default_rng(seed).permutation(DIGITS_NUM_EXAMPLES)
    return perm[:n_train], perm[n_train:]


def load_digits_split(
    seed: int = 0, n_train: int = 1400
) -> tuple[np.ndarray, np.ndarray]:
    """Loads the scikit-learn digits and splits them by a seeded permutation.

    Args:
      seed: non-negative integer seed; the split is
        ``digits_split_indices(seed, n_train)``.
      n_train: number of training images, ``1 <= n_train <= 1796``.

    Returns:
      ``(train, test)``: float32 arrays of shapes ``(n_train, 64)`` and
      ``(1797 - n_train, 64)`` (``(1400, 64)`` and ``(397, 64)`` by default)
      whose values are the integers ``0, ..., 16``.
    """
    from sklearn.datasets import load_digits  # sklearn import is slow; defer it

    train_idx, test_idx = digits_split_indices(seed, n_train)
    data = np.asarray(load_digits().data, dtype=np.float32)
    if data.shape != (DIGITS_NUM_EXAMPLES, DIGITS_DIM):
        raise ValueError(
            "sklearn.datasets.load_digits returned shape "
            f"{data.shape}, expected ({DIGITS_NUM_EXAMPLES}, {DIGITS_DIM})"
        )
    return data[train_idx], data[test_idx]


def uniform_dequantize(key: jax.Array, x: jax.Array) -> jax.Array:
    """Uniform dequantization ``y = x + u``, ``u ~ U[0, 1)`` elementwise.

    Args:
      key: PRNG key.
      x: array of any shape; integer inputs are converted to float32, floating
        inputs keep their dtype.

    Returns:
      Array of the shape of ``x`` with ``x <= y < x + 1`` elementwise, exactly
      in floating point: where rounding ``x + u`` would reach ``x + 1`` the
      result is clamped to the largest float below it. (For ``|x| >= 2^23``
      in float32 the interval holds no float other than ``x`` itself.)

    Jit-compatible; see the module docstring for the bits/dim convention.
    """
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        x = x.astype(jnp.float32)
    u = jax.random.uniform(key, x.shape, dtype=x.dtype)
    upper = x + jnp.ones((), x.dtype)
    return jnp.clip(x + u, x, jnp.nextafter(upper, x))


def quantize(y: Any, levels: int) -> Any:
    """The discrete image of a dequantised sample: ``x = clip(floor(y), 0, levels - 1)``.

    The inverse of :func:`uniform_dequantize` (``quantize(uniform_dequantize(k,
    x), L) == x`` exactly). A density ``p`` fitted to dequantised data defines
    the discrete model ``P(x) = integral over [0, 1)^d of p(x + u) du``; if
    ``y ~ p`` then ``floor(y) ~ P``, so this is how a sample of such a model
    becomes an image. Comparing ``y`` itself with integer images adds half a
    level to every pixel on average (for the digits, that alone moves the
    training images' ``digits_fid`` from 1.59 to 2.73).

    Args:
      y: array of any shape on the dequantised scale ``[0, levels)``; values
        outside are clipped to the end levels.
      levels: the number of discrete levels ``L`` (17 for the digits), >= 2.

    Returns:
      ``floor(y)`` clipped to ``[0, levels - 1]``, with the dtype of ``y``
      (numpy in, numpy out; jax in, jax out).
    """
    if int(levels) < 2:
        raise ValueError(f"levels must be an integer >= 2, got {levels!r}")
    if isinstance(y, np.ndarray):
        return np.clip(np.floor(y), 0, int(levels) - 1)
    return jnp.clip(jnp.floor(y), 0, int(levels) - 1)


def nats_to_bits_per_dim(nll_nats: Any, dim: int) -> Any:
    """Converts a per-example negative log-likelihood to bits per dimension.

    ``bits/dim = nll_nats / (dim * ln 2)``.

    Args:
      nll_nats: negative log-likelihood of one example in nats (scalar or
        array; for dequantized discrete data, ``-log p(x + u)``).
      dim: data dimension ``d``, a positive integer.

    Returns:
      Same type and shape as ``nll_nats``.
    """
    dim = as_integer(dim, "dim", "a positive integer")
    if dim < 1:
        raise ValueError(f"dim must be a positive integer, got {dim}")
    return nll_nats / (dim * math.log(2.0))
