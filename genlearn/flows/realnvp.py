"""RealNVP: affine coupling layers (Dinh, Sohl-Dickstein & Bengio 2017)."""

from __future__ import annotations

from typing import Callable

from genlearn.core.bijectors import _check_dim, chain
from genlearn.core.distributions import Distribution, make_base
from genlearn.core.flow import Flow, make_flow
from genlearn.flows._common import alternating_masks, check_hidden, check_layers
from genlearn.flows.coupling import affine, coupling

__all__ = ["realnvp"]


def realnvp(
    dim: int,
    num_layers: int = 8,
    hidden: tuple[int, ...] = (128, 128),
    *,
    max_log_scale: float = 5.0,
    base: str | Distribution = "normal",
    mask: str = "half",
    activation: str | Callable = "relu",
    context_dim: int = 0,
) -> Flow:
    """RealNVP flow: ``num_layers`` affine couplings x_t = z_t * exp(u(z_c)) + v(z_c).

    log|det| = sum u per layer; u is soft-clamped to (-max_log_scale,
    max_log_scale). The roles of the two subsets alternate between layers so
    every coordinate is transformed. Each layer starts at the identity.

    Args:
      dim: data dimension, >= 2.
      num_layers: number of coupling layers, >= 1.
      hidden: hidden widths of each coupling's MLP conditioner.
      max_log_scale: bound B on each layer's log-scale.
      base: "normal", "diag_gaussian", "logistic", or a Distribution.
      mask: "half" (contiguous halves) or "parity" (even/odd coordinates).
      activation: conditioner activation.
      context_dim: > 0 for a conditional flow p(x | c): every conditioner also reads c.
    """
    dim = _check_dim(dim, 2, "realnvp: dim")
    num_layers = check_layers(num_layers)
    hidden = check_hidden(hidden)
    transformer = affine(max_log_scale)
    layers = [
        coupling(dim, transformer, mask=m, hidden=hidden, activation=activation, context_dim=context_dim)
        for m in alternating_masks(dim, num_layers, mask)
    ]
    return make_flow(make_base(base, dim), chain(*layers))
