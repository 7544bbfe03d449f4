"""Issue 17, item 3: the library's defaults train without loss spikes.

With ``gl.train.fit`` and plain ``optax.adam(1e-3)``, no minibatch loss after
the first 50 steps exceeds twice the initial loss, for every flow family, both
through the API and through the CLI. The API runs replay the configuration of
``benchmarks/stability.py`` (ring8, batch 256, init seed 0, data key 10), where
RealNVP with ``base="normal"`` reaches 106 nats at step 331 from 2.84: the
failure these defaults (the Student-t base, global-norm clipping) remove.
The full 2000-step, 2-seed study is ``benchmarks/results/stability.md``.
"""

import jax
import numpy as np
import optax
import pytest

import genlearn as gl
from genlearn.data import load_dataset, standardize, standardize_stats

# glow still spikes on ring8 with the t base (6.3 nats at step ~300 from 2.93; base="normal": 679): open, issue 17.
# cnf and the CLI runs cost ~4 CPU-minutes together: `pytest -m slow` (the default suite's 15-minute budget).
_GLOW = pytest.param("glow", marks=pytest.mark.xfail(strict=True, reason="glow spikes on ring8 (issue 17, open)"))
FAMILIES = ("realnvp", "nice", "maf", "iaf", "spline", _GLOW, pytest.param("cnf", marks=pytest.mark.slow))
STEPS = 400


def _assert_no_spike(loss, what):
    loss = np.asarray(loss)
    assert loss.shape[0] >= STEPS and np.all(np.isfinite(loss)), what
    late = loss[50:]
    worst = int(np.argmax(late)) + 50
    assert late.max() <= 2 * loss[0], f"{what}: loss {late.max():.2f} at step {worst} > 2 x initial {loss[0]:.2f}"


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


@pytest.mark.slow
@pytest.mark.parametrize("family", ("realnvp", "nice", "maf", "iaf", "spline", "glow", "cnf"))
def test_cli_defaults_train_without_spikes(family, tmp_path):
    from genlearn.cli import main

    out = str(tmp_path / family)
    assert main(["fit", family, "--data", "grid25", "--steps", str(STEPS), "--out", out, "--no-progress"]) == 0
    _assert_no_spike(np.load(f"{out}/history.npz")["train_loss"], f"genlearn fit {family} --data grid25")
