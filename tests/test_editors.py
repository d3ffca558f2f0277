"""The editor side of `workbench dap`: the VS Code extension in editors/vscode/ and the README's editor
snippets agree with the launch attributes the adapter reads, and the extension starts `workbench dap`."""

from __future__ import annotations

import ast
import json
import re
import shutil
import subprocess
import textwrap
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
EXTENSION = REPO / "editors" / "vscode"
README = REPO / "README.md"
LAUNCH_PY = REPO / "workbench" / "dap" / "launch.py"
HOST_JS = Path(__file__).with_name("vscode_host.js")
SECTION = "## Debugging from your editor (DAP)"
# Read by the extension itself, never sent on: the adapter's working directory (Docker DX has it too).
EDITOR_ONLY = {"cwd"}
CONFIG_KEYS = {"type", "request", "name"}

needs_node = pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")


def adapter_attributes(source: str) -> set[str]:
    """The launch attributes `parse_launch` reads: `arguments.get("k")` / `arguments["k"]`, also through a
    `for key in ("a", "b")` loop over `arguments.get(key)`."""
    func = next(n for n in ast.walk(ast.parse(source))
                if isinstance(n, ast.FunctionDef) and n.name == "parse_launch")
    keys: set[str] = set()
    loops: dict[str, list[str]] = {}
    for node in ast.walk(func):
        if isinstance(node, ast.For) and isinstance(node.target, ast.Name) and isinstance(node.iter, ast.Tuple):
            loops[node.target.id] = [e.value for e in node.iter.elts
                                     if isinstance(e, ast.Constant) and isinstance(e.value, str)]
    for node in ast.walk(func):
        key: ast.expr | None = None
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get"
                and isinstance(node.func.value, ast.Name) and node.func.value.id == "arguments" and node.args):
            key = node.args[0]
        elif isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name) and node.value.id == "arguments":
            key = node.slice
        if isinstance(key, ast.Constant) and isinstance(key.value, str):
            keys.add(key.value)
        elif isinstance(key, ast.Name) and key.id in loops:
            keys.update(loops[key.id])
    return keys


def accepted_attributes() -> set[str]:
    try:
        from workbench.dap import launch
    except ImportError:
        pytest.skip("workbench/dap/launch.py is not there")
    public = getattr(launch, "LAUNCH_ATTRIBUTES", None)
    return set(public) if public is not None else adapter_attributes(LAUNCH_PY.read_text())


def package() -> dict[str, Any]:
    return json.loads((EXTENSION / "package.json").read_text())


def launch_properties(pkg: dict[str, Any]) -> dict[str, set[str]]:
    return {d["type"]: set(d["configurationAttributes"]["launch"]["properties"])
            for d in pkg["contributes"]["debuggers"]}


def attribute_mismatches(pkg: dict[str, Any], accepted: set[str]) -> list[str]:
    """One line per debug type whose launch attributes (less the editor-only ones) differ from the adapter's."""
    out = []
    for type_, props in launch_properties(pkg).items():
        if props - EDITOR_ONLY != accepted:
            out.append(f"{type_}: extra {sorted(props - EDITOR_ONLY - accepted)}, "
                       f"missing {sorted(accepted - props)}")
    return out


def section(text: str) -> str:
    start = text.index(SECTION)
    end = text.find("\n## ", start + len(SECTION))
    return text[start:end if end >= 0 else None]


def indented_blocks(text: str) -> list[str]:
    """The Markdown code blocks of `text` that are indented by four spaces, dedented."""
    blocks: list[str] = []
    cur: list[str] = []
    for line in text.splitlines() + [""]:
        if line.startswith("    ") or (cur and not line.strip()):
            cur.append(line)
        else:
            if cur:
                blocks.append(textwrap.dedent("\n".join(cur)).strip())
            cur = []
    return [b for b in blocks if b]


def json_snippets(text: str) -> list[Any]:
    return [json.loads(b) for b in indented_blocks(text) if b.startswith("{")]


def snippet_problems(snippets: list[Any], types: set[str], attributes: set[str]) -> list[str]:
    """What is wrong with the launch.json snippets: none found, a foreign type, an unknown attribute."""
    if not snippets:
        return ["no launch.json snippet"]
    out = []
    for snippet in snippets:
        for config in snippet.get("configurations", [snippet]):
            if config.get("type") not in types:
                out.append(f"type {config.get('type')!r} is not one the extension contributes ({sorted(types)})")
            if config.get("request") != "launch":
                out.append(f"request {config.get('request')!r}: expected 'launch'")
            unknown = set(config) - CONFIG_KEYS - attributes
            if unknown:
                out.append(f"{config.get('name')}: attributes the adapter does not read: {sorted(unknown)}")
    return out


def test_package_json_launch_attributes_are_the_adapters() -> None:
    accepted = accepted_attributes()
    assert {"dockerfile", "contextPath", "target", "args", "stopOnEntry"} <= accepted
    assert attribute_mismatches(package(), accepted) == []


def test_attribute_check_catches_drift() -> None:
    pkg = package()
    accepted = accepted_attributes()
    pkg["contributes"]["debuggers"][0]["configurationAttributes"]["launch"]["properties"]["builder"] = {}
    assert attribute_mismatches(pkg, accepted) == ["workbench: extra ['builder'], missing []"]
    assert attribute_mismatches(package(), accepted | {"platform"})


def test_adapter_attributes_parse_the_loop_and_gets() -> None:
    src = textwrap.dedent('''
        def parse_launch(arguments, cwd):
            x = arguments.get("args", [])
            for key in ("dockerfile", "target"):
                arguments.get(key)
            return arguments["noDebug"], other.get("nope")
    ''')
    assert adapter_attributes(src) == {"args", "dockerfile", "target", "noDebug"}


def test_package_json_contributes_the_debugger() -> None:
    pkg = package()
    debuggers = {d["type"]: d for d in pkg["contributes"]["debuggers"]}
    assert set(debuggers) == {"workbench", "dockerfile"}
    assert all(d["languages"] == ["dockerfile"] for d in debuggers.values())
    assert pkg["contributes"]["breakpoints"] == [{"language": "dockerfile"}]
    assert pkg["contributes"]["configuration"]["properties"]["workbench.path"]["default"] == "workbench"
    assert {"onDebugResolve:workbench", "onDebugResolve:dockerfile"} <= set(pkg["activationEvents"])
    assert (EXTENSION / pkg["main"]).is_file()
    for config in debuggers["workbench"]["initialConfigurations"]:
        assert config["type"] == "workbench" and set(config) - CONFIG_KEYS <= accepted_attributes()


@needs_node
def test_extension_js_is_valid_javascript(tmp_path: Path) -> None:
    ok = subprocess.run(["node", "--check", str(EXTENSION / "extension.js")], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    broken = tmp_path / "broken.js"
    broken.write_text((EXTENSION / "extension.js").read_text() + "\n}\n")
    assert subprocess.run(["node", "--check", str(broken)], capture_output=True).returncode != 0


def host(**scenario: Any) -> dict[str, Any]:
    full = {"dockerDx": False, "setting": None, "folder": None, "configuration": {}, "editorFile": None,
            "editorLanguage": None} | scenario
    out = subprocess.run(["node", str(HOST_JS), str(EXTENSION / "extension.js"), json.dumps(full)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    result: dict[str, Any] = json.loads(out.stdout)
    return result


@needs_node
def test_extension_starts_workbench_dap_for_both_types_without_docker_dx() -> None:
    got = host(setting=".venv/bin/workbench", folder="/ws", configuration={"cwd": "/ws/app"},
               editorFile="/ws/app/Dockerfile", editorLanguage="dockerfile")
    assert got["types"] == ["dockerfile", "workbench"]
    for type_ in ("dockerfile", "workbench"):
        assert got["adapters"][type_] == {"command": "/ws/.venv/bin/workbench", "args": ["dap"],
                                          "options": {"cwd": "/ws/app"}}
        # F5 without launch.json in an open Dockerfile: that file, the workspace as context.
        assert got["resolved"][type_] == {"type": type_, "request": "launch", "name": "Workbench: debug build",
                                          "dockerfile": "/ws/app/Dockerfile", "contextPath": "${workspaceFolder}"}


@needs_node
def test_extension_leaves_dockerfile_type_to_docker_dx() -> None:
    got = host(dockerDx=True, folder="/ws")
    assert got["types"] == ["workbench"]
    assert got["adapters"]["workbench"] == {"command": "workbench", "args": ["dap"], "options": {"cwd": "/ws"}}
    assert any('"type": "workbench"' in line for line in got["log"])
    assert got["resolved"]["workbench"] == {}  # no Dockerfile open: VS Code asks for a launch.json


def test_readme_editor_snippets_parse_and_name_the_extensions_type() -> None:
    types = set(launch_properties(package()))
    attributes = accepted_attributes() | EDITOR_ONLY
    for text in (section(README.read_text()), (EXTENSION / "README.md").read_text()):
        assert snippet_problems(json_snippets(text), types, attributes) == []
    bad = {"type": "docker", "request": "launch", "name": "x", "builder": "b"}
    assert len(snippet_problems([bad], types, attributes)) == 2
    assert snippet_problems([], types, attributes) == ["no launch.json snippet"]


def test_readme_neovim_and_emacs_snippets_use_the_adapters_attributes() -> None:
    text = section(README.read_text())
    blocks = indented_blocks(text)
    lua = next(b for b in blocks if "dap.adapters.workbench" in b)
    elisp = next(b for b in blocks if "dape-configs" in b)
    accepted = accepted_attributes()
    assert re.search(r'args = \{ "dap" \}', lua)
    lua_config = lua[lua.index("dap.configurations.dockerfile"):]
    lua_keys = set(re.findall(r"^\s*(\w+) = ", lua_config, re.M)) - CONFIG_KEYS
    assert lua_keys and lua_keys <= accepted, lua_keys - accepted
    el_keys = set(re.findall(r":(\w+)", elisp)) - CONFIG_KEYS
    assert el_keys and el_keys <= accepted, el_keys - accepted
    assert 'command-args ("dap")' in elisp
