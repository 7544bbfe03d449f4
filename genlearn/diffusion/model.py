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

**A Gaussian-mixture base** (``base=``, a `genlearn.core.gaussian_mixture`):
a mixture q = sum_k w_k N(mu_k, diag(sigma_k^2)) diffused by the linear SDE
is again a mixture, q_t = sum_k w_k N(m mu_k, diag(m^2 sigma_k^2 + s^2)), so
its eps-prediction is exact in closed form (:func:`mixture_eps`). With a base
the network learns a correction to it: eps_hat = eps_q(x_t, t) + A(t) u,
where A(t) u is the part of the parameterisation's map that is linear in
the output u (1 for eps, m / (m^2 + s^2) for v, -s for score). The
network's last layer starts at zero, so the untrained model's probability
flow transports exactly q's marginals and its likelihood is q's (at
t_min): training starts from an EM fit to the data (``init(key, data)``)
and only learns what the mixture misses. The base params sit in the
params (``{"net": ..., "base": ...}``) behind a stop-gradient: nothing
trains them. On sharp mixtures the score near t = 0 is the hard part
for a network (modes 0.02 wide); the base carries it (the residual form
of the CNF's and the EBM's mixture bases, `genlearn.energy.residual_energy`).
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

from genlearn.diffusion.nets import ScoreNet
from genlearn.diffusion.sde import SDE, _rows

__all__ = ["Diffusion", "diffusion_model", "PARAMETERIZATIONS", "eps_fn", "mixture_eps"]

Array = jax.Array
PARAMETERIZATIONS = ("eps", "v", "score")


class Diffusion(NamedTuple):
    """A score model (module docstring). Functions take batches ``x (n, d)``, ``t`` scalar or ``(n,)``.

    Attributes:
      sde: the forward SDE.
      net: the network (`genlearn.diffusion.nets`).
      parameterization: "eps", "v" or "score".
      init: ``init(key, data=None) -> params``; with a base, ``data`` (rows
        in the model's space) fits it by EM (else it starts at the base's init).
      eps: ``eps(params, x, t, label=None) -> eps_hat``.
      score: ``score(params, x, t, label=None) -> -eps_hat / s(t)``.
      denoise: ``denoise(params, x, t, label=None) -> x0_hat``.
      dim, num_classes: the data dimension; 0 for an unconditional model.
      base: the Gaussian-mixture base `genlearn.core.Distribution`, or None.
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
    base: Any = None


_MIXTURE_KEYS = {"logits", "means", "log_std"}


def mixture_eps(sde: SDE, mixture, x: Array, t) -> Array:
    """The exact eps-prediction ``-s(t) grad log q_t(x)`` ``(n, d)`` of a diagonal Gaussian mixture diffused by ``sde``.

    ``mixture``: `genlearn.core.gaussian_mixture` params ``{"logits": (K,),
    "means": (K, d), "log_std": (K, d)}`` of q; q_t = sum_k w_k N(m mu_k,
    diag(m^2 sigma_k^2 + s^2)) (module docstring). ``t`` a scalar or ``(n,)``.
    """
    if not isinstance(mixture, dict) or set(mixture) != _MIXTURE_KEYS:
        raise ValueError(f"mixture_eps: mixture must be gaussian_mixture params with keys {sorted(_MIXTURE_KEYS)}, "
                         f"got {sorted(mixture) if isinstance(mixture, dict) else type(mixture).__name__}")
    means = jnp.asarray(mixture["means"], x.dtype)
    if x.ndim != 2 or means.ndim != 2 or x.shape[1] != means.shape[1]:
        raise ValueError(f"mixture_eps: expected x of shape (n, {means.shape[-1]}), got {tuple(x.shape)}")
    t = jnp.asarray(t, x.dtype)
    m, s = _rows(sde.mean_coeff(t), x), _rows(sde.std(t), x)  # scalars, or (n, 1)
    m3, s3 = (m, s) if t.ndim == 0 else (m[..., None], s[..., None])  # against (n, K, d)
    var = m3**2 * jnp.exp(2.0 * jnp.asarray(mixture["log_std"], x.dtype))[None] + s3**2  # (n or 1, K, d)
    diff = x[:, None, :] - m3 * means[None]  # (n, K, d)
    log_comp = -0.5 * jnp.sum(diff**2 / var + jnp.log(var), -1)  # the shared 2 pi cancels in the responsibilities
    resp = jax.nn.softmax(log_comp + jax.nn.log_softmax(jnp.asarray(mixture["logits"], x.dtype)), -1)  # (n, K)
    return s * jnp.einsum("nk,nkd->nd", resp, diff / var)


def diffusion_model(sde: SDE, net: ScoreNet, parameterization: str = "eps", *, base=None) -> Diffusion:
    """A :class:`Diffusion` of ``sde`` and ``net`` with the given output parameterisation.

    ``base``: a `genlearn.core.gaussian_mixture` whose diffused eps the network
    corrects (module docstring), or None (the network alone).
    """
    if parameterization not in PARAMETERIZATIONS:
        raise ValueError(f"parameterization must be one of {PARAMETERIZATIONS}, got {parameterization!r}")
    if base is not None:
        shapes = jax.eval_shape(base.init, jax.random.PRNGKey(0)) if hasattr(base, "init") else None
        if not isinstance(shapes, dict) or set(shapes) != _MIXTURE_KEYS:
            raise ValueError("diffusion_model: base must be a genlearn.core.gaussian_mixture (its eps is exact in "
                             f"closed form under the SDE), got {type(base).__name__}")
        if shapes["means"].shape[1] != net.dim:
            raise ValueError(f"diffusion_model: the base is {shapes['means'].shape[1]}-dimensional, the network "
                             f"{net.dim}-dimensional")

    def init(key, data=None):
        net_params = net.init(key)
        if base is None:
            return net_params
        k_base = jax.random.fold_in(key, 1)
        return {"net": net_params, "base": base.init(k_base) if data is None else base.fit(k_base, data)}

    def eps(params, x, t, label=None):
        t = jnp.asarray(t, x.dtype)
        m, s = _rows(sde.mean_coeff(t), x), _rows(sde.std(t), x)
        if base is not None:
            u = net.apply(params["net"], x / jnp.sqrt(m**2 + s**2), t, label)
            lin = {"eps": 1.0, "v": m / (m**2 + s**2), "score": -s}[parameterization]
            return mixture_eps(sde, jax.lax.stop_gradient(params["base"]), x, t) + lin * u
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

    return Diffusion(sde, net, parameterization, init, eps, score, denoise, net.dim, net.num_classes, base)


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
