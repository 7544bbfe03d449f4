r"""Energy-based models: Gibbs densities ``p_theta(x) = exp(-V_theta(x)) / Z_theta``.

An :class:`EnergyModel` is a NamedTuple of pure functions over a params pytree,
like every genlearn family:

* ``init(key) -> params``;
* ``energy(params, x)``: ``V_theta(x)``; ``x`` of shape ``(dim,)`` gives a
  scalar, ``(n, dim)`` gives ``(n,)``;
* ``unnormalized_log_prob(params, x) = -V_theta(x)``;
* ``score(params, x) = grad_x log p_theta(x) = -grad_x V_theta(x)`` (same
  shape as ``x``; the score does not depend on ``Z_theta``).

``Z_theta = \int exp(-V_theta(x)) dx`` is never computed here: training uses
Z-free objectives (`genlearn.energy.training`) and likelihoods come from
annealed importance sampling (`genlearn.energy.ais`).

`mlp_energy` is a flax.linen MLP plus a weak quadratic confinement
``||x||^2 / (2 s^2)``, which keeps ``Z_theta`` finite for any weights (a
smooth MLP grows at most linearly). `residual_energy` is an energy over a
normalised base ``q`` (e.g. a Gaussian mixture fitted by EM):
``V(x) = -log q(x) + E_theta(x)`` (Deng et al. 2020, "Residual energy-based
models for text generation"; Arbel et al. 2021, "Generalized energy based
models"), so that ``E_theta = 0`` is the base itself. `from_function` turns any user function
``V(params, x) -> scalar`` into a model (the plugin route), and `standardized`
moves a model trained on standardised data back to data units with exact
bookkeeping of ``log Z``.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from genlearn.nn import MLP, activation_fn

__all__ = ["EnergyModel", "mlp_energy", "residual_energy", "from_function", "standardized", "check_positions"]

PyTree = Any


class EnergyModel(NamedTuple):
    """A Gibbs density ``exp(-V(params, x)) / Z(params)`` (module docstring).

    Attributes:
      init: ``init(key) -> params``.
      energy: ``energy(params, x)``; ``(dim,) -> ()`` or ``(n, dim) -> (n,)``.
      unnormalized_log_prob: ``-energy``.
      score: ``-grad_x energy``, same shape as ``x``.
      dim: event dimension.
    """

    init: Callable[[jax.Array], PyTree]
    energy: Callable[[PyTree, jax.Array], jax.Array]
    unnormalized_log_prob: Callable[[PyTree, jax.Array], jax.Array]
    score: Callable[[PyTree, jax.Array], jax.Array]
    dim: int


def _check_dim(dim) -> int:
    if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)) or dim < 1:
        raise ValueError(f"dim must be a positive integer, got {dim!r}")
    return int(dim)


def check_positions(x, dim: int, what: str = "x") -> jax.Array:
    """``x`` as an array of shape ``(dim,)`` or ``(n, dim)``; ValueError otherwise."""
    x = jnp.asarray(x)
    if x.ndim not in (1, 2) or x.shape[-1] != dim:
        raise ValueError(
            f"{what} must have shape ({dim},) or (n, {dim}), got shape {tuple(x.shape)}"
        )
    if not jnp.issubdtype(x.dtype, jnp.floating):
        x = x.astype(jnp.float32)
    return x


def _build(single_energy: Callable, init: Callable, dim: int) -> EnergyModel:
    """Batched/unbatched wrappers around a single-example energy ``V(params, x) -> ()``."""

    def energy(params, x):
        x = check_positions(x, dim)
        if x.ndim == 1:
            return single_energy(params, x)
        return jax.vmap(single_energy, in_axes=(None, 0))(params, x)

    def unnormalized_log_prob(params, x):
        return -energy(params, x)

    single_score = jax.grad(lambda p, x: -single_energy(p, x), argnums=1)

    def score(params, x):
        x = check_positions(x, dim)
        if x.ndim == 1:
            return single_score(params, x)
        return jax.vmap(single_score, in_axes=(None, 0))(params, x)

    return EnergyModel(init, energy, unnormalized_log_prob, score, dim)


def _check_scalar_output(fn: Callable, params, dim: int) -> None:
    try:
        out = jax.eval_shape(fn, params, jax.ShapeDtypeStruct((dim,), jnp.float32))
    except Exception as err:  # the user's function failed on a (dim,) input
        raise ValueError(
            f"the energy function failed on one example of shape ({dim},): {err}"
        ) from err
    shape = getattr(out, "shape", None)
    if shape != ():
        raise ValueError(
            "the energy function must return a scalar for one example of shape "
            f"({dim},), got {'shape ' + str(shape) if shape is not None else type(out).__name__}"
        )


def from_function(
    energy_fn: Callable[[PyTree, jax.Array], jax.Array],
    dim: int,
    init: Callable[[jax.Array], PyTree] | None = None,
) -> EnergyModel:
    """An :class:`EnergyModel` from any ``V(params, x) -> scalar`` (the plugin route).

    Args:
      energy_fn: ``V(params, x)`` for ONE example ``x`` of shape ``(dim,)``,
        returning a scalar; it must be differentiable in ``x`` (``jax.grad``).
      dim: event dimension.
      init: ``init(key) -> params``; default: no parameters (``{}``), e.g. for
        an analytic density used as a sampling target.

    Raises:
      ValueError: ``dim`` not a positive integer, or ``energy_fn`` failing on
        or returning a non-scalar for an input of shape ``(dim,)``.
    """
    dim = _check_dim(dim)
    if not callable(energy_fn):
        raise ValueError(f"energy_fn must be callable, got {type(energy_fn).__name__}")
    init = init if init is not None else (lambda key: {})
    params = jax.eval_shape(init, jax.random.PRNGKey(0))
    _check_scalar_output(energy_fn, params, dim)
    return _build(energy_fn, init, dim)


def mlp_energy(
    dim: int,
    hidden: Sequence[int] = (128, 128, 128),
    *,
    activation: str | Callable = "silu",
    confinement: float = 4.0,
    zero_init: bool = False,
) -> EnergyModel:
    r"""MLP energy ``V(x) = f_theta(x) + ||x||^2 / (2 s^2)``.

    ``f_theta`` is a flax.linen MLP ``R^dim -> R`` (`genlearn.nn.MLP`); the
    quadratic term with scale ``s = confinement`` makes ``exp(-V)``
    integrable whatever the weights (use data standardised to unit scale;
    ``s = 4`` barely touches the data region). Smooth activations (silu,
    tanh, gelu) give a continuous score, which Langevin/HMC need.

    Args:
      dim: input dimension.
      hidden: hidden widths (non-empty, positive).
      activation: name from `genlearn.nn.ACTIVATIONS` or a callable.
      confinement: ``s > 0``, or ``float("inf")`` for no confinement.
      zero_init: zero the MLP's last layer, so that ``f_theta = 0`` at init
        (the correction of `residual_energy` then starts at its base).
    """
    dim = _check_dim(dim)
    hidden = tuple(hidden)
    if not hidden or any(
        isinstance(h, bool) or not isinstance(h, (int, np.integer)) or h < 1 for h in hidden
    ):
        raise ValueError(f"hidden must be a non-empty sequence of positive integers, got {hidden!r}")
    activation_fn(activation)  # fail early on an unknown name
    confinement = float(confinement)
    if not confinement > 0:
        raise ValueError(f"confinement must be > 0 (or inf), got {confinement}")
    net = MLP(hidden=hidden, out=1, activation=activation, zero_init_last=bool(zero_init))
    inv_var = 0.0 if np.isinf(confinement) else 1.0 / confinement**2

    def init(key):
        return net.init(key, jnp.zeros((dim,), jnp.float32))

    def single_energy(params, x):
        return net.apply(params, x)[0] + 0.5 * inv_var * jnp.sum(x * x)

    return _build(single_energy, init, dim)


def residual_energy(base, correction: EnergyModel, *, train_base: bool = False) -> EnergyModel:
    r"""``V(x) = -log q_phi(x) + E_theta(x)``: an energy correcting a normalised base density ``q``.

    Params ``{"base": phi, "correction": theta}``; ``exp(-V) = q exp(-E)``, so
    ``Z = E_q[exp(-E_theta)]`` is 1 when the correction is 0, and annealing
    from ``q`` itself (`genlearn.energy.ais_log_z_from`) has only ``E_theta`` to
    bridge. ``init(key)`` gives ``base.init`` and ``correction.init``; start the
    base at a fit to the data (``base.fit``, e.g. EM for
    `genlearn.core.gaussian_mixture`) and the correction near zero
    (``mlp_energy(..., zero_init=True)``).

    Args:
      base: a `genlearn.core.Distribution` (``log_prob(params, x)`` for one
        ``x`` of shape ``(dim,)``, normalised) of the correction's dimension.
      correction: an :class:`EnergyModel`; its confinement can be dropped
        (``confinement=inf``): the base's Gaussian tails keep ``Z`` finite for
        a correction growing at most linearly.
      train_base: False (the default) stops the gradient to the base's params,
        so training moves only ``E_theta`` and the base stays the fit.
    """
    if not isinstance(correction, EnergyModel):
        raise ValueError(f"correction must be an EnergyModel, got {type(correction).__name__}")
    for attr in ("init", "log_prob", "dim"):
        if not hasattr(base, attr):
            raise ValueError(f"base must be a genlearn.core.Distribution (no {attr!r}), got {type(base).__name__}")
    if base.dim != correction.dim:
        raise ValueError(f"base has dimension {base.dim} but the correction {correction.dim}")
    dim = correction.dim

    def init(key):
        k_base, k_corr = jax.random.split(key)
        return {"base": base.init(k_base), "correction": correction.init(k_corr)}

    def single_energy(params, x):
        phi = params["base"] if train_base else jax.lax.stop_gradient(params["base"])
        phi = jax.tree_util.tree_map(lambda a: jnp.asarray(a).astype(x.dtype), phi)
        return correction.energy(params["correction"], x) - base.log_prob(phi, x)

    return _build(single_energy, init, dim)


def standardized(model: EnergyModel, mean, std) -> EnergyModel:
    r"""The data-space model of ``model`` trained on ``u = (x - mean) / std``.

    ``V_x(x) = V_u((x - mean) / std) + sum_j log std_j``, so that
    ``exp(-V_x)`` has the same normaliser ``Z`` as ``exp(-V_u)``: a ``log Z``
    estimated for either gives ``log p(x) = -V_x(x) - log Z`` in data units.
    Params are the same pytree.
    """
    mean = jnp.asarray(mean, jnp.float32).reshape(-1)
    std = jnp.asarray(std, jnp.float32).reshape(-1)
    if mean.shape != (model.dim,) or std.shape != (model.dim,):
        raise ValueError(
            f"mean and std must have shape ({model.dim},), got {mean.shape} and {std.shape}"
        )
    if not bool(jnp.all(std > 0)) or not bool(jnp.all(jnp.isfinite(mean))):
        raise ValueError("std must be positive and mean finite")
    log_det = jnp.sum(jnp.log(std))

    def single(params, x):
        return model.energy(params, (x - mean) / std) + log_det

    return _build(single, model.init, model.dim)
