"""A diffusion model: an SDE, a noise-conditional network and what the network's output means.

With x_t = m x_0 + s eps (m = m(t), s = s(t) of the SDE), the network output
``u = net(c_in x_t, t[, label])`` (input scaled by c_in = 1/sqrt(m^2 + s^2),
so that x_t has about unit variance for unit-variance data at every t,
which matters for the VE SDE) is read as

* ``"eps"``:   eps_hat = u                                  (Ho et al. 2020);
* ``"v"``:     v_hat = u with v = m eps - s x_0 (Salimans & Ho 2022), so
  eps_hat = (m v_hat + s x_t) / (m^2 + s^2);
* ``"score"``: the score itself, grad log p_t(x_t) ~ u, so eps_hat = -s u.

Every sampler and likelihood uses the derived quantities
``score = -eps_hat / s`` and the denoised mean (Tweedie)
``x0_hat = (x_t - s eps_hat) / m``.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

from genlearn.diffusion.nets import ScoreNet
from genlearn.diffusion.sde import SDE, _rows

__all__ = ["Diffusion", "diffusion_model", "PARAMETERIZATIONS", "eps_fn"]

Array = jax.Array
PARAMETERIZATIONS = ("eps", "v", "score")


class Diffusion(NamedTuple):
    """A score model (module docstring). Functions take batches ``x (n, d)``, ``t`` scalar or ``(n,)``.

    Attributes:
      sde: the forward SDE.
      net: the network (`genlearn.diffusion.nets`).
      parameterization: "eps", "v" or "score".
      init: ``init(key) -> params``.
      eps: ``eps(params, x, t, label=None) -> eps_hat``.
      score: ``score(params, x, t, label=None) -> -eps_hat / s(t)``.
      denoise: ``denoise(params, x, t, label=None) -> x0_hat``.
      dim, num_classes: the data dimension; 0 for an unconditional model.
    """

    sde: SDE
    net: ScoreNet
    parameterization: str
    init: Callable
    eps: Callable
    score: Callable
    denoise: Callable
    dim: int
    num_classes: int


def diffusion_model(sde: SDE, net: ScoreNet, parameterization: str = "eps") -> Diffusion:
    """A :class:`Diffusion` of ``sde`` and ``net`` with the given output parameterisation."""
    if parameterization not in PARAMETERIZATIONS:
        raise ValueError(f"parameterization must be one of {PARAMETERIZATIONS}, got {parameterization!r}")

    def eps(params, x, t, label=None):
        t = jnp.asarray(t, x.dtype)
        m, s = _rows(sde.mean_coeff(t), x), _rows(sde.std(t), x)
        u = net.apply(params, x / jnp.sqrt(m**2 + s**2), t, label)
        if parameterization == "eps":
            return u
        if parameterization == "v":
            return (m * u + s * x) / (m**2 + s**2)
        return -s * u

    def score(params, x, t, label=None):
        return -eps(params, x, t, label) / _rows(sde.std(jnp.asarray(t, x.dtype)), x)

    def denoise(params, x, t, label=None):
        t = jnp.asarray(t, x.dtype)
        return (x - _rows(sde.std(t), x) * eps(params, x, t, label)) / _rows(sde.mean_coeff(t), x)

    return Diffusion(sde, net, parameterization, net.init, eps, score, denoise, net.dim, net.num_classes)


def eps_fn(model: Diffusion, params, label=None, guidance: float | None = None) -> Callable[[Array, Array], Array]:
    """``(x, t[, label]) -> eps_hat`` for a sampler, with classifier-free guidance.

    With a guidance scale w: eps = (1 + w) eps(x, t, label) - w eps(x, t, null)
    (Ho & Salimans 2022; w = 0 is the conditional model). ``label`` None on a
    conditional model is its unconditional (null-label) model.

    Raises:
      ValueError: a guidance scale for an unconditional model (``num_classes``
        0), a guidance scale without labels, or labels for an unconditional model.
    """
    if guidance is not None:
        if not model.num_classes:
            raise ValueError("a guidance scale was given for an unconditional model (num_classes=0); "
                             "classifier-free guidance needs a class-conditional model")
        if label is None:
            raise ValueError("classifier-free guidance needs class labels to guide towards")
        w = float(guidance)
        if not w == w or abs(w) == float("inf"):
            raise ValueError(f"guidance scale must be finite, got {guidance!r}")
    if label is not None and not model.num_classes:
        raise ValueError("labels were given to an unconditional model (num_classes=0)")

    def fn(x, t, label=label):
        out = model.eps(params, x, t, label)
        if guidance is None or w == 0.0:
            return out
        return (1.0 + w) * out - w * model.eps(params, x, t, None)

    return fn
