"""genlearn compare: one leaderboard over the roster, robust to failing models."""

import json
import os

import numpy as np
import pytest

from genlearn import compare as cmp
from genlearn.cli import main
from genlearn.data import load_dataset
from genlearn.plotting import _density_grid
from genlearn.runs import load


def test_parse_budget():
    assert cmp.parse_budget(None) is None
    assert cmp.parse_budget("3000") == ("steps", 3000)
    assert cmp.parse_budget("3000steps") == ("steps", 3000)
    assert cmp.parse_budget("90s") == ("seconds", 90.0)
    for bad in ("-5", "0", "abc", "1.5", "nan s", "infs"):
        with pytest.raises(ValueError, match="budget"):
            cmp.parse_budget(bad)


def test_compare_writes_leaderboard_figures_and_survives_failures(tmp_path, monkeypatch):
    real_fit = cmp._fit_one

    def fit_or_fail(entry, *args, **kwargs):
        if entry.name == "nice":
            raise RuntimeError("simulated failure")
        if entry.name == "kde":
            raise FloatingPointError("loss became NaN")
        return real_fit(entry, *args, **kwargs)

    monkeypatch.setattr(cmp, "_fit_one", fit_or_fail)
    monkeypatch.setitem(cmp.ROSTER, "ghost", cmp.Entry("ghost", "no-such-flow"))
    out = str(tmp_path / "cmp")
    lines = []
    # a small split of moons (the full one is 20 000 + 5 000 rows): what is checked is the leaderboard's making
    ds = load_dataset("moons", n_train=4000, n_test=1024)
    rows = cmp.compare(ds, ["gmm", "realnvp", "nice", "kde", "ghost"], budget="40", out=out,
                       num_samples=200, progress=False, log=lines.append)
    status = {r["model"]: r["status"] for r in rows}
    assert status == {"gmm": "ok", "realnvp": "ok", "nice": "failed", "kde": "diverged",
                      "ghost": "unavailable"}
    for name in ("leaderboard.md", "leaderboard.json", "samples.png", "density.png", "report.md",
                 "error-nice.txt"):
        assert os.path.exists(os.path.join(out, name)), name
    board = json.load(open(os.path.join(out, "leaderboard.json")))
    ok = [r for r in board["rows"] if r["status"] == "ok"]
    assert [r["status"] for r in board["rows"]][:2] == ["ok"] * 2  # ok rows first, by mean rank
    assert [r["mean_rank"] for r in ok] == sorted(r["mean_rank"] for r in ok)
    for r in ok:
        for key in ("test_nll", "w2_exact", "sliced_w2", "mmd2_unbiased", "frechet_distance", "precision",
                    "train_seconds"):
            assert key in r, (r["model"], key)
    # the well-specified GMM beats a 40-step RealNVP on held-out likelihood
    by_name = {r["model"]: r for r in ok}
    for name in ("gmm", "realnvp"):  # the test NLL the fit measured (its metrics.json), not evaluated again,
        # and the density panel from the fit's grid: the run's own log-density on it
        run_dir = os.path.join(out, "runs", name)
        fitted = json.load(open(os.path.join(run_dir, "metrics.json")))
        assert by_name[name]["test_nll"] == fitted["test_nll"]
        run = load(run_dir)
        grid = np.load(os.path.join(run_dir, "density.npz"))["log_density"]
        np.testing.assert_allclose(grid, np.asarray(run.log_prob(_density_grid(np.asarray(ds.test), 120, 0.2)[2])),
                                   rtol=1e-4, atol=1e-4)
    assert by_name["gmm"]["test_nll"] < by_name["realnvp"]["test_nll"]
    md = open(os.path.join(out, "leaderboard.md")).read()
    assert "| ghost | unavailable |" in md and "simulated failure" in open(os.path.join(out, "report.md")).read()
    assert any(line.startswith("[2/5] realnvp: done") for line in lines)


def test_compare_cli_rejects_bad_arguments(capsys):
    for argv, message in [(["compare", "--models", "histogram,unicorn"], "unknown model(s) ['unicorn']"),
                          (["compare", "--budget", "-3"], "budget must be"),
                          (["compare", "--data", "mnist"], "unknown dataset")]:
        with pytest.raises(SystemExit) as exc:
            main(argv)
        assert exc.value.code == 2
        assert message in capsys.readouterr().err


def test_models_that_do_not_apply_to_the_data_get_an_na_row():
    from genlearn.data import load_dataset

    digits, moons = load_dataset("digits"), load_dataset("moons", n_train=500, n_test=100)
    assert "curse of dimensionality" in cmp._not_applicable(cmp.ROSTER["histogram"], digits)
    assert "continuous data" in cmp._not_applicable(cmp.ROSTER["ebm"], digits)
    for name in ("histogram", "ebm", "gmm", "wgan-gp"):
        assert cmp._not_applicable(cmp.ROSTER[name], moons) is None
    assert cmp._not_applicable(cmp.ROSTER["gmm"], digits) is None


def test_roster_options_and_budgets_depend_on_the_data_kind():
    from genlearn.data import load_dataset

    toy, pixels = load_dataset("ring8", n_train=200, n_test=50), load_dataset("digits")
    js = cmp.ROSTER["gan-js"]
    assert cmp._options(js, toy)["r1_weight"] == 0.1 and cmp._options(js, toy)["latent_dim"] == 2
    assert cmp._options(js, pixels) == {"loss": "js"}  # the 2-D toy recipe stays off the digits
    assert cmp._steps_for(js, toy, None) == (20000, None)
    # wgan-gp takes 3/8 of the family's own 2-D toy schedule (32000 steps) and 1500 steps on pixels
    assert cmp._steps_for(cmp.ROSTER["wgan-gp"], toy, None) == (12000, None)
    assert cmp._steps_for(cmp.ROSTER["wgan-gp"], pixels, None) == (1500, None)
    assert cmp._steps_for(js, toy, cmp.parse_budget("90s")) == (20000, 90.0)
    assert "spline" in cmp.DEFAULT_ROSTER and set(cmp.DEFAULT_ROSTER) <= set(cmp.ROSTER)
    # the toys' faster flow schedules (batch 128, a higher peak rate) stay off the digits
    # NICE trains at its family schedule with 32 scanned couplings (the family's 2-D default is 48), 20000 steps on
    # the toys; its digits defaults
    assert cmp._options(cmp.ROSTER["nice"], toy) == {"num_layers": 32}
    assert cmp._steps_for(cmp.ROSTER["nice"], toy, None) == (20000, None)
    assert cmp._options(cmp.ROSTER["nice"], pixels) == {}
    for name in ("realnvp", "maf"):
        assert cmp._options(cmp.ROSTER[name], toy)["batch_size"] == 128, name
        assert cmp._options(cmp.ROSTER[name], pixels) == {}, name
    assert "learning_rate" not in cmp._options(cmp.ROSTER["realnvp"], toy)  # its 24 couplings learn at 1e-3
