"""Issue 17, item 3: the library's defaults train without loss spikes.

With ``gl.train.fit`` and plain ``optax.adam(1e-3)``, no minibatch loss after
the first 50 steps exceeds twice the initial loss (the initial loss plus its magnitude
when it is negative), for every flow family, both
through the API and through the CLI. The API runs replay the configuration of
``benchmarks/stability.py`` (ring8, batch 256, init seed 0, data key 10), where
RealNVP with ``base="normal"`` reaches 106 nats at step 331 from 2.84: the
failure these defaults (the Student-t base, global-norm clipping) remove.
The full 2000-step, 3-seed study is ``benchmarks/results/stability.md``
(with N(0, I) bases: ``stability_normal_base.md``).
"""

import jax
import numpy as np
import optax
import pytest

import genlearn as gl
from genlearn.data import load_dataset, standardize, standardize_stats

# glow with the usual df = 10 in 2-D reached 5.1 nats at step 288 from 2.93 here (base="normal": 679); its
# default t has df = 5. The CNF's ODE solves cost a CPU-minute: `pytest -m slow`.
# NICE, MAF and IAF spend their time executing the 400 steps, not compiling them: they run at XLA's default
# optimisation (tests/conftest.py; 10.5 -> 7.1, 11.3 -> 7.5, 28.0 -> 21.3 s here, held-out 1.15, -0.80, -0.52);
# the other families' compilation outweighs what it saves them.
_OPT = pytest.mark.optimized
FAMILIES = ("realnvp", pytest.param("nice", marks=_OPT), pytest.param("maf", marks=_OPT),
            pytest.param("iaf", marks=_OPT), "spline", "glow", pytest.param("cnf", marks=pytest.mark.slow))
STEPS = 400
# held-out ring8 NLL (standardised) after the 400 steps must be below these: measured -0.95, 1.41,
# -0.57, -0.37, -2.23, -0.60, -2.70 here, each bound ~0.5 nats above; the best Gaussian scores
# log(2 pi) + 1 = 2.84. NICE with exactly zero-initialised couplings sat at that value, at the symmetric
# saddle (init_scale=0.0: 2.838 after these 400 steps), hence its init_scale default. RealNVP's value after
# only 400 steps depends on rounding: with data keys 10, 11, 12 it reached -0.47, -0.47, -0.79 at the suite's
# XLA optimisation level 0 but 0.63, 0.21, -0.72 at XLA's defaults (what users run), so its bound sits ~0.6
# above the worst of the six, still 1.6 below the Gaussian.
LEARNED = {"realnvp": 1.2, "nice": 1.9, "maf": -0.1, "iaf": 0.1, "spline": -1.7, "glow": -0.1, "cnf": -2.2}


def _assert_no_spike(loss, what):
    loss = np.asarray(loss)
    assert loss.shape[0] >= STEPS and np.all(np.isfinite(loss)), what
    late = loss[50:]
    worst = int(np.argmax(late)) + 50
    # twice the initial loss when it is positive; in general no rise above it by more than its magnitude (the
    # CLI's mixture base, fitted to the data at init, starts at a negative NLL on grid25: -1.69 nats)
    bound = loss[0] + abs(loss[0])
    assert late.max() <= bound, f"{what}: loss {late.max():.2f} at step {worst} > {bound:.2f} (initial {loss[0]:.2f})"


@pytest.mark.parametrize("family", FAMILIES)
def test_library_defaults_train_without_spikes(family):
    ds = load_dataset("ring8")
    mean, std = standardize_stats(ds.train)
    train, _ = standardize(ds.train, mean, std)
    flow = getattr(gl.flows, family)(2)
    key = jax.random.PRNGKey(0)
    params = flow.init(key, train[:256]) if family == "glow" else flow.init(key)
    res = gl.train.fit(gl.losses.nll(flow), params, train, optimizer=optax.adam(1e-3), steps=STEPS, batch_size=256,
                       key=jax.random.PRNGKey(10), progress=False)
    _assert_no_spike(res.history["train_loss"], f"{family} on ring8 through gl.train.fit")
    # and the defaults learn: held-out NLL (standardised) well below the best Gaussian's (log 2 pi + 1 = 2.84)
    test, _ = standardize(ds.test, mean, std)
    held_out = -float(np.mean(flow.log_prob(res.params, test)))
    print(f"{family}: held-out {held_out:.3f}")
    assert held_out < LEARNED[family], (family, held_out)


# RealNVP (the CLI main job whose loss.png showed the spike) runs in the default suite; the CLI trains every
# flow family through the same trainer and clipping as gl.train.fit, so the others are `-m slow` (~3 CPU-minutes).
CLI_FAMILIES = (pytest.param("realnvp", marks=pytest.mark.optimized),  # 24.1 -> 15.8 s optimised
                *(pytest.param(f, marks=pytest.mark.slow) for f in ("nice", "maf", "iaf", "spline", "glow", "cnf")))


@pytest.mark.parametrize("family", CLI_FAMILIES)
def test_cli_defaults_train_without_spikes(family, tmp_path):
    from genlearn.cli import main

    out = str(tmp_path / family)
    assert main(["fit", family, "--data", "grid25", "--steps", str(STEPS), "--out", out, "--no-progress"]) == 0
    _assert_no_spike(np.load(f"{out}/history.npz")["train_loss"], f"genlearn fit {family} --data grid25")
