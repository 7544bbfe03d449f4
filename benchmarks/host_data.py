"""Throughput cost of training from host memory (`run_trainer(device_data_bytes=...)`).

Builds a 10^7 x 16 float32 dataset (a correlated Gaussian, 640 MB) on the fly as
a memory-mapped ``.npy`` in a temporary directory, written in blocks of 10^6
rows so that RAM stays low, and trains the same RealNVP (4 affine couplings,
2x64 MLPs) on it with `genlearn.train.fit` twice per path:

* **device**: ``device_data_bytes=None``: the 640 MB go to the device once and
  each jitted chunk draws its minibatches there;
* **host**: ``device_data_bytes=2**28`` (256 MiB): the rows stay in the memory
  map; each chunk's batches are gathered on the host and transferred while the
  previous chunk trains.

Both paths draw the same batches (the host run's parameters are compared with
the device run's, bit for bit). Each ``fit`` call compiles its chunk afresh, so
a persistent compilation cache (in the temporary directory) is filled by a
first, discarded run of one chunk per path; steps/s is then that of a whole
``fit`` of ``--steps`` steps (data check, transfers and the epoch permutations
included, compilation not). The time of one epoch permutation of all rows is
reported too: both paths draw it once per epoch (the device path hands it from
chunk to chunk). No validation split.

    nice python benchmarks/host_data.py            # ~2-3 minutes on 2 cores
    python benchmarks/host_data.py --rows 1000000  # a quick look

Writes ``benchmarks/results/host_data.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time

import jax
import numpy as np
import optax

from genlearn.flows import realnvp
from genlearn.losses import nll
from genlearn.train import epoch_permutation, fit

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
DIM = 16


def write_rows(path: str, rows: int, block: int = 1_000_000) -> float:
    """A correlated Gaussian ``(rows, 16)`` float32, written block by block; returns seconds."""
    start = time.perf_counter()
    rng = np.random.default_rng(0)
    mix = np.eye(DIM, dtype=np.float32) + 0.3 * rng.standard_normal((DIM, DIM)).astype(np.float32)
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(rows, DIM))
    for i in range(0, rows, block):
        n = min(block, rows - i)
        out[i: i + n] = rng.standard_normal((n, DIM), dtype=np.float32) @ mix
    out.flush()
    del out
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--batch", type=int, default=1024)
    parser.add_argument("--chunk", type=int, default=100, help="steps per jitted chunk (eval_every)")
    parser.add_argument("--steps", type=int, default=300)
    args = parser.parse_args()

    flow = realnvp(DIM, num_layers=4, hidden=(64, 64))
    params = flow.init(jax.random.key(0))
    kwargs = dict(optimizer=optax.adam(1e-3), batch_size=args.batch, key=jax.random.key(1),
                  eval_every=args.chunk, progress=False)
    paths = {"device": None, "host": 1 << 28}
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "rows.npy")
        write_seconds = write_rows(path, args.rows)
        rows = np.load(path, mmap_mode="r")
        jax.config.update("jax_compilation_cache_dir", os.path.join(tmp, "jax_cache"))
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
        jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
        timings, finals = {}, {}
        for name, threshold in paths.items():
            timings[name] = {}
            start = time.perf_counter()
            fit(nll(flow), params, rows, steps=args.chunk, device_data_bytes=threshold, **kwargs)  # compile
            timings[name]["first_chunk_with_compile"] = time.perf_counter() - start
            start = time.perf_counter()
            result = fit(nll(flow), params, rows, steps=args.steps, device_data_bytes=threshold, **kwargs)
            jax.block_until_ready(result.params)
            timings[name]["fit"] = time.perf_counter() - start
            finals[name] = result
            print(name, timings[name], flush=True)
        perm = jax.jit(lambda k: epoch_permutation(k, 0, args.rows))
        jax.block_until_ready(perm(jax.random.key(2)))
        start = time.perf_counter()
        jax.block_until_ready(perm(jax.random.key(3)))
        perm_seconds = time.perf_counter() - start
    identical = all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(
        jax.tree_util.tree_leaves(finals["host"].params), jax.tree_util.tree_leaves(finals["device"].params)))
    rate = {name: args.steps / t["fit"] for name, t in timings.items()}
    result = {
        "setup": {
            "data": f"{args.rows} x {DIM} float32 correlated Gaussian, memory-mapped .npy "
                    f"({args.rows * DIM * 4 / 1e6:.0f} MB), written in {write_seconds:.1f} s",
            "model": "RealNVP, 4 affine couplings, 2x64 ReLU MLPs, Adam 1e-3, NLL",
            "batch_size": args.batch, "steps_per_chunk": args.chunk, "steps": args.steps,
            "host_threshold_bytes": paths["host"],
            "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
                       f"jax {jax.__version__} ({jax.default_backend()})",
        },
        "seconds": timings, "epoch_permutation_seconds": perm_seconds,
        "steps_per_second": rate,
        "host_over_device": rate["host"] / rate["device"],
        "bit_identical_params": identical,
        "final_train_loss": {name: float(r.history["train_loss"][-1]) for name, r in finals.items()},
    }
    os.makedirs(RESULTS, exist_ok=True)
    with open(os.path.join(RESULTS, "host_data.json"), "w") as f:
        json.dump(result, f, indent=2)
    lines = [
        f"# Training from host memory: {result['setup']['data']}",
        "",
        f"{result['setup']['model']}, batch {args.batch}, chunks of {args.chunk} steps; "
        f"{result['setup']['machine']}. steps/s of a whole {args.steps}-step fit (data check, transfers and "
        f"epoch permutations included; compiled beforehand by a one-chunk run, whose time is shown).",
        "",
        "| path | steps/s | fit (s) | first chunk with compile (s) | final train loss |",
        "|---|---:|---:|---:|---:|",
    ]
    for name in paths:
        t = timings[name]
        lines.append(f"| {name} | {rate[name]:.1f} | {t['fit']:.1f} | {t['first_chunk_with_compile']:.1f} | "
                     f"{result['final_train_loss'][name]:.4f} |")
    lines += ["", f"host / device throughput: **{result['host_over_device']:.2f}**; "
              f"params bit-identical: **{identical}**. One epoch permutation of {args.rows} rows takes "
              f"{perm_seconds:.1f} s; both paths draw it once per epoch (the device path hands it from chunk "
              f"to chunk).", ""]
    with open(os.path.join(RESULTS, "host_data.md"), "w") as f:
        f.write("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
