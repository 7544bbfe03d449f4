"""Score-based diffusion models (``gl.diffusion``): SDEs, noise-conditional nets, DSM losses, samplers, likelihoods.

* `sde`: VP (linear / cosine), sub-VP and VE SDEs as NamedTuples of pure functions; discretisation.
* `nets`: a time-embedding MLP for vectors and a small U-Net for 8x8 images (flax.linen), optionally
  class-conditional with a null label for classifier-free guidance.
* `model`: :func:`diffusion_model` ties an SDE, a network and a parameterisation (eps, v, score),
  optionally over a Gaussian-mixture base whose diffused eps (:func:`mixture_eps`) the network corrects.
* `losses`: denoising score matching ``loss(params, batch, key)`` with sigma^2 / likelihood weighting
  and uniform / antithetic / stratified / importance-sampled times.
* `samplers`: ancestral DDPM, DDIM(eta), Euler-Maruyama, predictor-corrector as ``init/step`` kernels
  under ``lax.scan``, and the probability-flow ODE through diffrax.
* `likelihood`: the exact probability-flow log-likelihood (the CNF's augmented-ODE solver) and the
  continuous-time variational bound.

The registry family ``diffusion`` (``genlearn fit diffusion``) lives in `genlearn.diffusion.run`.
"""

from genlearn.diffusion.likelihood import log_prob, probability_flow, variational_bound
from genlearn.diffusion.losses import TIME_SAMPLINGS, WEIGHTINGS, TimeSampler, dsm_loss, time_sampler, weight
from genlearn.diffusion.model import PARAMETERIZATIONS, Diffusion, diffusion_model, eps_fn, mixture_eps
from genlearn.diffusion.nets import ScoreNet, mlp_net, sinusoidal_embedding, unet_net
from genlearn.diffusion.samplers import (SAMPLERS, DiffusionSampler, SamplerInfo, SamplerState, ancestral, ddim,
                                         euler_maruyama, predictor_corrector, probability_flow_sample, run_sampler,
                                         sample, steps_for_nfe)
from genlearn.diffusion.sde import (SDE, SDES, SPACINGS, Discretization, check_time, ddpm_betas, discretize,
                                    make_sde, perturb, subvp, time_grid, ve, vp, vp_from_ddpm)

__all__ = [
    "SDE", "SDES", "Discretization", "check_time", "ddpm_betas", "discretize", "make_sde", "perturb", "subvp",
    "time_grid", "SPACINGS", "ve", "vp", "vp_from_ddpm",
    "ScoreNet", "mlp_net", "unet_net", "sinusoidal_embedding",
    "PARAMETERIZATIONS", "Diffusion", "diffusion_model", "eps_fn", "mixture_eps",
    "WEIGHTINGS", "TIME_SAMPLINGS", "TimeSampler", "time_sampler", "weight", "dsm_loss",
    "SAMPLERS", "DiffusionSampler", "SamplerState", "SamplerInfo", "ancestral", "ddim", "euler_maruyama",
    "predictor_corrector", "run_sampler", "probability_flow_sample", "sample", "steps_for_nfe",
    "probability_flow", "log_prob", "variational_bound",
]
