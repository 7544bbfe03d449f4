"""Every notebook in notebooks/ executes top to bottom (at its small CI size), and the
committed copy carries the outputs of a full-size run of its current code.

The notebooks read ``GENLEARN_NOTEBOOK_QUICK=1`` and shrink their data and
training budgets; their assertions (the properties they demonstrate) still run.
``scripts/execute_notebooks.py`` runs them at full size and commits the outputs
that the docs site renders.
"""

from __future__ import annotations

import glob
import importlib.util
import os

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

NOTEBOOKS = sorted(glob.glob(os.path.join(os.path.dirname(__file__), "..", "notebooks", "*.ipynb")))


def test_there_are_notebooks():
    names = [os.path.basename(p) for p in NOTEBOOKS]
    assert len(names) >= 1, "notebooks/ is empty"


# The default suite executes the first notebook (the API tour whose figure heads the README); the others
# (20-40 s each at CI size, most of it XLA compilation) run under `pytest -m slow` and at full size in
# scripts/execute_notebooks.py. Every notebook's committed outputs are checked against its code below.
_EXECUTED_BY_DEFAULT = ("01_flows_from_scratch.ipynb",)


def _executes(path):
    name = os.path.basename(path)
    return pytest.param(path, id=name, marks=() if name in _EXECUTED_BY_DEFAULT else pytest.mark.slow)


@pytest.mark.parametrize("path", [_executes(p) for p in NOTEBOOKS])
def test_notebook_executes(path, tmp_path, monkeypatch):
    monkeypatch.setenv("GENLEARN_NOTEBOOK_QUICK", "1")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    nb = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(nb, timeout=300, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute()  # raises CellExecutionError with the failing cell's traceback
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
              if o.get("output_type") == "error"]
    assert not errors


def _execute_script():
    path = os.path.join(os.path.dirname(__file__), "..", "scripts", "execute_notebooks.py")
    spec = importlib.util.spec_from_file_location("execute_notebooks", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[os.path.basename(p) for p in NOTEBOOKS])
def test_committed_notebook_has_the_full_size_outputs_of_its_current_code(path):
    nb = nbformat.read(path, as_version=4)
    record = nb.metadata.get("genlearn")
    name = os.path.basename(path)
    assert record is not None, f"{name} was not executed by scripts/execute_notebooks.py"
    assert record["executed"] == "full", f"{name} was committed from a quick run"
    assert record["source_sha256"] == _execute_script().source_digest(nb), (
        f"{name}: its code changed since its outputs were made; rerun "
        f"`python scripts/execute_notebooks.py {name[:2]}`")
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.get("execution_count") for c in code), f"{name}: a code cell was not executed"
    outputs = [o for c in code for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"], f"{name}: an error output"
    assert any("image/png" in o.get("data", {}) for o in outputs), f"{name}: no figure in the outputs"
