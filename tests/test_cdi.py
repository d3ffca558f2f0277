"""CDI without containers: spec files, the registry, resolution, grants, container edits, config, printers."""

from __future__ import annotations

import io
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

import pytest

from workbench.cdi.config import ConfigError, load_cdi_config
from workbench.cdi.entitlements import EntitlementError, merge_device_entitlements, parse_device_entitlement
from workbench.cdi.grants import DeviceDenied, check_step
from workbench.cdi.inject import InjectError, apply_edits, collect_edits
from workbench.cdi.registry import Registry
from workbench.cdi.resolve import DeviceError, find_device
from workbench.cdi.spec import VERSIONS, SpecError, parse_spec
from workbench.llb.ops import Device, ExecOp, ImageSource, Vertex
from workbench.progress.events import DeviceGrant, Event, VertexCached, VertexStarted
from workbench.progress.plain import PlainPrinter
from workbench.progress.rawjson import RawJsonPrinter

DEBIAN_CDI = Path("/usr/share/gocode/src/github.com/container-orchestrated-devices/container-device-interface/schema")

# BuildKit's own resolution fixtures (solver/llbsolver/cdidevices/fixtures), plus a gated kind.
MULTI = """cdiVersion: "0.6.0"
kind: "vendor1.com/devicemulti"
devices:
  - name: foo
    containerEdits: {env: [FOO=injected]}
  - name: bar
    containerEdits: {env: [BAR=injected]}
  - name: baz
    annotations: {org.mobyproject.buildkit.device.class: class1}
    containerEdits: {env: [BAZ=injected]}
  - name: qux
    containerEdits: {env: [QUX=injected]}
annotations:
  org.mobyproject.buildkit.device.autoallow: true
"""
CLASS = """cdiVersion: "0.6.0"
kind: "vendor1.com/deviceclass"
devices:
  - name: foo
    annotations: {org.mobyproject.buildkit.device.class: class1}
    containerEdits: {env: [FOO=injected]}
  - name: bar
    annotations: {org.mobyproject.buildkit.device.class: class1}
    containerEdits: {env: [BAR=injected]}
  - name: baz
    annotations: {org.mobyproject.buildkit.device.class: class2}
    containerEdits: {env: [BAZ=injected]}
"""
GATED = {"cdiVersion": "1.0.0", "kind": "vendor1.com/device",
         "devices": [{"name": "foo", "containerEdits": {"env": ["FOO=injected"]}},
                     {"name": "zed", "containerEdits": {"env": ["ZED=injected"]}}]}


@pytest.fixture()
def specs(tmp_path: Path) -> Path:
    d = tmp_path / "cdi"
    d.mkdir()
    (d / "vendor1-devicemulti.yaml").write_text(MULTI)
    (d / "vendor1-deviceclass.yaml").write_text(CLASS)
    (d / "vendor1-device.json").write_text(json.dumps(GATED))
    return d


# -- spec files ------------------------------------------------------------------------------------------------------


@pytest.mark.skipif(not DEBIAN_CDI.is_dir(), reason="Debian's CDI package (schema test data) is not installed")
def test_the_cdi_projects_own_test_specs() -> None:
    for good in sorted((DEBIAN_CDI / "testdata" / "good").glob("*.json")):
        spec = parse_spec(good.read_text(), str(good))
        assert spec.kind == "vendor.com/device" and spec.devices[0].name == "myDevice"
    example = parse_spec((DEBIAN_CDI / "testdata/good/spec-example.json").read_text(), "spec-example.json")
    assert example.edits.env == ("FOO=CDI_SPEC", "BAR=BARVALUE1")
    assert [h.hook_name for h in example.edits.hooks] == ["createContainer", "startContainer"]
    for bad in sorted((DEBIAN_CDI / "testdata" / "bad").glob("*.json")):
        with pytest.raises(SpecError, match="cdiVersion: required|no spec data"):
            parse_spec(bad.read_text(), str(bad))


@pytest.mark.parametrize("version", VERSIONS)
def test_every_supported_version_loads_as_json_and_yaml(version: str) -> None:
    doc = {"cdiVersion": version, "kind": "a.com/b", "devices": [{"name": "x", "containerEdits": {"env": ["A=1"]}}]}
    assert parse_spec(json.dumps(doc), "s.json").version == version
    assert parse_spec(f'cdiVersion: "{version}"\nkind: a.com/b\ndevices:\n- name: x\n  containerEdits:\n'
                      "    env: [A=1]\n", "s.yaml").devices[0].edits.env == ("A=1",)


@pytest.mark.parametrize(("doc", "where"), [
    ({"cdiVersion": "0.2.0", "kind": "a.com/b", "devices": []}, "cdiVersion: invalid version '0.2.0'"),
    ({"cdiVersion": "0.5.0", "kind": "a.com/b", "annotations": {"k": "v"},
      "devices": [{"name": "x", "containerEdits": {"env": ["A=1"]}}]},
     r"cdiVersion: the spec version must be at least v0.6.0 \(annotations\)"),
    ({"cdiVersion": "0.6.0", "kind": "nokind", "devices": []}, "kind: invalid kind 'nokind'"),
    ({"cdiVersion": "0.6.0", "kind": "a.com/b", "devices": [{"name": "x", "containerEdits": {
        "deviceNodes": [{"path": "/dev/x", "type": "z"}]}}]},
     r"devices\[0\].containerEdits.deviceNodes\[0\].type: device '/dev/x': invalid type 'z'"),
    ({"cdiVersion": "0.6.0", "kind": "a.com/b", "devices": [{"name": "x", "containerEdits": {"env": ["NOEQ"]}}]},
     r"devices\[0\].containerEdits.env\[0\]: invalid environment variable 'NOEQ'"),
    ({"cdiVersion": "0.6.0", "kind": "a.com/b", "devices": [{"name": "x", "containerEdits": {}}]},
     r"devices\[0\].containerEdits: device 'x' has no container edits"),
    ({"cdiVersion": "0.6.0", "kind": "a.com/b", "devices": [{"name": "x", "containerEdits": {
        "hooks": [{"hookName": "preboot", "path": "/x"}]}}]},
     r"devices\[0\].containerEdits.hooks\[0\].hookName: invalid hook name 'preboot'"),
    ({"cdiVersion": "0.6.0", "kind": "a.com/b", "devices": [{"name": "x", "bogus": 1}]},
     r"devices\[0\].bogus: unknown field"),
    ({"cdiVersion": "0.6.0", "kind": "a.com/b", "devices": [{"name": "-x", "containerEdits": {"env": ["A=1"]}}]},
     r"devices\[0\].name: invalid device name '-x'"),
])
def test_a_bad_spec_error_names_the_file_and_the_field(doc: dict[str, Any], where: str) -> None:
    with pytest.raises(SpecError, match=r"^CDI spec /etc/cdi/x.json: " + where):
        parse_spec(json.dumps(doc), "/etc/cdi/x.json")


def test_yaml_scalars_become_strings_where_cdi_wants_strings() -> None:
    spec = parse_spec(MULTI, "m.yaml")
    assert spec.annotations == {"org.mobyproject.buildkit.device.autoallow": "true"}
    with pytest.raises(SpecError, match=r"not valid YAML \(line 2"):
        parse_spec("kind: a\n  : [", "broken.yaml")


# -- registry and resolution -----------------------------------------------------------------------------------------


def test_resolution_follows_buildkits_rules(specs: Path) -> None:
    reg = Registry([str(specs)])
    assert find_device(reg, "vendor1.com/device=foo", False) == ["vendor1.com/device=foo"]
    assert find_device(reg, "vendor1.com/devicemulti", False) == ["vendor1.com/devicemulti=bar"]  # first, sorted
    assert find_device(reg, "vendor1.com/devicemulti=*", False) == [
        "vendor1.com/devicemulti=bar", "vendor1.com/devicemulti=baz", "vendor1.com/devicemulti=foo",
        "vendor1.com/devicemulti=qux"]
    assert find_device(reg, "vendor1.com/deviceclass=class1", False) == [
        "vendor1.com/deviceclass=bar", "vendor1.com/deviceclass=foo"]
    assert find_device(reg, "vendor1.com/device=unknown", True) == []
    with pytest.raises(DeviceError, match='^required device "vendor1.com/device=unknown" is not registered$'):
        find_device(reg, "vendor1.com/device=unknown", False)
    with pytest.raises(DeviceError, match="^invalid device \"class1\""):  # v0.20 wants a qualified kind
        find_device(reg, "class1", False)


def test_a_broken_spec_is_reported_and_the_good_ones_stay(specs: Path) -> None:
    (specs / "broken.yaml").write_text('cdiVersion: "0.6.0"\nkind: vendor2.com/x\ndevices:\n- name: a\n'
                                       "  containerEdits:\n    deviceNodes: [{path: /dev/a, permissions: rwx}]\n")
    reg = Registry([str(specs)])
    assert len(reg.list_devices()) == 9
    assert reg.error_lines() == [
        f"CDI spec {specs}/broken.yaml: devices[0].containerEdits.deviceNodes[0].permissions: "
        "device '/dev/a': invalid permissions 'rwx' (r, w, m)"]


def test_the_registry_follows_file_changes_and_dir_priorities(specs: Path, tmp_path: Path) -> None:
    reg = Registry([str(specs)])
    assert "vendor1.com/device=new" not in reg.list_devices()
    doc = dict(GATED, devices=[*GATED["devices"], {"name": "new", "containerEdits": {"env": ["N=1"]}}])  # type: ignore[list-item]
    (specs / "vendor1-device.json").write_text(json.dumps(doc))
    os.utime(specs / "vendor1-device.json", ns=(time.time_ns(), time.time_ns() + 10**9))
    assert "vendor1.com/device=new" in reg.list_devices()
    # the same device in two files of one dir is a conflict; a later dir overrides an earlier one
    shutil.copy(specs / "vendor1-device.json", specs / "copy.json")
    assert "vendor1.com/device=new" not in reg.list_devices()
    assert any("conflicting device 'vendor1.com/device=new'" in e for e in reg.error_lines())
    (specs / "copy.json").unlink()
    later = tmp_path / "later"
    later.mkdir()
    (later / "override.json").write_text(json.dumps(dict(GATED, devices=[
        {"name": "foo", "containerEdits": {"env": ["FOO=later"]}}])))
    reg2 = Registry([str(specs), str(later)])
    dev = reg2.get("vendor1.com/device=foo")
    assert dev is not None and dev.device.edits.env == ("FOO=later",)


def test_auto_allow_by_annotation_or_config(specs: Path) -> None:
    reg = Registry([str(specs)], auto_allowed=["vendor1.com/deviceclass", "vendor1.com/device=zed"])
    assert reg.auto_allow("vendor1.com/devicemulti=foo") == "annotation"
    assert reg.auto_allow("vendor1.com/deviceclass=baz") == "config"
    assert reg.auto_allow("vendor1.com/device=zed") == "config"
    assert reg.auto_allow("vendor1.com/device=foo") == ""
    # device annotations override the spec's (BuildKit's deviceAnnotations)
    (specs / "mixed.yaml").write_text(
        'cdiVersion: "0.6.0"\nkind: vendor3.com/mixed\nannotations:\n  org.mobyproject.buildkit.device.autoallow: "1"\n'
        "devices:\n- name: open\n  containerEdits: {env: [A=1]}\n- name: shut\n"
        "  annotations: {org.mobyproject.buildkit.device.autoallow: 'false'}\n  containerEdits: {env: [A=2]}\n")
    assert reg.auto_allow("vendor3.com/mixed=open") == "annotation"
    assert reg.auto_allow("vendor3.com/mixed=shut") == ""


def test_device_requests_are_part_of_the_op_digest() -> None:
    plain, gpu = _step(), _step(Device("a.com/gpu"))
    assert len({plain.digest, gpu.digest, _step(Device("a.com/gpu", required=True)).digest}) == 3


# -- entitlements and grants -----------------------------------------------------------------------------------------


def test_allow_device_values_parse_and_merge_as_buildkits() -> None:
    assert parse_device_entitlement("device").all
    assert parse_device_entitlement("device=vendor1.com/device=foo").devices == {"vendor1.com/device=foo": ""}
    assert parse_device_entitlement("device=vendor1.com/device=foo,alias=gpu").devices == {
        "gpu": "vendor1.com/device=foo"}
    merged = merge_device_entitlements(["network.host", "device=a.com/b=1", "device=a.com/c,alias=x"])
    assert merged is not None and merged.devices == {"a.com/b=1": "", "x": "a.com/c"} and not merged.all
    with pytest.raises(EntitlementError, match='unknown device config key "name"'):
        parse_device_entitlement("device=a.com/b,name=x")
    with pytest.raises(EntitlementError, match='invalid device config "alias"'):
        parse_device_entitlement("device=a.com/b,alias")


def _step(*devices: Device) -> Vertex:
    base = Vertex(ImageSource("localhost:5055/busybox", "sha256:" + "0" * 64))
    return Vertex(ExecOp(("true",), (), devices=devices), (base,), name="[2/2] RUN true")


def test_grants_denials_and_alias_rewrites_are_events(specs: Path) -> None:
    reg = Registry([str(specs)])
    events: list[Event] = []
    step = _step(Device("vendor1.com/devicemulti"), Device("vendor1.com/device=foo", required=True))
    with pytest.raises(DeviceDenied, match="^device vendor1.com/device=foo is requested by the build but not allowed$"):
        check_step(step, reg, None, events.append)
    grants = [(e.request, e.devices, e.granted, e.how) for e in events if isinstance(e, DeviceGrant)]
    assert grants == [
        ("vendor1.com/devicemulti", ("vendor1.com/devicemulti=bar",), True, "auto-allow (annotation)"),
        ("vendor1.com/device=foo", ("vendor1.com/device=foo",), False,
         "not auto-allowed; grant it with --allow device=vendor1.com/device=foo")]
    with pytest.raises(DeviceDenied, match="^devices vendor1.com/device=foo, vendor1.com/device=zed are requested"):
        check_step(_step(Device("vendor1.com/device=*")), reg, None, [].append)

    events.clear()
    ok = check_step(step, reg, merge_device_entitlements(["device=vendor1.com/device=foo"]), events.append)
    assert [d.name for d in ok.requests] == ["vendor1.com/devicemulti=bar", "vendor1.com/device=foo"]
    assert [e.how for e in events if isinstance(e, DeviceGrant)][1] == "--allow device=vendor1.com/device=foo"

    events.clear()
    alias = merge_device_entitlements(["device=vendor1.com/device=zed,alias=gpu"])
    aliased = check_step(_step(Device("gpu")), reg, alias, events.append)
    assert aliased.requests == (Device("vendor1.com/device=zed"),)
    assert [(e.request, e.devices, e.how) for e in events if isinstance(e, DeviceGrant)] == [
        ("gpu", ("vendor1.com/device=zed",), "--allow device=vendor1.com/device=zed,alias=gpu")]

    every = check_step(_step(Device("vendor1.com/device=*")), reg, merge_device_entitlements(["device"]), [].append)
    assert every.resolve_at_run and every.key_part() == "cdi:all:vendor1.com/device=*?"


# -- container edits -------------------------------------------------------------------------------------------------


def _config(uid: int = 0, gid: int = 0) -> dict[str, Any]:
    return {"process": {"user": {"uid": uid, "gid": gid, "additionalGids": [gid]}, "env": ["PATH=/bin", "MODE=image"]},
            "mounts": [{"destination": "/proc", "type": "proc", "source": "proc"},
                       {"destination": "/dev", "type": "tmpfs", "source": "tmpfs"},
                       {"destination": "/opt/lib", "type": "bind", "source": "/old"}],
            "linux": {"resources": {"devices": [{"allow": False, "access": "rwm"}]}}}


def test_container_edits_are_applied_as_cdi_applies_them(tmp_path: Path) -> None:
    (tmp_path / "x.json").write_text(json.dumps({
        "cdiVersion": "0.7.0", "kind": "v.com/x",
        "containerEdits": {"env": ["MODE=spec", "SPEC=1"], "additionalGids": [0, 44, 44]},
        "devices": [{"name": "a", "containerEdits": {
            "env": ["MODE=device"],
            "deviceNodes": [{"path": "/dev/fake0", "hostPath": "/dev/null"},
                            {"path": "/dev/fake1", "hostPath": "/dev/zero", "permissions": "r", "uid": 7}],
            "mounts": [{"hostPath": "/new", "containerPath": "/opt/lib", "options": ["bind", "ro"]},
                       {"hostPath": "tmpfs", "containerPath": "/a", "type": "tmpfs"}],
            "hooks": [{"hookName": "poststop", "path": "/bin/true", "args": ["true"], "timeout": 5}]}}]}))
    config = _config(uid=1000, gid=1000)
    apply_edits(config, collect_edits(Registry([str(tmp_path)]), ["v.com/x=a"]))
    assert config["process"]["env"] == ["PATH=/bin", "MODE=device", "SPEC=1"]  # replaced in place, then appended
    assert config["process"]["user"]["additionalGids"] == [1000, 44]
    assert config["linux"]["devices"] == [
        {"path": "/dev/fake0", "type": "c", "major": 1, "minor": 3, "uid": 1000, "gid": 1000},
        {"path": "/dev/fake1", "type": "c", "major": 1, "minor": 5, "uid": 7, "gid": 1000}]
    assert config["linux"]["resources"]["devices"][1:] == [
        {"allow": True, "type": "c", "major": 1, "minor": 3, "access": "rwm"},
        {"allow": True, "type": "c", "major": 1, "minor": 5, "access": "r"}]
    assert [(m["destination"], m["source"]) for m in config["mounts"]] == [
        ("/a", "tmpfs"), ("/dev", "tmpfs"), ("/proc", "proc"), ("/opt/lib", "/new")]
    assert config["hooks"] == {"poststop": [{"path": "/bin/true", "args": ["true"], "timeout": 5}]}
    with pytest.raises(InjectError, match='failed to stat CDI host device "/nonexistent"'):
        apply_edits(_config(), parse_spec(json.dumps({"cdiVersion": "0.5.0", "kind": "v.com/y", "devices": [
            {"name": "b", "containerEdits": {"deviceNodes": [{"path": "/dev/b", "hostPath": "/nonexistent"}]}}]}),
            "y.json").devices[0].edits)


# -- config ----------------------------------------------------------------------------------------------------------


def test_the_cdi_config_table(tmp_path: Path) -> None:
    cfg = tmp_path / "workbench.toml"
    cfg.write_text('[cdi]\nspecDirs = ["/a", "/b"]\nautoAllowed = ["v.com/x"]\n')
    loaded = load_cdi_config(cfg)
    assert (loaded.disabled, loaded.spec_dirs, loaded.auto_allowed) == (False, ("/a", "/b"), ("v.com/x",))
    assert load_cdi_config(cfg, ["/c"]).spec_dirs == ("/c",)
    assert load_cdi_config(None).spec_dirs == ("/etc/cdi", "/var/run/cdi", "/etc/buildkit/cdi")
    cfg.write_text("[cdi]\nenabled = true\n")
    with pytest.raises(ConfigError, match=r"\[cdi\] unknown key 'enabled' \(CDI is on unless disabled = true\)"):
        load_cdi_config(cfg)
    cfg.write_text("[cdi]\nspecDirs = []\n")
    with pytest.raises(ConfigError, match="no CDI specification directories specified"):
        load_cdi_config(cfg)
    cfg.write_text("[cdi]\ndisabled = 'no'\n")
    with pytest.raises(ConfigError, match=f"config file {cfg}: \\[cdi\\] disabled must be true or false"):
        load_cdi_config(cfg)


# -- printers --------------------------------------------------------------------------------------------------------


def test_plain_prints_each_grant_under_its_step_and_rawjson_carries_it() -> None:
    grant = DeviceGrant("d2", "vendor.com/gpu", ("vendor.com/gpu=0",), True, "auto-allow (annotation)", ts=100.0)
    denial = DeviceGrant("d3", "vendor.com/gated=a", ("vendor.com/gated=a",), False, "not allowed", ts=100.0)
    out = io.StringIO()
    plain = PlainPrinter(out)
    for ev in (grant, denial, VertexCached("d1", "[1/2] FROM busybox", ts=100.1),
               VertexStarted("d2", "[2/2] RUN --device=vendor.com/gpu nvidia-smi", ts=100.2)):
        plain(ev)
    from workbench.progress.events import BuildFinished

    plain(BuildFinished(error="x", ts=101.0))
    text = out.getvalue()
    assert "#2 [2/2] RUN --device=vendor.com/gpu nvidia-smi\n" \
           "#2 device vendor.com/gpu=0 (requested as vendor.com/gpu) granted: auto-allow (annotation)\n" in text
    assert "\ndevice vendor.com/gated=a denied: not allowed\n" in text  # its step never started
    raw = io.StringIO()
    RawJsonPrinter(raw)(grant)
    assert json.loads(raw.getvalue()) == {"workbench": {"device": {
        "vertex": "d2", "request": "vendor.com/gpu", "devices": ["vendor.com/gpu=0"], "granted": True,
        "how": "auto-allow (annotation)", "required": False, "timestamp": "1970-01-01T00:01:40Z"}}}


def test_run_device_flag_forms() -> None:
    """`--device=NAME[,required[=BOOL]]` and the keyed `--device=name=NAME,required=true` (BuildKit's instructions)."""
    from workbench.frontend.dockerfile.runmount import parse_device

    assert parse_device("vendor.com/gpu=all,required") == ("vendor.com/gpu=all", True)
    assert parse_device("name=vendor.com/gpu=0,required=true") == ("vendor.com/gpu=0", True)
    assert parse_device("vendor.com/gpu") == ("vendor.com/gpu", False)
