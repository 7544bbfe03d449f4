"""Score-based diffusion models (``gl.diffusion``): SDEs, noise-conditional nets, DSM losses, samplers, likelihoods."""

from genlearn.diffusion.sde import (SDE, SDES, Discretization, check_time, ddpm_betas, discretize, make_sde,
                                    perturb, subvp, time_grid, ve, vp, vp_from_ddpm)

__all__ = ["SDE", "SDES", "Discretization", "check_time", "ddpm_betas", "discretize", "make_sde", "perturb",
           "subvp", "time_grid", "ve", "vp", "vp_from_ddpm"]
