"""Noise-conditional networks in flax.linen: an MLP for vectors and a small U-Net for 8x8 images.

Both map ``(x, t[, label])`` to a vector of the shape of x, for a batch:
``x`` of shape ``(n, d)``, ``t`` of shape ``(n,)`` (or a scalar, broadcast),
``label`` ``(n,)`` integers in ``{0, ..., num_classes}`` where ``num_classes``
is the *null* label of classifier-free guidance (Ho & Salimans 2022): the
same network is the unconditional model when given the null label.

The time enters through a sinusoidal embedding (Vaswani et al. 2017, as in
DDPM): ``emb(t)_k = sin(1000 t w_k)``, ``cos(1000 t w_k)`` with
``w_k = 10000^(-k / (h - 1))``, then a two-layer MLP; a class embedding is
added to it. The last layer is zero-initialised, so an untrained network
outputs 0 (epsilon-prediction: the prior's score at every time).

:func:`mlp_net` and :func:`unet_net` wrap the modules as a :class:`ScoreNet`
NamedTuple of pure functions ``init(key) -> params`` and
``apply(params, x, t, label=None) -> (n, d)``.
"""

from __future__ import annotations

import math
from typing import Callable, NamedTuple, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from genlearn.nn import activation_fn

__all__ = ["ScoreNet", "sinusoidal_embedding", "ScoreMLP", "UNet", "mlp_net", "unet_net"]

Array = jax.Array


def sinusoidal_embedding(t: Array, dim: int, scale: float = 1000.0) -> Array:
    """``(n,) -> (n, dim)``: [sin(scale t w_k), cos(scale t w_k)], w_k = 10000^(-k/(dim/2 - 1))."""
    half = dim // 2
    freqs = jnp.exp(-math.log(10000.0) * jnp.arange(half, dtype=t.dtype) / max(half - 1, 1))
    arg = scale * t[:, None] * freqs[None]
    return jnp.concatenate([jnp.sin(arg), jnp.cos(arg)], -1)


class _Conditioning(nn.Module):
    """Time embedding MLP plus an optional class embedding (``num_classes + 1`` rows, the last the null label)."""

    emb_dim: int
    num_classes: int = 0
    activation: str | Callable = "silu"

    @nn.compact
    def __call__(self, t, label):
        act = activation_fn(self.activation)
        e = sinusoidal_embedding(t, self.emb_dim)
        e = nn.Dense(self.emb_dim)(act(nn.Dense(self.emb_dim)(e)))
        if self.num_classes:
            e = e + nn.Embed(self.num_classes + 1, self.emb_dim)(label)
        return e


def _batch_time(t, x):
    t = jnp.asarray(t, x.dtype)
    return jnp.broadcast_to(t, x.shape[:1]) if t.ndim == 0 else t


def _labels(label, x, num_classes):
    if not num_classes:
        return None
    if label is None:
        return jnp.full(x.shape[:1], num_classes, jnp.int32)
    label = jnp.asarray(label, jnp.int32)
    return jnp.broadcast_to(label, x.shape[:1]) if label.ndim == 0 else label


class ScoreMLP(nn.Module):
    """A residual MLP ``(x, t[, label]) -> R^d`` conditioned through a time (and class) embedding.

    Each block is h <- h + W2 act(W1 act(h) + V emb); widths follow ``hidden``
    (a linear projection where the width changes).
    """

    dim: int
    hidden: Sequence[int] = (256, 256, 256)
    emb_dim: int = 64
    num_classes: int = 0
    activation: str | Callable = "silu"
    input_freqs: int = 0

    @nn.compact
    def __call__(self, x, t, label=None):
        act = activation_fn(self.activation)
        e = _Conditioning(self.emb_dim, self.num_classes, self.activation)(_batch_time(t, x),
                                                                          _labels(label, x, self.num_classes))
        if self.input_freqs:  # positional encoding sin/cos(2^k pi x / 4): sharp scores need high frequencies
            freqs = (2.0 ** jnp.arange(self.input_freqs, dtype=x.dtype)) * (jnp.pi / 4)
            arg = (x[..., None] * freqs).reshape(x.shape[0], -1)
            x = jnp.concatenate([x, jnp.sin(arg), jnp.cos(arg)], -1)
        h = nn.Dense(self.hidden[0])(x)
        for width in self.hidden:
            if h.shape[-1] != width:
                h = nn.Dense(width)(h)
            r = nn.Dense(width)(act(h)) + nn.Dense(width)(act(e))
            h = h + nn.Dense(width)(act(r))
        return nn.Dense(self.dim, kernel_init=nn.initializers.zeros, bias_init=nn.initializers.zeros)(act(h))


def _groups(channels: int) -> int:
    return math.gcd(channels, 8)


class _ResBlock(nn.Module):
    channels: int
    activation: str | Callable = "silu"

    @nn.compact
    def __call__(self, h, e):
        act = activation_fn(self.activation)
        r = nn.Conv(self.channels, (3, 3))(act(nn.GroupNorm(_groups(h.shape[-1]))(h)))
        # scale-shift conditioning after the norm (Nichol & Dhariwal 2021): a bias added before a GroupNorm
        # would be removed by it whenever a group is one channel
        scale, shift = jnp.split(nn.Dense(2 * self.channels)(act(e))[:, None, None, :], 2, -1)
        r = nn.GroupNorm(_groups(self.channels))(r) * (1.0 + scale) + shift
        r = nn.Conv(self.channels, (3, 3))(act(r))
        if h.shape[-1] != self.channels:
            h = nn.Conv(self.channels, (1, 1))(h)
        return h + r


class UNet(nn.Module):
    """A small U-Net for single-channel images given as flat vectors ``(n, H * W)``.

    Two resolutions below the input (H x W -> H/2 -> H/4), one residual block
    per level on the way down and up with skip connections, two in the
    middle; ``channels`` at full resolution and ``2 channels`` below. H and W
    must be divisible by 4.
    """

    image_shape: tuple[int, int] = (8, 8)
    channels: int = 32
    emb_dim: int = 64
    num_classes: int = 0
    activation: str | Callable = "silu"

    @nn.compact
    def __call__(self, x, t, label=None):
        height, width = self.image_shape
        c = self.channels
        e = _Conditioning(self.emb_dim, self.num_classes, self.activation)(_batch_time(t, x),
                                                                          _labels(label, x, self.num_classes))
        h = x.reshape(x.shape[0], height, width, 1)
        h0 = nn.Conv(c, (3, 3))(h)
        h1 = _ResBlock(c, self.activation)(h0, e)
        h2 = _ResBlock(2 * c, self.activation)(nn.Conv(2 * c, (3, 3), strides=(2, 2))(h1), e)
        m = nn.Conv(2 * c, (3, 3), strides=(2, 2))(h2)
        m = _ResBlock(2 * c, self.activation)(m, e)
        m = _ResBlock(2 * c, self.activation)(m, e)
        u = jax.image.resize(m, (m.shape[0], height // 2, width // 2, m.shape[-1]), "nearest")
        u = _ResBlock(2 * c, self.activation)(jnp.concatenate([u, h2], -1), e)
        u = jax.image.resize(u, (u.shape[0], height, width, u.shape[-1]), "nearest")
        u = _ResBlock(c, self.activation)(jnp.concatenate([u, h1], -1), e)
        act = activation_fn(self.activation)
        out = nn.Conv(1, (3, 3), kernel_init=nn.initializers.zeros, bias_init=nn.initializers.zeros)(
            act(nn.GroupNorm(_groups(c))(u)))
        return out.reshape(x.shape[0], height * width)


class ScoreNet(NamedTuple):
    """A noise-conditional network as pure functions.

    Attributes:
      init: ``init(key) -> params``.
      apply: ``apply(params, x, t, label=None) -> (n, d)`` for ``x`` of shape
        ``(n, d)``, ``t`` scalar or ``(n,)``, ``label`` None (the null label)
        or ``(n,)`` / scalar integers in ``[0, num_classes]``.
      dim: d.
      num_classes: 0 for an unconditional network.
      kind: "mlp" or "unet".
    """

    init: Callable
    apply: Callable
    dim: int
    num_classes: int
    kind: str


def _check_int(value, minimum: int, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{what} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _wrap(module: nn.Module, dim: int, num_classes: int, kind: str, check: Callable) -> ScoreNet:
    def init(key):
        return module.init(key, jnp.zeros((1, dim)), jnp.zeros((1,)),
                           jnp.zeros((1,), jnp.int32) if num_classes else None)

    def apply(params, x, t, label=None):
        check(x)
        if label is not None and not num_classes:
            raise ValueError("labels were given to an unconditional network (num_classes=0)")
        return module.apply(params, x, t, label)

    return ScoreNet(init, apply, dim, num_classes, kind)


def mlp_net(dim: int, hidden: Sequence[int] = (256, 256, 256), *, emb_dim: int = 64, num_classes: int = 0,
            activation: str | Callable = "silu", input_freqs: int = 0) -> ScoreNet:
    """A :class:`ScoreMLP` for vectors of dimension ``dim`` (``hidden`` widths, one residual block each).

    ``input_freqs`` > 0 appends sin / cos(2^k pi x / 4), k < input_freqs, to the input (a positional
    encoding, Tancik et al. 2020): the score of sharp modes is a high-frequency function of x.
    """
    input_freqs = _check_int(input_freqs, 0, "mlp_net: input_freqs")
    dim = _check_int(dim, 1, "mlp_net: dim")
    num_classes = _check_int(num_classes, 0, "mlp_net: num_classes")
    hidden = tuple(_check_int(w, 1, "mlp_net: hidden width") for w in hidden)
    if not hidden:
        raise ValueError("mlp_net: hidden needs at least one width")
    emb_dim = _check_int(emb_dim, 2, "mlp_net: emb_dim")

    def check(x):
        if x.ndim != 2 or x.shape[1] != dim:
            raise ValueError(f"mlp_net: expected a batch of shape (n, {dim}), got {tuple(x.shape)}")

    return _wrap(ScoreMLP(dim, hidden, emb_dim, num_classes, activation, input_freqs), dim, num_classes, "mlp", check)


def unet_net(image_shape: tuple[int, int] = (8, 8), channels: int = 32, *, emb_dim: int = 64, num_classes: int = 0,
             activation: str | Callable = "silu") -> ScoreNet:
    """A :class:`UNet` for single-channel ``image_shape`` images as flat ``(n, H * W)`` batches.

    Raises ValueError for image sides not divisible by 4 and, when applied, for
    inputs that are not ``(n, H * W)`` or ``(n, H, W)`` images of this shape.
    """
    if len(tuple(image_shape)) != 2:
        raise ValueError(f"unet_net: image_shape must be (height, width), got {image_shape!r}")
    height, width = (_check_int(s, 4, "unet_net: image side") for s in image_shape)
    if height % 4 or width % 4:
        raise ValueError(f"unet_net: image sides must be divisible by 4 (two 2x downsamplings), got {image_shape}")
    channels = _check_int(channels, 1, "unet_net: channels")
    num_classes = _check_int(num_classes, 0, "unet_net: num_classes")
    dim = height * width
    module = UNet((height, width), channels, _check_int(emb_dim, 2, "unet_net: emb_dim"), num_classes, activation)

    def check(x):
        if x.ndim != 2 or x.shape[1] != dim:
            raise ValueError(f"unet_net: expected images of shape {height}x{width} as a batch (n, {dim}), "
                             f"got an array of shape {tuple(x.shape)}")

    net = _wrap(module, dim, num_classes, "unet", check)

    def apply(params, x, t, label=None):  # (n, H, W) images are flattened here; anything else is refused
        if x.ndim == 3:
            if tuple(x.shape[1:]) != (height, width):
                raise ValueError(f"unet_net: expected images of shape {height}x{width}, got {tuple(x.shape[1:])}")
            return net.apply(params, x.reshape(x.shape[0], dim), t, label).reshape(x.shape)
        return net.apply(params, x, t, label)

    return net._replace(apply=apply)
