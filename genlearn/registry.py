"""The run registry: one :class:`Family` record per model the CLI, ``compare`` and ``runs`` know.

A family says how to get from a dataset to a trained :class:`~genlearn.core.model.Model`:
its per-dataset default options, how to build the model from them, how to
train it, which command-line options it takes, and whether it applies to a
dataset at all. `genlearn.runs` does the rest the same way for every family
(run directories, NLL metrics, figures, loading), so a new family is one
module with one ``register(Family(...))`` call (docs/ARCHITECTURE.md walks
through a diagonal Gaussian; tests/test_registry.py runs it). Built-in
families (``realnvp nice maf iaf spline glow cnf histogram kde gmm ebm gan``, and ``vae``)
live in ``genlearn/{flows,classical,energy,gan}/run.py`` (``genlearn/vae/run.py``) and are imported on
the first lookup.
"""

from __future__ import annotations

import argparse
import importlib
from typing import Any, Callable, NamedTuple

from genlearn.plotting import DENSITY_RESOLUTION  # density.png's default grid (numpy only at import)

__all__ = ["Option", "Context", "Training", "Family", "register", "unregister", "get", "names", "STEPS", "BATCH_SIZE",
           "LEARNING_RATE", "HIDDEN", "RESUME",
           "positive_int", "nonneg_int", "positive_float", "nonneg_float", "fraction", "widths"]

_BUILTIN_MODULES = ("genlearn.flows.run", "genlearn.classical.run", "genlearn.energy.run", "genlearn.gan.run",
                    "genlearn.vae.run", "genlearn.diffusion.run")


def _number(cast, minimum: float, strict: bool, below: float | None = None):
    """An option parser: a finite number >= minimum (> minimum if strict, < below if given)."""
    kind = "an integer" if cast is int else "a number"

    def parse(text: str):
        try:
            value = cast(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {kind}, got {text!r}") from None
        ok = value > minimum if strict else value >= minimum
        if not ok or value != value or value == float("inf"):
            bound = f"> {minimum}" if strict else f">= {minimum}"
            noun = "" if cast is int else "a finite number "
            raise argparse.ArgumentTypeError(f"must be {noun}{bound}, got {text}")
        if below is not None and value >= below:
            raise argparse.ArgumentTypeError(f"must be in [{minimum}, {below}), got {text}")
        return value

    return parse


positive_int = _number(int, 1, strict=False)
nonneg_int = _number(int, 0, strict=False)
positive_float = _number(float, 0, strict=True)
nonneg_float = _number(float, 0, strict=False)
fraction = _number(float, 0, strict=False, below=1)


def widths(text: str) -> list[int]:
    """``"128,128"`` -> ``[128, 128]`` (hidden-layer widths, each >= 1)."""
    try:
        out = [int(w) for w in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated widths like 128,128, got {text!r}") from None
    if not out or min(out) < 1:
        raise argparse.ArgumentTypeError(f"widths must be >= 1, got {text!r}")
    return out


class Option(NamedTuple):
    """A command-line option of a family: ``--flag VALUE`` sets ``options[key]``.

    ``type`` parses the text (raising ``argparse.ArgumentTypeError``), or is
    ``bool`` for a switch. ``choices`` restricts the value for this family
    (several families may share a flag with different choices).
    """

    flag: str
    key: str
    type: Callable[[str], Any]
    help: str
    choices: tuple | None = None


# Options several families share (a family may also declare its own with the same flag).
STEPS = Option("--steps", "steps", nonneg_int, "training steps")
BATCH_SIZE = Option("--batch-size", "batch_size", positive_int, "minibatch size")
LEARNING_RATE = Option("--lr", "learning_rate", positive_float, "peak Adam learning rate (cosine decay)")
HIDDEN = Option("--hidden", "hidden", widths, "hidden widths, e.g. 128,128")
RESUME = Option("--resume", "resume", bool, "continue from the run's latest checkpoint")


class Context(NamedTuple):
    """How a run trains, beside the options: the same for every family."""

    seed: int = 0  # the run's seed, for host-side (numpy) randomness
    progress: bool = True
    max_seconds: float | None = None
    resume: bool = False
    checkpoint_dir: str | None = None
    desc: str = "fit"


class Training(NamedTuple):
    """What `genlearn.train.run_trainer` needs to train one model: a family's ``trainer`` builds it.

    Attributes:
      trainer: a `genlearn.train.Trainer` (gradient MLE, PCD, a GAN min-max
        update, a weak-loss generator, ...).
      params: the initial params handed to ``trainer.init``.
      data: the training rows, in the space the trainer works in.
      key: the driver's key.
      steps, batch_size, val_fraction, eval_every, patience, max_nonfinite:
        the driver's arguments of the same names.
      finish: ``finish(result) -> (params, metrics)``: the model's params (in
        the Model's form) from the driver's `FitResult`, and scalars measured
        once after training (e.g. an EBM's log Z by AIS); None: ``result.params``.
    """

    trainer: Any
    params: Any
    data: Any
    key: Any
    steps: int
    batch_size: int
    val_fraction: float = 0.0
    eval_every: int = 250
    patience: int | None = None
    max_nonfinite: int | None = 10
    finish: Callable | None = None


class Family(NamedTuple):
    """One model family of the registry.

    Attributes:
      name: the CLI name (``genlearn fit NAME``) and ``config.json``'s ``"family"``.
      defaults: ``defaults(dataset, chosen) -> dict`` of JSON options for this
        dataset; ``chosen`` holds the options the user set (GAN's ``loss`` picks
        its defaults). Keys of the result are the options the family takes; an
        iterative family has ``"steps"``.
      build: ``build(options, dim, preprocess) -> Model`` in data units.
      trainer: ``trainer(model, dataset, options, key, ctx) -> Training``, run
        by the one driver (`genlearn.train.run_trainer`) with the run's
        checkpoints, time budget and progress bar; None for a closed-form
        estimator, whose ``model.init(key, data)`` fits it to the training
        rows (dequantised for discrete data).
      options: the :class:`Option` s the CLI offers for this family.
      applies: ``applies(dataset) -> None or the reason it does not apply``.
      check: ``check(options, dataset) -> None or why the options are invalid``.
      preprocess: ``preprocess(dataset) -> dict`` (JSON, recorded in config.json
        and passed to ``build``), e.g. standardisation statistics.
      report: ``report(model, params, dataset, options, history, key) -> dict``
        of family-specific metrics added to metrics.json.
      loss_label: the y-axis label of loss.png, or ``loss_label(options) -> str`` when the loss
        depends on the options (the CNF's objective, the VAE's bound).
      figures: ``figures(out_dir, model, params, dataset, options, key) -> None``
        writes the family's own PNGs into the run directory beside the common
        ones (e.g. a diffusion model's denoising trajectory); None: none.
      density_resolution: density.png's grid points per axis (2-D data), or
        ``density_resolution(options) -> int``: a density that is costly to
        evaluate far from the data (an ODE whose field is stiff there) takes
        fewer.
    """

    name: str
    defaults: Callable[..., dict]
    build: Callable[..., Any]
    trainer: Callable[..., Training] | None = None
    options: tuple = ()
    applies: Callable[[Any], str | None] | None = None
    check: Callable[[dict, Any], str | None] | None = None
    preprocess: Callable[[Any], dict] | None = None
    report: Callable[..., dict] | None = None
    loss_label: str | Callable[[dict], str] = "training loss"
    figures: Callable[..., None] | None = None
    density_resolution: int | Callable[[dict], int] = DENSITY_RESOLUTION


_FAMILIES: dict[str, Family] = {}
_loaded = False


def _load_builtins() -> None:
    global _loaded
    if not _loaded:
        _loaded = True
        for module in _BUILTIN_MODULES:
            importlib.import_module(module)


def register(family: Family) -> Family:
    """Adds ``family`` (replacing one of the same name); returns it."""
    if not isinstance(family, Family):
        raise TypeError(f"register expects a registry.Family, got {type(family).__name__}")
    if not family.name or not family.name.replace("-", "").replace("_", "").isalnum():
        raise ValueError(f"family name must be a non-empty word, got {family.name!r}")
    for opt in family.options:
        if not opt.flag.startswith("--"):
            raise ValueError(f"{family.name}: option flag {opt.flag!r} must start with --")
    _FAMILIES[family.name] = family
    return family


def unregister(name: str) -> None:
    """Removes a family (a no-op when it is not registered)."""
    _FAMILIES.pop(name, None)


def get(name: str) -> Family:
    """The family called ``name``; ValueError naming the known ones otherwise."""
    _load_builtins()
    if name not in _FAMILIES:
        raise ValueError(f"unknown model {name!r}; choose one of: {', '.join(names())}")
    return _FAMILIES[name]


def names() -> list[str]:
    """Registered family names, in registration order."""
    _load_builtins()
    return list(_FAMILIES)
