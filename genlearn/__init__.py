"""genlearn: learning high-dimensional distributions from samples, in pure JAX functions."""

from genlearn import core, flows, losses, nn
from genlearn.core import Bijector, Distribution, Flow, Model, chain, make_bijector, make_flow

__version__ = "0.1.0"

# Subpackages with heavier imports load on first attribute access (``gl.metrics``, ``gl.train``, ...).
_LAZY_SUBMODULES = ("classical", "compare", "data", "diffusion", "distances", "energy", "gan", "interop", "metrics",
                    "parallel", "plotting", "registry", "runs", "train", "vae")


def __getattr__(name):
    if name in _LAZY_SUBMODULES:
        import importlib

        module = importlib.import_module(f"genlearn.{name}")
        globals()[name] = module
        return module
    raise AttributeError(f"module 'genlearn' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY_SUBMODULES))

__all__ = [
    "Bijector",
    "Distribution",
    "Flow",
    "Model",
    "chain",
    "core",
    "flows",
    "losses",
    "make_bijector",
    "make_flow",
    "nn",
]
