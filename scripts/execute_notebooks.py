"""Execute the notebooks at full size and commit them with their outputs.

    python scripts/execute_notebooks.py                  # every notebook, in place
    python scripts/execute_notebooks.py 07 08            # those whose name starts with 07 or 08
    python scripts/execute_notebooks.py --quick --out /tmp/nb   # the CI size, written elsewhere

Each notebook runs top to bottom in a fresh kernel (``GENLEARN_NOTEBOOK_QUICK`` unset, so at full
size) in a scratch working directory. The executed notebook is written back with its outputs and a
``metadata.genlearn`` record: whether it ran quick or full, the seconds it took, the jax version and
the SHA-256 of its code cells. ``tests/test_notebooks.py`` checks that record against the current
sources, so a notebook edited without being re-executed fails the suite.

Cells tagged ``readme-figure`` have their first PNG output written to ``docs/figures/<notebook>.png``;
README's tour shows those figures.
"""

from __future__ import annotations

import argparse
import base64
import glob
import hashlib
import os
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOK_DIR = os.path.join(ROOT, "notebooks")
FIGURE_DIR = os.path.join(ROOT, "docs", "figures")
README_TAG = "readme-figure"


def source_digest(nb) -> str:
    """SHA-256 of the notebook's code cells, in order (what the outputs were computed from)."""
    h = hashlib.sha256()
    for cell in nb.cells:
        if cell.cell_type == "code":
            h.update(cell.source.encode("utf-8"))
            h.update(b"\0")
    return h.hexdigest()


def execute(path: str, *, quick: bool, timeout: int):
    import jax
    import nbclient
    import nbformat

    nb = nbformat.read(path, as_version=4)
    env_before = os.environ.get("GENLEARN_NOTEBOOK_QUICK")
    if quick:
        os.environ["GENLEARN_NOTEBOOK_QUICK"] = "1"
    else:
        os.environ.pop("GENLEARN_NOTEBOOK_QUICK", None)
    # The kernel's inline backend embeds each figure as a PNG output; a non-interactive MPLBACKEND
    # (Agg, as CI sets) would silently drop them.
    os.environ.pop("MPLBACKEND", None)
    # The kernel imports this checkout's genlearn, whatever the environment has installed.
    os.environ["PYTHONPATH"] = os.pathsep.join([ROOT] + [p for p in [os.environ.get("PYTHONPATH")] if p])
    t0 = time.time()
    try:
        with tempfile.TemporaryDirectory() as scratch:
            client = nbclient.NotebookClient(nb, timeout=timeout, kernel_name="python3",
                                             resources={"metadata": {"path": scratch}})
            client.execute()
    finally:
        if env_before is None:
            os.environ.pop("GENLEARN_NOTEBOOK_QUICK", None)
        else:
            os.environ["GENLEARN_NOTEBOOK_QUICK"] = env_before
    seconds = time.time() - t0
    for cell in nb.cells:  # per-cell timestamps would make every re-execution a diff
        cell.metadata.pop("execution", None)
    nb.metadata["genlearn"] = {
        "executed": "quick" if quick else "full",
        "seconds": round(seconds, 1),
        "jax": jax.__version__,
        "source_sha256": source_digest(nb),
    }
    return nb, seconds


def readme_figures(nb, stem: str, figure_dir: str) -> list[str]:
    written = []
    for cell in nb.cells:
        if cell.cell_type != "code" or README_TAG not in cell.metadata.get("tags", []):
            continue
        for out in cell.get("outputs", []):
            png = out.get("data", {}).get("image/png")
            if png:
                os.makedirs(figure_dir, exist_ok=True)
                dest = os.path.join(figure_dir, f"{stem}.png")
                with open(dest, "wb") as f:
                    f.write(base64.b64decode(png))
                written.append(dest)
                break
    return written


def main(argv=None) -> int:
    import nbformat

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("prefixes", nargs="*", help="run only notebooks whose file name starts with one of these")
    p.add_argument("--quick", action="store_true", help="the CI size (GENLEARN_NOTEBOOK_QUICK=1)")
    p.add_argument("--out", default=None, help="write executed notebooks here instead of in place")
    p.add_argument("--timeout", type=int, default=3600, help="per-cell timeout in seconds")
    args = p.parse_args(argv)

    paths = sorted(glob.glob(os.path.join(NOTEBOOK_DIR, "*.ipynb")))
    if args.prefixes:
        paths = [q for q in paths if any(os.path.basename(q).startswith(s) for s in args.prefixes)]
    if not paths:
        print("no notebook matches", args.prefixes, file=sys.stderr)
        return 2
    out_dir = args.out or NOTEBOOK_DIR
    fig_dir = FIGURE_DIR if args.out is None else os.path.join(out_dir, "figures")
    os.makedirs(out_dir, exist_ok=True)
    for path in paths:
        name = os.path.basename(path)
        print(f"{name}: executing ({'quick' if args.quick else 'full'} size)", flush=True)
        nb, seconds = execute(path, quick=args.quick, timeout=args.timeout)
        nbformat.write(nb, os.path.join(out_dir, name))
        figs = readme_figures(nb, os.path.splitext(name)[0], fig_dir)
        extra = f"; figure {', '.join(os.path.relpath(f, ROOT) for f in figs)}" if figs else ""
        print(f"{name}: {seconds:.0f} s{extra}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
