"""MADE: masked autoencoder for distribution estimation (Germain et al. 2015).

A dense network R^d -> R^{d x m} whose weight matrices are multiplied by
binary masks so that output row i depends only on the inputs that come
*before* i in an autoregressive order. With degrees

    m(input j)  = position of j in the order, in {1, ..., d},
    m(hidden k) = (k mod (d - 1)) + 1,            in {1, ..., d - 1},

a connection u -> v is kept when m(v) >= m(u) (input->hidden, hidden->hidden)
and output row i keeps hidden unit k when m(i) > m(k). The Jacobian of every
output column with respect to the inputs is then strictly lower triangular in
the chosen order, so one pass gives all d conditionals (lecture:
"autoregressive flows"). Hidden degrees are assigned cyclically rather than
sampled, so no unit is dead as long as every hidden width is >= d.

A context vector c (conditional flows) feeds every hidden layer and the
output layer through unmasked dense maps: c may influence every output,
including the first variable's, which has no predecessors.

With ``direct=True`` a masked linear map from the inputs adds to the outputs
(output row i sees input j when m(i) > m(j), the same strict order), zero at
initialisation: the linear part of each conditional needs no hidden unit, so
a MAF layer can represent an exact Gaussian (a triangular linear map) from its
first steps. Germain et al. (2015) discuss these direct input-to-output
connections; benchmarks/results/flow_ablation.md measures what they do.
"""

from __future__ import annotations

import functools
from typing import Callable, Sequence

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from genlearn.core.bijectors import _check_dim
from genlearn.nn import _fan_in_uniform, activation_fn, check_hidden_init

__all__ = ["MADE", "made", "made_masks", "autoregressive_order"]


def autoregressive_order(dim: int, order="natural", seed: int = 0) -> tuple[int, ...]:
    """The variables listed in generation order: ``order[0]`` depends on nothing.

    Args:
      dim: number of variables.
      order: "natural" (0, ..., d-1), "reversed", "random" (a permutation drawn
        from ``seed`` with numpy: it is static structure, not a parameter), or
        an explicit permutation of range(dim).
    """
    if isinstance(order, str):
        if order == "natural":
            return tuple(range(dim))
        if order == "reversed":
            return tuple(range(dim - 1, -1, -1))
        if order == "random":
            return tuple(int(i) for i in np.random.default_rng(seed).permutation(dim))
        raise ValueError(f"unknown order {order!r}; use 'natural', 'reversed', 'random' or a permutation")
    perm = np.asarray(order)
    if perm.shape != (dim,) or not np.array_equal(np.sort(perm), np.arange(dim)):
        raise ValueError(f"order must be a permutation of range({dim}), got {order!r}")
    return tuple(int(i) for i in perm)


@functools.lru_cache(maxsize=128)
def made_masks(order: tuple[int, ...], hidden: tuple[int, ...], num_outputs: int) -> tuple[np.ndarray, ...]:
    """MADE's binary masks, one (fan_in, fan_out) float32 array per dense layer.

    The output layer has ``dim * num_outputs`` units laid out as (dim, num_outputs)
    row-major: unit ``i * num_outputs + j`` is output j of variable i.
    """
    dim = len(order)
    in_deg = np.empty(dim, np.int64)
    in_deg[np.asarray(order)] = np.arange(1, dim + 1)
    masks, prev = [], in_deg
    for width in hidden:
        deg = np.arange(width) % max(dim - 1, 1) + 1
        masks.append((deg[None, :] >= prev[:, None]).astype(np.float32))
        prev = deg
    out_deg = np.repeat(in_deg, num_outputs)
    masks.append((out_deg[None, :] > prev[:, None]).astype(np.float32))
    return tuple(masks)


class _MaskedDense(nn.Module):
    """Dense layer y = x (W * M) + b with a fixed binary mask M (not a parameter)."""

    mask: Callable[[], np.ndarray]  # a thunk: numpy arrays are not hashable module fields
    zero_init: bool = False
    uniform_init: bool = False  # U(+-1/sqrt(fan_in)) kernel and bias (PyTorch's, Equinox's default)

    @nn.compact
    def __call__(self, x):
        m = self.mask()
        if self.zero_init:
            init = bias_init = nn.initializers.zeros
        elif self.uniform_init:
            init = bias_init = _fan_in_uniform(m.shape[0])
        else:
            init, bias_init = nn.initializers.lecun_normal(), nn.initializers.zeros
        w = self.param("kernel", init, m.shape, jnp.float32)
        b = self.param("bias", bias_init, (m.shape[1],), jnp.float32)
        return x @ (w.astype(x.dtype) * jnp.asarray(m, x.dtype)) + b.astype(x.dtype)


class MADE(nn.Module):
    """MADE as a flax.linen module: ``apply(params, x[, context]) -> (dim, num_outputs)``.

    Attributes:
      order: generation order (see :func:`autoregressive_order`); dim = len(order).
      hidden: hidden widths, each >= dim.
      num_outputs: outputs per variable (e.g. 2 for an affine transformer, 3K-1 for a spline).
      context_dim: size of the optional context vector (0: none).
      activation: hidden activation (name or callable).
      zero_init_last: zero the output layer, so a flow layer built on MADE starts at the identity.
      hidden_init: "uniform" (kernels and biases from U(+-1/sqrt(fan_in)), as PyTorch and
        Equinox; nonzero biases spread the ReLU kinks) or "lecun" (flax's default, zero biases).
      direct: add masked linear input-to-output connections (params ``"direct"``, zero at init).

    Works on one example x of shape (dim,) or a batch (..., dim).
    """

    order: tuple[int, ...]
    hidden: tuple[int, ...]
    num_outputs: int = 1
    context_dim: int = 0
    activation: str | Callable = "relu"
    zero_init_last: bool = True
    hidden_init: str = "uniform"
    direct: bool = False

    @nn.compact
    def __call__(self, x, context=None):
        dim = len(self.order)
        if x.shape[-1] != dim:
            raise ValueError(f"MADE: input must have last axis {dim}, got shape {tuple(x.shape)}")
        if self.context_dim:
            if context is None or context.shape[-1] != self.context_dim:
                raise ValueError(
                    f"MADE: needs a context with last axis {self.context_dim}, got "
                    f"{None if context is None else tuple(context.shape)}"
                )
        elif context is not None:
            raise ValueError("MADE: context_dim=0 but a context was given")
        check_hidden_init(self.hidden_init, "MADE")
        act = activation_fn(self.activation)
        masks = made_masks(tuple(self.order), tuple(self.hidden), int(self.num_outputs))
        h = x
        for i, width in enumerate(self.hidden):
            h = _MaskedDense(functools.partial(_pick, masks, i), uniform_init=self.hidden_init == "uniform",
                             name=f"masked_{i}")(h)
            if self.context_dim:
                h = h + nn.Dense(width, use_bias=False, name=f"context_{i}")(context.astype(h.dtype))
            h = act(h)
        out = _MaskedDense(functools.partial(_pick, masks, len(self.hidden)), zero_init=self.zero_init_last,
                           name="masked_out")(h)
        if self.direct:
            mask = made_masks(tuple(self.order), (), int(self.num_outputs))[0]  # no hidden layer: input -> output
            w = self.param("direct", nn.initializers.zeros, mask.shape, jnp.float32)
            out = out + x @ (w.astype(x.dtype) * jnp.asarray(mask, x.dtype))
        if self.context_dim:
            # the first variable has no predecessors: only a direct path lets the context reach it
            out = out + nn.Dense(out.shape[-1], use_bias=False, name="context_out",
                                 kernel_init=nn.initializers.zeros if self.zero_init_last
                                 else nn.initializers.lecun_normal())(context.astype(out.dtype))
        return out.reshape(out.shape[:-1] + (dim, self.num_outputs))


def _pick(masks, i):
    return masks[i]


def made(
    dim: int,
    hidden: Sequence[int] = (128, 128),
    num_outputs: int = 1,
    *,
    order="natural",
    seed: int = 0,
    context_dim: int = 0,
    activation: str | Callable = "relu",
    zero_init_last: bool = True,
    hidden_init: str = "uniform",
    direct: bool = False,
) -> MADE:
    """Builds a :class:`MADE` with validated hyperparameters.

    Args:
      dim: number of variables, >= 2.
      hidden: one or more hidden widths, each >= dim (narrower layers would
        leave degrees unrepresented, so some outputs could not see all their
        predecessors).
      num_outputs: outputs per variable, >= 1.
      order: "natural", "reversed", "random" (drawn from ``seed``) or a permutation.
      context_dim: >= 0; the context enters every hidden layer unmasked.
      activation: hidden activation.
      zero_init_last: zero-initialise the output layer.
      hidden_init: "uniform" or "lecun", the hidden layers' initialisation (see :class:`MADE`).
      direct: masked linear input-to-output connections, zero at init (see :class:`MADE`).

    Returns the flax module; ``module.init(key, x[, context])`` gives its params.
    """
    dim = _check_dim(dim, 2, "made: dim")
    context_dim = _check_dim(context_dim, 0, "made: context_dim")
    num_outputs = _check_dim(num_outputs, 1, "made: num_outputs")
    if isinstance(hidden, (int, np.integer)):
        hidden = (int(hidden),)
    hidden = tuple(hidden)
    if not hidden or any(not isinstance(w, (int, np.integer)) or isinstance(w, bool) for w in hidden):
        raise ValueError(f"made: hidden must be a non-empty sequence of integer widths, got {hidden!r}")
    if any(w < dim for w in hidden):
        raise ValueError(
            f"made: every hidden width must be >= the input dimension {dim} so each autoregressive "
            f"degree has units (no dead outputs), got hidden={hidden}"
        )
    activation_fn(activation)  # validates the name now rather than at first call
    check_hidden_init(hidden_init, "made")
    if not isinstance(direct, (bool, np.bool_)):
        raise ValueError(f"made: direct must be True or False, got {direct!r}")
    return MADE(order=autoregressive_order(dim, order, seed), hidden=tuple(int(w) for w in hidden),
                num_outputs=num_outputs, context_dim=context_dim, activation=activation,
                zero_init_last=zero_init_last, hidden_init=hidden_init, direct=bool(direct))
