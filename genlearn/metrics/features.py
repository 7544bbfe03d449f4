"""A small digits classifier shipped with genlearn, for FID/IS-style scores.

FID (Heusel et al. 2017) and the Inception Score (Salimans et al. 2016)
measure samples through an ImageNet Inception-v3 network. For genlearn's 8x8
digits that network is neither appropriate nor small, so genlearn ships its
own feature network: an MLP ``64 -> 128 -> 64 -> 10`` (ReLU) trained on the
training split of ``genlearn.data.load_digits_split(0)`` by
``scripts/train_feature_net.py``. Its weights live next to this module in
``digits_classifier.msgpack`` (``flax.serialization`` msgpack, no pickle;
69 kB). Test accuracy on the 397 held-out digits: 99.2% (394/397; train
100%), as printed by the script.

* features: the 64-unit penultimate activations (the "pool" layer);
* class probabilities ``p(y | x)``: softmax of the 10 logits.

**All values are in this feature space, not Inception's**: a ``digits_fid``
is not comparable with an FID from any other network, and the maximal
inception score here is 10 (the number of digit classes).

Inputs are digits on the data's pixel scale ``[0, 16]`` (the network sees
``x / 16``); dequantized samples in ``[0, 17)`` are fine.

    IS = exp( E_x KL( p(y | x) || p(y) ) ),   p(y) = E_x p(y | x)

(Salimans et al. 2016), between 1 (every sample gets the same class
distribution, or each is uniform over classes) and 10 (confident and
balanced).
"""

from __future__ import annotations

import os
from typing import Any, Callable, NamedTuple

import flax.linen as nn
import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np

from genlearn.metrics._checks import as_int, as_pair, as_samples
from genlearn.metrics.frechet import frechet_distance

__all__ = [
    "DIGITS_WEIGHTS_PATH",
    "DIGITS_FEATURE_DIM",
    "DigitsClassifier",
    "FeatureNet",
    "digits_classifier_init",
    "load_digits_feature_net",
    "digits_features",
    "inception_score",
    "feature_frechet_distance",
    "digits_fid",
]

DIGITS_WEIGHTS_PATH = os.path.join(os.path.dirname(__file__), "digits_classifier.msgpack")
"""Where the shipped weights live (package data)."""

DIGITS_FEATURE_DIM = 64
_INPUT_SCALE = 16.0


class DigitsClassifier(nn.Module):
    """MLP ``64 -> 128 -> 64 -> 10``; ``__call__`` returns ``(features (n, 64), logits (n, 10))``."""

    @nn.compact
    def __call__(self, x):
        h = nn.relu(nn.Dense(128, name="dense0")(x))
        feats = nn.relu(nn.Dense(DIGITS_FEATURE_DIM, name="dense1")(h))
        return feats, nn.Dense(10, name="logits")(feats)


def digits_classifier_init(key: jax.Array) -> Any:
    """Fresh parameters of :class:`DigitsClassifier` (what the training script starts from)."""
    return DigitsClassifier().init(key, jnp.zeros((1, 64), jnp.float32))


def _params_template() -> Any:
    # The structure from_bytes restores into, without running flax's init.
    layers = {"dense0": (64, 128), "dense1": (128, DIGITS_FEATURE_DIM), "logits": (DIGITS_FEATURE_DIM, 10)}
    return {"params": {name: {"kernel": np.zeros(shape, np.float32), "bias": np.zeros(shape[1], np.float32)}
                       for name, shape in layers.items()}}


class FeatureNet(NamedTuple):
    """A feature network as pure functions of a fixed parameter pytree.

    Attributes:
      params: the network's parameters.
      features: ``x (n, d_in) -> (n, d_feat)`` (raw data scale in).
      probs: ``x (n, d_in) -> (n, C)`` class probabilities.
      input_dim: ``d_in``.
    """

    params: Any
    features: Callable[[jax.Array], jax.Array]
    probs: Callable[[jax.Array], jax.Array]
    input_dim: int


def _make_net(params: Any) -> FeatureNet:
    module = DigitsClassifier()

    @jax.jit
    def features(x):
        return module.apply(params, x / _INPUT_SCALE)[0]

    @jax.jit
    def probs(x):
        return jax.nn.softmax(module.apply(params, x / _INPUT_SCALE)[1], axis=-1)

    return FeatureNet(params, features, probs, 64)


def load_digits_feature_net(path: str | None = None) -> FeatureNet:
    """Loads the shipped digits classifier (``flax.serialization.from_bytes``; no pickle).

    Args:
      path: msgpack file; the packaged ``DIGITS_WEIGHTS_PATH`` when None.

    Returns:
      :class:`FeatureNet` on float32 inputs of shape ``(n, 64)`` in ``[0, 16]``.

    Raises:
      FileNotFoundError: if the weights file is missing (run
        ``python scripts/train_feature_net.py``).
    """
    path = DIGITS_WEIGHTS_PATH if path is None else path
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"digits feature-net weights not found at {path}; "
            "produce them with `python scripts/train_feature_net.py`"
        )
    with open(path, "rb") as fh:
        params = flax.serialization.from_bytes(_params_template(), fh.read())
    params = jax.tree_util.tree_map(jnp.asarray, params)
    return _make_net(params)


_DEFAULT_NET: list[FeatureNet] = []


def _net(feature_net: FeatureNet | None) -> FeatureNet:
    if feature_net is not None:
        return feature_net
    if not _DEFAULT_NET:
        _DEFAULT_NET.append(load_digits_feature_net())
    return _DEFAULT_NET[0]


def _batched(fn, x: np.ndarray, batch: int = 4096) -> np.ndarray:
    return np.concatenate([np.asarray(fn(jnp.asarray(x[i:i + batch], jnp.float32)))
                           for i in range(0, x.shape[0], batch)])


def digits_features(samples: Any, feature_net: FeatureNet | None = None) -> np.ndarray:
    """Penultimate-layer features ``(n, 64)`` (float64 NumPy) of digit samples ``(n, 64)``."""
    net = _net(feature_net)
    x = as_samples(samples, "samples", min_n=1)
    if x.shape[1] != net.input_dim:
        raise ValueError(f"samples: expected shape (n, {net.input_dim}), got {x.shape}")
    return _batched(net.features, x).astype(np.float64)


def inception_score(samples: Any, feature_net: FeatureNet | None = None, *, num_splits: int = 1) -> float:
    """Inception-style score ``exp(E_x KL(p(y|x) || p(y)))`` in the digits classifier.

    With ``num_splits > 1`` the samples are cut into that many equal parts and
    the mean of the per-part scores is returned (Salimans et al.'s protocol
    uses 10 splits of 5,000).

    Args:
      samples: ``(n, 64)`` digits on the pixel scale ``[0, 16]``, ``n >= 2``.
      feature_net: defaults to the shipped digits classifier.
      num_splits: ``>= 1``, at most ``n``.

    Returns:
      IS in ``[1, 10]`` (feature space of genlearn's classifier, not Inception).
    """
    net = _net(feature_net)
    x = as_samples(samples, "samples")
    if x.shape[1] != net.input_dim:
        raise ValueError(f"samples: expected shape (n, {net.input_dim}), got {x.shape}")
    num_splits = as_int(num_splits, "num_splits")
    if num_splits > x.shape[0]:
        raise ValueError(f"num_splits = {num_splits} exceeds the number of samples {x.shape[0]}")
    p = np.clip(_batched(net.probs, x).astype(np.float64), 1e-12, 1.0)
    p /= p.sum(axis=1, keepdims=True)
    scores = []
    for part in np.array_split(p, num_splits):
        py = part.mean(axis=0)
        kl = np.sum(part * (np.log(part) - np.log(py)[None]), axis=1)
        scores.append(np.exp(kl.mean()))
    return float(np.mean(scores))


def feature_frechet_distance(x: Any, y: Any, feature_fn: Callable[[Any], np.ndarray]) -> float:
    """:func:`frechet_distance` between ``feature_fn(x)`` and ``feature_fn(y)``."""
    x, y = as_pair(x, y)
    return frechet_distance(feature_fn(x), feature_fn(y))


def digits_fid(samples: Any, reference: Any, feature_net: FeatureNet | None = None) -> float:
    """FID-style Frechet distance in the shipped digits classifier's 64-d feature space.

    Not comparable with Inception-based FID values (module docstring).

    Args:
      samples: ``(n, 64)``; reference: ``(m, 64)``; both on the pixel scale.
      feature_net: defaults to the shipped classifier.
    """
    net = _net(feature_net)
    return feature_frechet_distance(samples, reference, lambda a: digits_features(a, net))
