"""Every third-party module that genlearn/ imports is a runtime dependency in pyproject.toml (issue 14).

The imports of every ``genlearn/**/*.py`` are read with ``ast`` (module level or inside
functions alike: a lazy import still runs when the feature is used), mapped to their
distributions with ``importlib.metadata.packages_distributions()`` and checked against
``[project] dependencies``; standard-library modules are exempt.
"""

import ast
import importlib.metadata
import re
import sys
import tomllib
from pathlib import Path

from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _third_party_imports() -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for path in sorted((ROOT / "genlearn").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top != "genlearn" and top not in sys.stdlib_module_names:
                    found.setdefault(top, set()).add(str(path.relative_to(ROOT)))
    return found


def test_every_imported_module_is_a_declared_dependency():
    declared = {_norm(Requirement(r).name)
                for r in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]}
    dists = importlib.metadata.packages_distributions()
    imports = _third_party_imports()
    assert {"jax", "numpy", "ott"} <= set(imports)  # the scan itself works
    missing = {}
    for module, files in imports.items():
        candidates = {_norm(d) for d in dists.get(module, [])}
        if not candidates & declared:
            missing[module] = (sorted(candidates) or ["<not installed>"], sorted(files))
    assert not missing, f"imported by genlearn/ but not in pyproject.toml dependencies: {missing}"


def test_every_declared_dependency_is_used():
    """The reverse direction: a dependency nothing imports (chex, before issue 14) is dead weight.

    jaxlib is exempt: jax needs it and nothing imports it by name.
    """
    dists = importlib.metadata.packages_distributions()
    used = {_norm(d) for module in _third_party_imports() for d in dists.get(module, [])}
    declared = {_norm(Requirement(r).name)
                for r in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]}
    assert declared - used - {"jaxlib"} == set()
