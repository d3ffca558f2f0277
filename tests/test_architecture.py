"""The engine's layering (docs/ARCHITECTURE.md), checked on the code as it is: import-linter's contracts in
pyproject.toml, and no module reaching into another's private names."""

from __future__ import annotations

import ast
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "workbench"


def test_imports_run_down_the_layers() -> None:
    lint = Path(sys.executable).parent / "lint-imports"
    if not lint.exists():
        pytest.fail("import-linter is not installed (it is a dev dependency: pip install -e .[dev])")
    proc = subprocess.run([str(lint), "--no-cache"], cwd=PACKAGE.parent, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert "0 broken" in proc.stdout


def _is_module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def private_uses(path: Path) -> list[str]:
    """`from workbench… import _name`, and `module._name` on a workbench module imported by `path`."""
    tree = ast.parse(path.read_text(), str(path))
    modules: set[str] = set()
    found: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("workbench"):
            for alias in node.names:
                if alias.name.startswith("_") and not alias.name.startswith("__"):
                    found.append(f"{path.name}:{node.lineno}: from {node.module} import {alias.name}")
                elif _is_module(f"{node.module}.{alias.name}"):
                    modules.add(alias.asname or alias.name)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("workbench.") and alias.asname:
                    modules.add(alias.asname)
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in modules
                and node.attr.startswith("_") and not node.attr.startswith("__")):
            found.append(f"{path.name}:{node.lineno}: {node.value.id}.{node.attr}")
    return found


def test_no_module_uses_another_modules_private_names() -> None:
    found = [use for path in sorted(PACKAGE.rglob("*.py")) for use in private_uses(path)]
    assert found == []


def test_the_private_name_check_sees_both_forms(tmp_path: Path) -> None:
    probe = tmp_path / "probe.py"
    probe.write_text("from workbench.solver import solver\nfrom workbench.build import _internal\n"
                     "solver._key_digest(None)\n")
    assert private_uses(probe) == ["probe.py:2: from workbench.build import _internal",
                                   "probe.py:3: solver._key_digest"]


def test_every_module_has_a_layer() -> None:
    # import-linter only checks the modules its layers name: a new module outside them would escape the check
    import tomllib

    import grimp

    config = tomllib.loads((PACKAGE.parent / "pyproject.toml").read_text())["tool"]["importlinter"]
    layers = next(c for c in config["contracts"] if c["id"] == "layers")["layers"]
    named = [m.strip() for layer in layers for m in layer.split(":")]
    split_packages = {"workbench", "workbench.progress", "workbench.history", "workbench.image", "workbench.cache",
                      "workbench.imagelayers", "workbench.remote", "workbench.dap"}
    graph = grimp.build_graph("workbench")
    unlayered = sorted(m for m in graph.modules if m not in split_packages
                       and not any(m == n or m.startswith(n + ".") for n in named))
    assert unlayered == []


def test_every_output_type_has_an_exporter() -> None:
    from workbench.exporter.outputs import EXPORTERS
    from workbench.request import OUTPUT_TYPES

    assert sorted(EXPORTERS) == sorted(OUTPUT_TYPES)
