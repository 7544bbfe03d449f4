"""One loader for every named data set, as used by the command-line interface.

``load_dataset(name, seed=...)`` returns a ``Dataset`` record of NumPy float32
train/test matrices plus the metadata that evaluation needs (the number of
discrete levels for bits/dim, the mode centres for mode-coverage metrics).
The registry is a read-only mapping; loading is a pure function of
``(name, seed, n_train, n_test)``.
"""

from __future__ import annotations

import types
from typing import Callable, Mapping, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from genlearn.data import digits as _digits
from genlearn.data import toys as _toys
from genlearn.data.validation import _check_n, _check_seed

__all__ = ["DATASETS", "Dataset", "load_dataset", "TOY_N_TRAIN", "TOY_N_TEST"]

DATASETS: Mapping[str, str] = types.MappingProxyType(
    {
        "moons": "2-D two interleaving half circles, noise 0.05 (sklearn make_moons)",
        "circles": "2-D two concentric circles, noise 0.05, factor 0.5 (sklearn make_circles)",
        "ring8": "2-D mixture of 8 Gaussians on a circle, radius 2, std 0.02",
        "grid25": "2-D mixture of 25 Gaussians on a 5x5 grid {-4,-2,0,2,4}^2, std 0.02",
        "checkerboard": "2-D uniform on the dark squares of a checkerboard on [-4,4]^2 (FFJORD)",
        "pinwheel": "2-D pinwheel with 5 curved arms (FFJORD)",
        "spirals": "2-D two interleaved spirals, noise 0.1 (FFJORD 2spirals)",
        "swissroll": "2-D Swiss roll, noise 0.5, scaled by 1/5 (FFJORD)",
        "digits": "64-D sklearn 8x8 digits, integer pixels 0..16, 1400 train / 397 test",
    }
)
"""Data set names mapped to one-line descriptions (read-only)."""

TOY_N_TRAIN = 20_000
"""Default number of training points of a toy data set."""

TOY_N_TEST = 5_000
"""Default number of test points of a toy data set."""

# Folded into PRNGKey(seed) to get the test key: a fixed large constant keeps
# it away from the small counters that jax.random.split uses on the train key.
_TEST_KEY_SALT = 0x7E57_DA7A


class Dataset(NamedTuple):
    """A loaded data set.

    Attributes:
      name: registry name.
      train: ``(n_train, d)`` float32 NumPy array.
      test: ``(n_test, d)`` float32 NumPy array, drawn independently of train.
      discrete_levels: ``K`` when the data are integers in ``{0..K-1}`` (17
        for digits; dequantize before fitting a density), else None.
      centers: ``(K, d)`` float32 mode centres for mixture data sets (ring8,
        grid25), else None.
      std: per-coordinate std of each mixture component, else None.
      log_prob: the data-generating log-density (toys that have one), else None.
      source: where a user's data came from (``genlearn.data.from_array`` /
        ``load_file``: path, size, sha256, split), recorded by ``genlearn.runs``
        to reload it; None for the built-in sets.
    """

    name: str
    train: np.ndarray
    test: np.ndarray
    discrete_levels: int | None
    centers: np.ndarray | None
    std: float | None
    log_prob: Callable[[np.ndarray], np.ndarray] | None = None
    source: Mapping | None = None


class _Toy(NamedTuple):
    sample: Callable[..., jax.Array]
    centers: Callable[[], jax.Array] | None
    std: float | None
    log_prob: Callable[[jax.Array], jax.Array] | None = None


_RING8_STD = 0.02
_GRID25_STD = 0.02

_TOYS: Mapping[str, _Toy] = types.MappingProxyType(
    {
        "moons": _Toy(_toys.two_moons, None, None, _toys.two_moons_log_prob),
        "circles": _Toy(_toys.circles, None, None, _toys.circles_log_prob),
        "ring8": _Toy(
            lambda k, n: _toys.ring8(k, n, radius=2.0, std=_RING8_STD),
            lambda: _toys.ring8_centers(2.0),
            _RING8_STD,
            lambda x: _toys.ring8_log_prob(x, radius=2.0, std=_RING8_STD),
        ),
        "grid25": _Toy(
            lambda k, n: _toys.grid25(k, n, spacing=2.0, std=_GRID25_STD),
            lambda: _toys.grid25_centers(2.0),
            _GRID25_STD,
            lambda x: _toys.grid25_log_prob(x, spacing=2.0, std=_GRID25_STD),
        ),
        "checkerboard": _Toy(_toys.checkerboard, None, None),
        "pinwheel": _Toy(_toys.pinwheel, None, None),
        "spirals": _Toy(_toys.two_spirals, None, None),
        "swissroll": _Toy(_toys.swiss_roll, None, None),
    }
)


def _to_numpy(x: jax.Array) -> np.ndarray:
    return np.array(x, dtype=np.float32)  # writable copy, not a device view


def load_dataset(
    name: str,
    *,
    seed: int = 0,
    n_train: int | None = None,
    n_test: int | None = None,
) -> Dataset:
    """Loads a data set from the registry by name.

    Toy sets draw ``n_train`` points (default 20 000) with key
    ``jax.random.PRNGKey(seed)`` and ``n_test`` points (default 5 000) with
    the independent key ``jax.random.fold_in(PRNGKey(seed), 0x7E57DA7A)``.
    ``digits`` uses ``load_digits_split(seed, n_train)`` (default 1400 train);
    the test set is the first ``n_test`` of the remaining images (default: all
    ``1797 - n_train``).

    Args:
      name: a key of ``DATASETS``.
      seed: non-negative integer seed.
      n_train: number of training examples, >= 1, or None for the default.
      n_test: number of test examples, >= 1, or None for the default.

    Returns:
      A ``Dataset``.

    Raises:
      ValueError: for an unknown name (the message lists the available ones),
        a negative seed, non-positive sizes, or digits sizes over 1797.
    """
    if name not in DATASETS:
        raise ValueError(
            f"unknown dataset {name!r}; available datasets: "
            + ", ".join(sorted(DATASETS))
        )
    seed = _check_seed(seed)
    if n_train is not None:
        n_train = _check_n(n_train, "n_train")
    if n_test is not None:
        n_test = _check_n(n_test, "n_test")

    if name == "digits":
        n_tr = 1400 if n_train is None else n_train
        train, test = _digits.load_digits_split(seed=seed, n_train=n_tr)
        if n_test is not None:
            if n_test > test.shape[0]:
                raise ValueError(
                    f"digits has {_digits.DIGITS_NUM_EXAMPLES} images: with "
                    f"n_train={n_tr} at most {test.shape[0]} remain for the "
                    f"test set, got n_test={n_test}"
                )
            test = test[:n_test]
        return Dataset(name, train, test, _digits.DIGITS_LEVELS, None, None)

    toy = _TOYS[name]
    key = jax.random.PRNGKey(seed)
    test_key = jax.random.fold_in(key, _TEST_KEY_SALT)
    train = _to_numpy(toy.sample(key, TOY_N_TRAIN if n_train is None else n_train))
    test = _to_numpy(toy.sample(test_key, TOY_N_TEST if n_test is None else n_test))
    centers = None if toy.centers is None else _to_numpy(toy.centers())
    log_prob = None if toy.log_prob is None else _numpy_log_prob(toy.log_prob)
    return Dataset(name, train, test, None, centers, toy.std, log_prob)


def _numpy_log_prob(fn: Callable[[jax.Array], jax.Array]) -> Callable[[np.ndarray], np.ndarray]:
    def log_prob(x) -> np.ndarray:
        """The data-generating log-density at ``x`` ``(n, 2)``, float64 NumPy ``(n,)``."""
        with jax.enable_x64(True):
            return np.asarray(fn(jnp.asarray(np.asarray(x, np.float64))), np.float64)

    return log_prob

