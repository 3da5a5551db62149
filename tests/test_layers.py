"""Layers point one way: ``evals`` -> ``unlearn`` -> ``proxy`` -> ``guards`` -> ``index``.

Two checks: importing every module of a layer in a fresh interpreter loads nothing from a layer above
it, and a scan of the sources finds no import of a layer above (function-level and ``TYPE_CHECKING``
imports included). A module named by a string for lazy CLI registration is not an import.
``unlearn`` sits beside ``evals``; ``evals`` builds the weight-unlearned baselines with it, so
``unlearn`` must not import ``evals``.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
RANK = {"index": 0, "guards": 1, "proxy": 2, "unlearn": 3, "evals": 4}
OLD_TOP_LEVEL = set(RANK)  # the import names before the `obliviate.` root; none may come back
# Modules whose import takes over 10 s: checked in a fresh interpreter by the slow test only (the
# source scan covers them in the fast lane).
HEAVY = {"obliviate.guards.vllm_plugin"}  # imports vllm


def _package_dirs() -> dict[str, Path]:
    config = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    mapping = config["tool"]["setuptools"]["package-dir"]
    return {layer: REPO_ROOT / mapping[f"obliviate.{layer}"] for layer in RANK}


def _modules(layer: str) -> dict[str, Path]:
    """Every module of a layer: dotted name -> source file."""
    root = _package_dirs()[layer]
    found = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(["obliviate", layer, *parts])] = path
    return found


def _layer_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if parts[0] == "obliviate" and len(parts) > 1 and parts[1] in RANK else None


def _above(layer: str) -> list[str]:
    return [f"obliviate.{other}" for other, rank in RANK.items() if rank > RANK[layer]]


def _imports(module: str, path: Path) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in the file, relative ones resolved."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            # `from obliviate import evals` imports the layer itself
            names = [f"{base}.{alias.name}" for alias in node.names] if base == "obliviate" else [base]
            found += [(node.lineno, name) for name in names]
    return found


# Runs in a fresh interpreter: imports the modules one by one and stops at the first that loads a
# module from a layer above.
_PROBE = """
import importlib, json, sys
above = json.loads(sys.argv[1])
for name in json.loads(sys.argv[2]):
    importlib.import_module(name)
    leaked = sorted(m for m in sys.modules if any(m == p or m.startswith(p + ".") for p in above))
    if leaked:
        print(json.dumps({"module": name, "leaked": leaked}))
        break
else:
    print(json.dumps(None))
"""


def _probe(layer: str, modules: list[str], cwd: Path) -> dict | None:
    done = subprocess.run(
        [sys.executable, "-c", _PROBE, json.dumps(_above(layer)), json.dumps(modules)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, f"importing {layer} failed:\n{done.stderr[-4000:]}"
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("layer", ["index", "guards", "proxy", "unlearn"])
def test_importing_a_layer_loads_nothing_above_it(layer: str, tmp_path: Path) -> None:
    modules = [name for name in _modules(layer) if name not in HEAVY]
    leak = _probe(layer, modules, tmp_path)
    assert leak is None, f"importing {leak['module']} loaded a layer above {layer}: {leak['leaked']}"


@pytest.mark.slow  # imports vllm
@pytest.mark.parametrize("module", sorted(HEAVY))
def test_heavy_module_loads_nothing_above_it(module: str, tmp_path: Path) -> None:
    layer = _layer_of(module)
    assert layer is not None
    leak = _probe(layer, [module], tmp_path)
    assert leak is None, f"importing {module} loaded a layer above {layer}: {leak['leaked']}"


def test_every_module_is_probed() -> None:
    """The fresh-interpreter test sees every module (HEAVY names real modules, layers are not empty)."""
    everything = {name for layer in RANK for name in _modules(layer)}
    assert not HEAVY - everything, HEAVY - everything
    for layer in RANK:
        assert f"obliviate.{layer}" in everything, f"{layer}/ has no __init__.py"


def test_no_module_imports_a_layer_above_it() -> None:
    violations = []
    for layer in RANK:
        for module, path in _modules(layer).items():
            for line, imported in _imports(module, path):
                target = _layer_of(imported)
                if target is not None and RANK[target] > RANK[layer]:
                    violations.append(f"{path.relative_to(REPO_ROOT)}:{line} imports {imported}")
    assert not violations, "imports from a layer above:\n" + "\n".join(violations)


def test_serving_layers_import_no_evals_or_unlearn() -> None:
    """The done-when of issue 17 in its own words: proxy/, guards/, index/ never import evals or unlearn."""
    violations = []
    for layer in ("index", "guards", "proxy"):
        for module, path in _modules(layer).items():
            violations += [
                f"{path.relative_to(REPO_ROOT)}:{line} imports {imported}"
                for line, imported in _imports(module, path)
                if _layer_of(imported) in ("evals", "unlearn")
            ]
    assert not violations, "\n".join(violations)


def test_nothing_imports_the_old_top_level_names() -> None:
    """`import proxy` and friends would load another distribution's package (or nothing)."""
    roots = [*_package_dirs().values(), REPO_ROOT / "obliviate", REPO_ROOT / "tests", REPO_ROOT / "bench"]
    violations = []
    for root in roots:
        for path in sorted(root.rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                else:
                    continue
                violations += [
                    f"{path.relative_to(REPO_ROOT)}:{node.lineno} imports {name}"
                    for name in names
                    if name.split(".")[0] in OLD_TOP_LEVEL
                ]
    assert not violations, "\n".join(violations)
