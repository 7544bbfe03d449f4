"""Why the driver runs convolution steps outside `lax.scan` on CPU: the digits U-Net's training step
through `run_trainer` with ``chunk_loop="scan"`` and ``"host"`` (same data, key and step).

    python benchmarks/conv_loop.py            # writes benchmarks/results/conv_loop.{json,md}

Each mode trains the diffusion U-Net (channels 32, batch 128, 8x8 digits-shaped rows) for ``SHORT``
and for ``STEPS`` steps; every call compiles its chunk, so the time per step is the difference of the
two wall times over ``STEPS - SHORT``. Also reports the largest parameter
difference between the two modes (they run the same step, so float rounding only).
"""

from __future__ import annotations

import json
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

import genlearn.diffusion as gd  # noqa: E402
from genlearn.train import gradient_trainer, run_trainer  # noqa: E402

SHORT, STEPS = 20, 60


def main() -> None:
    model = gd.diffusion_model(gd.vp(), gd.unet_net((8, 8), 32))
    trainer = gradient_trainer(gd.dsm_loss(model, weighting="sigma2"), optax.adam(1e-3))
    data = np.asarray(jax.random.uniform(jax.random.PRNGKey(1), (1400, 64), minval=-1.0, maxval=1.0))
    params0 = model.init(jax.random.PRNGKey(0))
    rows, results = {}, {}
    for loop in ("host", "scan"):
        timed = {}
        for steps in (SHORT, STEPS):  # every run_trainer call compiles its chunk: the difference is per step
            kw = dict(steps=steps, batch_size=128, key=jax.random.PRNGKey(3), eval_every=SHORT, progress=False,
                      chunk_loop=loop)
            t0 = time.time()
            results[loop] = run_trainer(trainer, params0, data, **kw)
            timed[steps] = time.time() - t0
        rows[loop] = {"seconds_per_step": (timed[STEPS] - timed[SHORT]) / (STEPS - SHORT),
                      "first_call_seconds": timed[SHORT]}
        print(loop, rows[loop], flush=True)
    diff = max(float(jnp.abs(a - b).max()) for a, b in zip(jax.tree_util.tree_leaves(results["host"].params),
                                                           jax.tree_util.tree_leaves(results["scan"].params)))
    out = {"steps": STEPS, "backend": jax.default_backend(), "jax": jax.__version__, "rows": rows,
           "speedup_host_over_scan": rows["scan"]["seconds_per_step"] / rows["host"]["seconds_per_step"],
           "max_param_difference": diff}
    os.makedirs(os.path.join(HERE, "results"), exist_ok=True)
    with open(os.path.join(HERE, "results", "conv_loop.json"), "w") as fh:
        json.dump(out, fh, indent=2)
    lines = ["# Convolution steps in and out of `lax.scan` (CPU)", "",
             f"`python benchmarks/conv_loop.py`: the diffusion U-Net (channels 32, batch 128) trained {STEPS} steps "
             f"through `run_trainer`, backend {out['backend']}, jax {out['jax']}.", "",
             "| chunk_loop | s / step | 20-step call (compile + run), s |", "|---|---|---|"]
    lines += [f"| {k} | {v['seconds_per_step']:.4f} | {v['first_call_seconds']:.1f} |" for k, v in rows.items()]
    lines += ["", f"host is {out['speedup_host_over_scan']:.1f}x faster per step; largest parameter difference "
              f"between the modes {diff:.2e}.", ""]
    with open(os.path.join(HERE, "results", "conv_loop.md"), "w") as fh:
        fh.write("\n".join(lines))


if __name__ == "__main__":
    main()
