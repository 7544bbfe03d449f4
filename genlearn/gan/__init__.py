"""Generators, weak losses and GANs: the min-max family (lecture, second half).

* ``generators``: pushforward models ``G_theta # Q`` (``generator``, ``expectation``).
* ``critics``: MLP critics, spectral normalisation with explicit power-iteration state.
* ``weak``: differentiable weak losses (moments, MMD, energy, Sinkhorn, sliced W).
* ``objectives``: adversarial objectives (js, ns, wgan-clip, wgan-gp, sn, hinge; GP, R1).
* ``minmax``: the min-max update as a ``genlearn.train.Trainer``; ``weak_generator``.
* ``train``: ``train_gan``, a shorthand for ``genlearn.train.run_trainer``.
* ``run``: the ``gan`` family of `genlearn.registry` (``genlearn fit gan``), ``train_model``, ``train_seeds``.
"""

from genlearn.gan.critics import Critic, clip_params, critic, init_spectral_state, spectral_normalize
from genlearn.gan.generators import BASES, Generator, expectation, generator
from genlearn.gan.minmax import GANInfo, GANState, MinMax, minmax, weak_generator
from genlearn.gan.objectives import (
    OBJECTIVES,
    AdversarialObjective,
    critic_input_grad_norms,
    gradient_penalty,
    objective,
    r1_penalty,
)
from genlearn.gan.train import train_gan
from genlearn.gan import run  # noqa: E402  (the registry family; after the modules it uses)
from genlearn.gan.weak import (
    WEAK_LOSSES,
    energy_distance,
    generator_loss,
    mmd2,
    moment_matching,
    sinkhorn_divergence,
    sliced_wasserstein,
    weak_loss,
)

__all__ = [
    "BASES", "Generator", "generator", "expectation",
    "Critic", "critic", "spectral_normalize", "init_spectral_state", "clip_params",
    "WEAK_LOSSES", "moment_matching", "mmd2", "energy_distance", "sinkhorn_divergence",
    "sliced_wasserstein", "weak_loss", "generator_loss",
    "OBJECTIVES", "AdversarialObjective", "objective", "gradient_penalty", "r1_penalty",
    "critic_input_grad_norms",
    "GANState", "GANInfo", "MinMax", "minmax", "weak_generator",
    "train_gan",
]
