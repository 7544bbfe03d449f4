"""flax.linen networks used as conditioners, critics, energies and generators."""

from __future__ import annotations

from typing import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

__all__ = ["MLP", "activation_fn", "ACTIVATIONS"]

ACTIVATIONS: dict[str, Callable] = {
    "relu": nn.relu,
    "gelu": nn.gelu,
    "tanh": jnp.tanh,
    "silu": nn.silu,
    "elu": nn.elu,
    "leaky_relu": nn.leaky_relu,
}


def activation_fn(name: str | Callable) -> Callable:
    """Looks an activation up by name (or returns a callable unchanged)."""
    if callable(name):
        return name
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; choose one of {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[name]


HIDDEN_INITS = ("lecun", "uniform")


def check_hidden_init(value: str, where: str) -> str:
    """Validates a ``hidden_init`` name ("lecun" or "uniform"); ``where`` prefixes the error."""
    if value not in HIDDEN_INITS:
        raise ValueError(f"{where}: hidden_init must be 'lecun' or 'uniform', got {value!r}")
    return value


def _fan_in_uniform(fan_in: int) -> Callable:
    bound = 1.0 / float(max(fan_in, 1)) ** 0.5

    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


class MLP(nn.Module):
    """A multilayer perceptron ``R^in -> R^out``.

    Attributes:
      hidden: widths of the hidden layers.
      out: output width.
      activation: a callable or a name from :data:`ACTIVATIONS`.
      zero_init_last: zero the last layer's kernel and bias, so that a coupling
        layer built on it starts at the identity map.
      last_init_scale: with ``zero_init_last``, > 0 draws the last kernel from
        N(0, last_init_scale^2) instead (the bias stays zero): the layer starts near,
        not at, zero, which breaks the symmetric saddle of :func:`genlearn.flows.nice`.
      hidden_init: "lecun" (flax's default: lecun-normal kernels, zero biases) or
        "uniform" (PyTorch's and Equinox's default: kernels and biases drawn from
        U(-1/sqrt(fan_in), 1/sqrt(fan_in))) for the hidden layers.
      residual: skip connections: each hidden layer after the first whose width equals
        its input's adds its input, h -> h + act(W h + b) (the same parameters and
        initialisation; a residual conditioner).
    """

    hidden: Sequence[int]
    out: int
    activation: str | Callable = "relu"
    zero_init_last: bool = False
    hidden_init: str = "lecun"
    last_init_scale: float = 0.0
    residual: bool = False

    @nn.compact
    def __call__(self, x):
        act = activation_fn(self.activation)
        check_hidden_init(self.hidden_init, "MLP")
        for i, width in enumerate(self.hidden):
            if self.hidden_init == "uniform":
                init = _fan_in_uniform(x.shape[-1])
                y = act(nn.Dense(width, kernel_init=init, bias_init=init)(x))
            else:
                y = act(nn.Dense(width)(x))
            x = x + y if self.residual and i > 0 and x.shape[-1] == width else y
        if self.zero_init_last:
            kernel = nn.initializers.normal(self.last_init_scale) if self.last_init_scale > 0 else nn.initializers.zeros
            last = nn.Dense(self.out, kernel_init=kernel, bias_init=nn.initializers.zeros)
        else:
            last = nn.Dense(self.out)
        return last(x)
