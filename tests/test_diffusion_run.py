"""The diffusion registry family end to end: it learns a toy (held-out NLL), writes its metrics and the
denoising-trajectory PNG, reloads, and refuses bad options with clear messages."""

import json
import os

import numpy as np
import pytest

from genlearn import registry, runs
from genlearn.cli import main
from genlearn.data import load_dataset

COARSE = 24  # density.png's grid per axis here: each grid point is an ODE solve (the family's own: 60 or 120)


@pytest.fixture
def coarse_density(monkeypatch):
    """The diffusion family with a coarse density.png grid, so the figure code runs at a fraction of its cost."""
    registry.get("diffusion")  # loads the built-in families
    monkeypatch.setitem(registry._FAMILIES, "diffusion", registry.get("diffusion")._replace(density_resolution=COARSE))


TINY = {"hidden": [48, 48], "steps": 400, "batch_size": 256, "learning_rate": 3e-3, "eval_every": 200,
        "sample_nfe": 50, "rtol": 1e-2, "atol": 1e-2, "bound_num_t": 4, "ema_decay": 0.99}


def test_diffusion_learns_a_toy_and_writes_its_run(tmp_path, coarse_density):
    """400 steps on a small ring8: the probability-flow NLL and the bound are far below the best Gaussian's,
    all modes are found, and the run reloads."""
    ds = load_dataset("ring8", n_train=2000, n_test=300)
    out = str(tmp_path / "run")
    _, cfg, metrics = runs.fit("diffusion", ds, TINY, out=out, progress=False)
    for name in ("samples.png", "density.png", "loss.png", "trajectory.png", "metrics.json", "config.json"):
        assert os.path.exists(os.path.join(out, name)), name
    # a Gaussian fitted to ring8 has a standardised NLL of log(2 pi e) = 2.84; 8 sharp modes allow about -3.6.
    # ring8's default: the network over a mixture fitted by EM (the network alone: the next test)
    assert cfg["options"]["base"] == "mixture" and cfg["options"]["sampler"] == "ancestral"
    assert metrics["test_nll_standardized"] < -3.2, metrics
    assert np.load(os.path.join(out, "density.npz"))["log_density"].shape == (COARSE * COARSE,)
    # the bound is on the stochastic sampler's model, not the ODE's: it is only checked to be a learnt value
    assert metrics["test_nll_bound_standardized"] < 2.0
    assert metrics["modes_covered"] == 8, metrics
    saved = json.load(open(os.path.join(out, "metrics.json")))
    assert saved["test_nll"] == metrics["test_nll"]
    run = runs.load(out)
    assert run.model.log_prob_is_exact and not run.model.log_prob_needs_key
    lp = np.asarray(run.log_prob(ds.test[:50]))
    assert np.isfinite(lp).all()


def test_the_network_alone_learns_a_toy_and_old_runs_rebuild_without_a_base(tmp_path, coarse_density):
    """``--base none`` (and a config saved before the option: no ``base`` key) is the network alone."""
    ds = load_dataset("ring8", n_train=2000, n_test=300)
    out = str(tmp_path / "run")
    _, cfg, metrics = runs.fit("diffusion", ds, {**TINY, "base": "none"}, out=out, progress=False)
    assert metrics["test_nll_standardized"] < 0.5, metrics
    assert metrics["modes_covered"] == 8, metrics
    path = os.path.join(out, "config.json")
    saved = json.load(open(path))
    del saved["options"]["base"]
    json.dump(saved, open(path, "w"))
    run = runs.load(out)  # rebuilt without a base: the saved params and the test NLL are the network's
    np.testing.assert_allclose(-np.mean(np.asarray(run.log_prob(ds.test), np.float64)), metrics["test_nll"],
                               rtol=1e-4, atol=1e-4)


def test_density_png_grid_is_coarser_over_a_mixture_base():
    """The family's own density.png grid (the tests above draw a coarser one): 60 points per axis over a
    mixture base, the library's 120 for the network alone."""
    from genlearn.plotting import DENSITY_RESOLUTION

    fam = registry.get("diffusion")
    assert fam.density_resolution({"base": "mixture"}) == 60
    assert fam.density_resolution({"base": "none"}) == fam.density_resolution({}) == DENSITY_RESOLUTION == 120


@pytest.mark.parametrize("flags,message", [
    (["--guidance", "2"], "guidance scale was given for an unconditional model"),
    (["--num-classes", "10"], "only digits has labels"),
    (["--base", "mixture", "--components", "30000"], "--components 30000 exceeds the 20000 training rows"),
])
def test_bad_options_are_refused(flags, message, tmp_path, capsys):
    assert main(["fit", "diffusion", "--data", "moons", "--out", str(tmp_path / "x"), "--no-progress", *flags]) == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("flags,message", [(["--nfe", "0"], "--nfe: must be >= 1"),
                                           (["--sampler", "heun"], "invalid choice: 'heun'")])
def test_bad_flags_are_refused_by_the_parser(flags, message, tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["fit", "diffusion", "--data", "moons", "--out", str(tmp_path / "x"), *flags])
    assert exc.value.code == 2 and message in capsys.readouterr().err
