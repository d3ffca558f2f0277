"""CDI devices in real runc builds: harmless host nodes (/dev/null as /dev/fake0), env edits, a bind mount
and a hook; grants, denials, aliases, wildcards, classes, optional devices, broken specs, the cache key,
the config file, `workbench devices` and the grant events."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.conftest import WORKBENCH, wb

LABS = "# syntax=docker/dockerfile:1.14-labs\nFROM localhost:5055/busybox\n"
GATED = {
    "cdiVersion": "0.6.0", "kind": "example.com/gated",
    "devices": [
        {"name": "a", "containerEdits": {"env": ["GATED=a"]}},
        {"name": "b", "annotations": {"org.mobyproject.buildkit.device.class": "fast"},
         "containerEdits": {"env": ["GATED=b"]}},
        {"name": "c", "annotations": {"org.mobyproject.buildkit.device.class": "fast"},
         "containerEdits": {"env": ["GATED_C=1"]}},
    ],
}


def fake_spec(data: Path, hook_out: Path, extra_devices: str = "", spec_env: str = "FAKE_SPEC=1") -> str:
    return f"""cdiVersion: "0.6.0"
kind: example.com/fake
annotations:
  org.mobyproject.buildkit.device.autoallow: true
containerEdits:
  env: [{spec_env}]
devices:
{extra_devices}  - name: null0
    containerEdits:
      env: [FAKE_DEV=null0]
      deviceNodes:
        - path: /dev/fake0
          hostPath: /dev/null
      mounts:
        - hostPath: {data}
          containerPath: /dev/cdi-data
          options: [bind, ro]
      hooks:
        - hookName: poststop
          path: /bin/sh
          args: [sh, -c, "cat > {hook_out}"]
"""


@pytest.fixture(scope="module")
def shared_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cdi") / "root"


@pytest.fixture()
def cdi(tmp_path: Path) -> Path:
    """A spec dir: an auto-allowed fake device, a gated kind, and a broken file beside them."""
    d = tmp_path / "cdi"
    d.mkdir()
    data = tmp_path / "data"
    data.mkdir()
    (data / "hello").write_text("from the host\n")
    (d / "fake.yaml").write_text(fake_spec(data, tmp_path / "hook.json"))
    (d / "gated.json").write_text(json.dumps(GATED))
    (d / "broken.yaml").write_text('cdiVersion: "0.6.0"\nkind: example.com/broken\ndevices:\n- name: x\n'
                                   "  containerEdits:\n    env: [NOEQUALS]\n")
    return d


def step_number(plain: str) -> str:
    """The `#N` of the RUN step in plain progress output."""
    return next(line.split()[0][1:] for line in plain.splitlines() if " [2/2] RUN " in line)


def build(tmp_path: Path, root: Path, cdi: Path, run: str, *args: str, check: bool = True,
          name: str = "out") -> tuple[subprocess.CompletedProcess[str], Path]:
    ctx = tmp_path / f"ctx-{name}"
    ctx.mkdir(exist_ok=True)
    (ctx / "Dockerfile").write_text(LABS + run + "\n")
    out = tmp_path / name
    proc = wb(str(ctx), "--cdi-spec-dir", str(cdi), "-o", f"type=local,dest={out}", *args, root=root, check=check)
    return proc, out


def test_an_auto_allowed_device_needs_no_grant(tmp_path: Path, registry: str, shared_root: Path, cdi: Path) -> None:
    proc, out = build(tmp_path, shared_root, cdi,
                      "RUN --device=example.com/fake sh -c 'env | grep ^FAKE_ | sort > /env; "
                      "test -c /dev/fake0 && echo x > /dev/fake0 && stat -c %t:%T /dev/fake0 > /node; "
                      "cat /dev/cdi-data/hello > /data; ls -d /dev/cdi-data /dev/fake0 > /in-dev'")
    assert (out / "env").read_text() == "FAKE_DEV=null0\nFAKE_SPEC=1\n"  # spec-level and device edits
    assert (out / "node").read_text() == "1:3\n"  # type and numbers from the host's /dev/null
    assert (out / "data").read_text() == "from the host\n"
    assert not (out / "dev" / "fake0").exists()
    hook = json.loads((tmp_path / "hook.json").read_text())  # the poststop hook ran on the host with the state
    assert hook["status"] == "stopped" and hook["id"].startswith("wb-")
    n = step_number(proc.stderr)
    assert f"#{n} device example.com/fake=null0 (requested as example.com/fake) granted: auto-allow (annotation)" \
        in proc.stderr
    # the broken spec beside the good ones is one clear warning, naming the file and the field
    assert (f"CDI spec {cdi}/broken.yaml: devices[0].containerEdits.env[0]: invalid environment variable "
            "'NOEQUALS' (expected NAME=VALUE)") in proc.stderr


def test_a_gated_device_needs_allow(tmp_path: Path, registry: str, shared_root: Path, cdi: Path) -> None:
    run = "RUN --device=example.com/gated=a sh -c 'echo $GATED > /g'"
    denied, _ = build(tmp_path, shared_root, cdi, run, check=False)
    assert denied.returncode == 1
    assert "ERROR: failed to solve: failed to load LLB: device example.com/gated=a is requested by the build but " \
           "not allowed" in denied.stderr  # BuildKit's words
    assert "device example.com/gated=a denied: not auto-allowed; grant it with --allow device=example.com/gated=a" \
        in denied.stderr
    _, out = build(tmp_path, shared_root, cdi, run, "--allow", "device=example.com/gated=a")
    assert (out / "g").read_text() == "a\n"
    _, out = build(tmp_path, shared_root, cdi, run, "--allow", "device", name="all")
    assert (out / "g").read_text() == "a\n"


def test_a_malformed_allow_device_is_a_usage_error(tmp_path: Path, cdi: Path) -> None:
    proc = wb(str(tmp_path), "--allow", "device=example.com/gated=a,name=x", root=tmp_path / "root", check=False)
    assert proc.returncode == 2
    assert 'unknown device config key "name"' in proc.stderr


def test_the_alias_form_rewrites_the_request(tmp_path: Path, registry: str, shared_root: Path, cdi: Path) -> None:
    run = "RUN --device=mygpu sh -c 'echo $GATED > /g'"
    proc, out = build(tmp_path, shared_root, cdi, run, "--allow", "device=example.com/gated=b,alias=mygpu")
    assert (out / "g").read_text() == "b\n"
    assert "device example.com/gated=b (requested as mygpu) granted: --allow device=example.com/gated=b,alias=mygpu" \
        in proc.stderr
    denied, _ = build(tmp_path, shared_root, cdi, run, check=False)
    assert 'invalid device "mygpu"' in denied.stderr  # without the alias grant it is no device name at all


def test_wildcard_and_class(tmp_path: Path, registry: str, shared_root: Path, cdi: Path) -> None:
    run = "RUN --device=example.com/gated={} sh -c 'env | grep ^GATED | sort > /g'"
    denied, _ = build(tmp_path, shared_root, cdi, run.format("*"), check=False)
    assert ("devices example.com/gated=a, example.com/gated=b, example.com/gated=c are requested by the build "
            "but not allowed") in denied.stderr
    _, out = build(tmp_path, shared_root, cdi, run.format("*"), "--allow", "device=example.com/gated=*")
    assert (out / "g").read_text() == "GATED=b\nGATED_C=1\n"  # b's GATED replaced a's
    _, out = build(tmp_path, shared_root, cdi, run.format("fast"), "--allow", "device=example.com/gated=fast",
                   name="class")
    assert (out / "g").read_text() == "GATED=b\nGATED_C=1\n"  # the devices whose class annotation is "fast"


def test_optional_and_required(tmp_path: Path, registry: str, shared_root: Path, cdi: Path) -> None:
    proc, out = build(tmp_path, shared_root, cdi, "RUN --device=example.com/none sh -c 'echo ok > /o'")
    assert (out / "o").read_text() == "ok\n"
    assert 'optional device "example.com/none" is not registered' in proc.stderr
    failed, _ = build(tmp_path, shared_root, cdi, "RUN --device=example.com/none,required sh -c 'echo ok > /o'",
                      check=False)
    assert failed.returncode == 1
    assert 'required device "example.com/none" is not registered' in failed.stderr


def test_the_cache_key_holds_the_granted_devices_not_the_spec_contents(
        tmp_path: Path, registry: str, shared_root: Path, cdi: Path) -> None:
    run = "RUN --device=example.com/fake sh -c 'echo $FAKE_DEV > /which'"
    build(tmp_path, shared_root, cdi, run)
    # BuildKit keys the step by its (rewritten) device list: editing a spec's edits keeps the cache
    (cdi / "fake.yaml").write_text(fake_spec(tmp_path / "data", tmp_path / "hook.json", spec_env="FAKE_SPEC=2"))
    again, _ = build(tmp_path, shared_root, cdi, run)
    assert f"#{step_number(again.stderr)} CACHED" in again.stderr
    # ...but a request that now resolves to another device runs again
    (cdi / "fake.yaml").write_text(fake_spec(tmp_path / "data", tmp_path / "hook.json", extra_devices=(
        "  - name: a0\n    containerEdits:\n      env: [FAKE_DEV=a0]\n")))
    moved, out = build(tmp_path, shared_root, cdi, run)
    assert "CACHE MISS: CDI devices changed: ['example.com/fake=null0'] → ['example.com/fake=a0']" in moved.stderr
    assert (out / "which").read_text() == "a0\n"


def test_the_config_file(tmp_path: Path, registry: str, shared_root: Path, cdi: Path) -> None:
    cfg = tmp_path / "workbench.toml"
    cfg.write_text(f'[cdi]\nspecDirs = ["{cdi}"]\nautoAllowed = ["example.com/gated=a"]\n')
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(LABS + "RUN --device=example.com/gated=a,required sh -c 'echo $GATED > /g'\n")
    proc = wb(str(ctx), "--config", str(cfg), "-o", f"type=local,dest={tmp_path / 'out'}", root=shared_root)
    assert (tmp_path / "out" / "g").read_text() == "a\n"
    assert "granted: auto-allow (config)" in proc.stderr
    cfg.write_text("[cdi]\ndisabled = true\n")
    env = dict(os.environ, WORKBENCH_CONFIG=str(cfg))
    disabled = subprocess.run(WORKBENCH + ["build", "--root", str(shared_root), "--progress", "plain", str(ctx)],
                              capture_output=True, text=True, env=env, timeout=120)
    assert disabled.returncode == 1
    assert f'required device "example.com/gated=a" is not registered (CDI is disabled in {cfg})' in disabled.stderr


def test_grant_events_in_rawjson(tmp_path: Path, registry: str, shared_root: Path, cdi: Path) -> None:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(LABS + "RUN --device=example.com/fake --device=example.com/gated=a "
                                           "--device=example.com/none true\n")
    proc = subprocess.run(WORKBENCH + ["build", "--root", str(shared_root), "--progress", "rawjson", str(ctx),
                                       "--cdi-spec-dir", str(cdi), "--allow", "device=example.com/gated=a"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    docs = [json.loads(line) for line in proc.stderr.splitlines() if line.startswith("{")]
    grants = [d["workbench"]["device"] for d in docs if "device" in d.get("workbench", {})]
    step = next(v["digest"] for d in docs for v in d.get("vertexes", []) if v["name"].startswith("[2/2] RUN"))
    assert [(g["vertex"], g["request"], g["devices"], g["granted"], g["how"]) for g in grants] == [
        (step, "example.com/fake", ["example.com/fake=null0"], True, "auto-allow (annotation)"),
        (step, "example.com/gated=a", ["example.com/gated=a"], True, "--allow device=example.com/gated=a"),
        (step, "example.com/none", [], False, "optional device is not registered"),
    ]


def test_workbench_devices_lists_kind_annotations_and_auto_allow(tmp_path: Path, cdi: Path) -> None:
    proc = subprocess.run(WORKBENCH + ["devices", "--cdi-spec-dir", str(cdi)], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0
    assert proc.stdout == (
        f"Spec dirs:\t{cdi}\n"
        "Devices:\n"
        "\tName:\t\texample.com/fake=null0\n\tKind:\t\texample.com/fake\n\tAutoAllow:\ttrue (annotation)\n"
        "\tAnnotations:\n\t\torg.mobyproject.buildkit.device.autoallow:\ttrue\n\n"
        "\tName:\t\texample.com/gated=a\n\tKind:\t\texample.com/gated\n\tAutoAllow:\tfalse\n\n"
        "\tName:\t\texample.com/gated=b\n\tKind:\t\texample.com/gated\n\tAutoAllow:\tfalse\n"
        "\tAnnotations:\n\t\torg.mobyproject.buildkit.device.class:\tfast\n\n"
        "\tName:\t\texample.com/gated=c\n\tKind:\t\texample.com/gated\n\tAutoAllow:\tfalse\n"
        "\tAnnotations:\n\t\torg.mobyproject.buildkit.device.class:\tfast\n")
    assert f"WARNING: CDI spec {cdi}/broken.yaml: devices[0].containerEdits.env[0]" in proc.stderr
    as_json = subprocess.run(WORKBENCH + ["devices", "--cdi-spec-dir", str(cdi), "--format", "json"],
                             capture_output=True, text=True, timeout=60)
    rows = json.loads(as_json.stdout)
    assert [(r["name"], r["autoAllow"]) for r in rows] == [
        ("example.com/fake=null0", True), ("example.com/gated=a", False), ("example.com/gated=b", False),
        ("example.com/gated=c", False)]
