"""Energy-based models ``p(x) = exp(-V(x)) / Z``: models, MCMC samplers, Z-free training, AIS.

See the module docstrings of `models`, `samplers`, `diagnostics`, `training`
and `ais`; `run` trains and evaluates a model end to end (``genlearn fit ebm``).
"""

from genlearn.energy.ais import (
    AISResult,
    LogLikelihood,
    ais_log_z,
    ais_log_z_from,
    beta_schedule,
    gaussian_base,
    grid_log_z,
    log_likelihood,
)
from genlearn.energy.diagnostics import (
    acceptance_rate,
    divergence_rate,
    effective_sample_size,
    rhat,
    summarize,
)
from genlearn.energy.models import EnergyModel, from_function, mlp_energy, residual_energy, standardized
from genlearn.energy.samplers import (
    LangevinState,
    Sampler,
    SamplerInfo,
    hmc,
    independent_mh,
    kde_proposal,
    langevin,
    mala,
    nuts,
    sample_chains,
)
from genlearn.energy.training import (
    PCDInfo,
    PCDState,
    ReplayBuffer,
    contrastive_divergence,
    denoising_score_matching,
    fit_pcd,
    persistent_contrastive_divergence,
    sliced_score_matching,
)

__all__ = [
    "AISResult", "EnergyModel", "LangevinState", "LogLikelihood", "PCDInfo", "PCDState",
    "ReplayBuffer", "Sampler", "SamplerInfo", "acceptance_rate", "ais_log_z", "ais_log_z_from",
    "beta_schedule", "contrastive_divergence", "denoising_score_matching", "divergence_rate",
    "effective_sample_size", "fit_pcd", "from_function", "gaussian_base", "grid_log_z", "hmc",
    "independent_mh", "kde_proposal", "langevin", "log_likelihood", "mala", "mlp_energy", "nuts", "persistent_contrastive_divergence",
    "residual_energy",
    "rhat", "sample_chains", "sliced_score_matching", "standardized", "summarize",
]
