"""Encoder and decoder networks of a VAE, in flax.linen.

All modules act on batches. An **encoder** maps ``x`` of shape ``(n, dim)``
to features ``h`` of shape ``(n, F)``; the VAE puts its posterior heads
(mu, log sigma) on top of ``h`` and hands ``h`` to a flow posterior as its
context. A **decoder** maps ``z`` of shape ``(..., latent_dim)`` to the raw
likelihood parameters of shape ``(..., dim, P)``
(:class:`~genlearn.vae.likelihoods.Likelihood`); its ``dim`` and
``params_per_dim`` are filled in by :func:`genlearn.vae.vae` with
``module.clone(...)``, so a user writes ``MLPDecoder(hidden=(256, 256))``.

* :class:`MLPEncoder` / :class:`MLPDecoder`: dense layers (no hidden layer:
  the identity encoder and a linear decoder, the linear-Gaussian model).
* :class:`ConvEncoder` / :class:`ConvDecoder`: small convolutional networks
  for images stored as flat rows of ``H * W * C`` values (8x8 digits:
  ``image_shape=(8, 8, 1)``). The encoder has a 3x3 convolution and a strided
  3x3 convolution (H/2 x W/2), then a dense layer; the decoder mirrors it
  with a transposed strided convolution. A row whose length is not
  ``H * W * C``, or an odd H or W, is a ValueError naming the shapes.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import flax.linen as nn

from genlearn.nn import MLP, activation_fn

__all__ = ["MLPEncoder", "MLPDecoder", "ConvEncoder", "ConvDecoder", "check_image_shape"]


def check_image_shape(image_shape, dim: int | None = None, what: str = "image_shape") -> tuple[int, int, int]:
    """``(H, W, C)`` with even H, W >= 2 and C >= 1 (``(H, W)`` means C = 1); ``H * W * C`` must equal ``dim``."""
    shape = tuple(int(s) for s in image_shape)
    if len(shape) == 2:
        shape = shape + (1,)
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"{what} must be (height, width) or (height, width, channels) of positive sizes, "
                         f"got {tuple(image_shape)!r}")
    h, w, _ = shape
    if h % 2 or w % 2:
        raise ValueError(f"{what}: the convolutional nets halve the image, so height and width must be even, "
                         f"got {h}x{w}")
    if dim is not None and math.prod(shape) != dim:
        raise ValueError(f"{what} {shape} holds {math.prod(shape)} values but the rows have {dim}; "
                         f"images of the wrong shape for this network")
    return shape


class MLPEncoder(nn.Module):
    """``h = act(W_L ... act(W_1 x))``: features of width ``hidden[-1]`` (``hidden=()``: h = x)."""

    hidden: Sequence[int] = (256, 256)
    activation: str | Callable = "relu"

    @nn.compact
    def __call__(self, x):
        act = activation_fn(self.activation)
        for width in self.hidden:
            x = act(nn.Dense(width)(x))
        return x


class MLPDecoder(nn.Module):
    """``raw = MLP(z)`` reshaped to ``(..., dim, params_per_dim)`` (``hidden=()``: a linear map)."""

    hidden: Sequence[int] = (256, 256)
    activation: str | Callable = "relu"
    dim: int | None = None
    params_per_dim: int | None = None

    @nn.compact
    def __call__(self, z):
        if self.dim is None or self.params_per_dim is None:
            raise ValueError("MLPDecoder: dim and params_per_dim are unset (genlearn.vae.vae fills them in)")
        out = MLP(tuple(self.hidden), self.dim * self.params_per_dim, self.activation)(z)
        return out.reshape(z.shape[:-1] + (self.dim, self.params_per_dim))


class ConvEncoder(nn.Module):
    """Conv 3x3 (``channels[0]``) -> strided conv 3x3 (``channels[1]``, H/2 x W/2) -> dense ``features``."""

    image_shape: Sequence[int] = (8, 8, 1)
    channels: Sequence[int] = (32, 64)
    features: int = 256
    activation: str | Callable = "relu"

    @nn.compact
    def __call__(self, x):
        shape = check_image_shape(self.image_shape, x.shape[-1], "ConvEncoder: image_shape")
        act = activation_fn(self.activation)
        lead = x.shape[:-1]
        y = x.reshape((-1,) + shape)
        y = act(nn.Conv(self.channels[0], (3, 3))(y))
        y = act(nn.Conv(self.channels[1], (3, 3), strides=(2, 2))(y))
        y = act(nn.Dense(self.features)(y.reshape((y.shape[0], -1))))
        return y.reshape(lead + (self.features,))


class ConvDecoder(nn.Module):
    """Dense -> (H/2, W/2, ``channels[1]``) -> transposed strided conv (``channels[0]``) -> conv to C * P."""

    image_shape: Sequence[int] = (8, 8, 1)
    channels: Sequence[int] = (32, 64)
    activation: str | Callable = "relu"
    dim: int | None = None
    params_per_dim: int | None = None

    @nn.compact
    def __call__(self, z):
        if self.dim is None or self.params_per_dim is None:
            raise ValueError("ConvDecoder: dim and params_per_dim are unset (genlearn.vae.vae fills them in)")
        h, w, c = check_image_shape(self.image_shape, self.dim, "ConvDecoder: image_shape")
        act = activation_fn(self.activation)
        lead = z.shape[:-1]
        y = act(nn.Dense((h // 2) * (w // 2) * self.channels[1])(z.reshape((-1, z.shape[-1]))))
        y = y.reshape((-1, h // 2, w // 2, self.channels[1]))
        y = act(nn.ConvTranspose(self.channels[0], (3, 3), strides=(2, 2))(y))
        y = nn.Conv(c * self.params_per_dim, (3, 3))(y)
        return y.reshape(lead + (self.dim, self.params_per_dim))
