"""`workbench builders`: what a BuildKit daemon says of itself (address, version, workers), or the local engine.

    workbench builders [--addr ADDR] [--tlscacert F --tlscert F --tlskey F --tlsservername N] [--format json]

Like `buildctl debug workers -v` and `docker buildx inspect`, in one shape for buildkitd, Docker's BuildKit and
workbench's own engine (no `--addr` and no `BUILDKIT_HOST`).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from workbench.remote.address import AddressError, add_address_arguments, address_from_args


def add_parser(sub: Any) -> None:
    p = sub.add_parser("builders", help="describe the BuildKit daemon of --addr / $BUILDKIT_HOST (version, workers, "
                                        "platforms, CDI devices), or the local engine")
    add_address_arguments(p)
    p.add_argument("--format", choices=["text", "json"], default="text")


def run(args: argparse.Namespace) -> int:
    try:
        address = address_from_args(args)
    except AddressError as e:
        print(f"ERROR: {e}", file=sys.stderr)
        return 2
    if address is None:
        described = describe_local()
    else:
        from workbench.remote.control import ControlError

        try:
            described = describe_daemon(address)
        except ControlError as e:
            print(f"ERROR: {e}", file=sys.stderr)
            return 1
    sys.stdout.write(json.dumps(described, indent=2) + "\n" if args.format == "json" else format_text(described))
    return 0


def describe_daemon(address: Any) -> dict[str, Any]:
    """The daemon at `address` as a JSON-able dict (the shape of `--format json`)."""
    from workbench.remote.channel import docker_version
    from workbench.remote.control import Control

    with Control(address) as control:
        info = control.info()
        workers = control.workers()
    out: dict[str, Any] = {"address": str(address), "source": address.source, "engine": "buildkitd",
                           "hasInfo": info.has_info, "buildkit": None}
    if address.scheme == "docker":
        out["engine"] = "docker"
        try:
            v = docker_version(address.path)
            out["docker"] = {"version": v.get("Version", ""), "apiVersion": v.get("ApiVersion", "")}
        except (OSError, ValueError):
            out["docker"] = {"version": "", "apiVersion": ""}
    if info.version is not None:
        out["buildkit"] = {"package": info.version.package, "version": info.version.version,
                           "revision": info.version.revision}
        out["version"] = info.version.version
    elif address.scheme == "docker":
        out["version"] = f"v0.8-era, from Docker {out['docker']['version'] or '(version unknown)'}".strip()
    else:
        out["version"] = "v0.8-era (the daemon has no Info call)"
    out["workers"] = [_worker_json(w) for w in workers]
    return out


def _worker_json(w: Any) -> dict[str, Any]:
    return {"id": w.id, "platforms": list(w.platforms), "labels": w.labels,
            "gcPolicy": [{"all": g.all, "filters": list(g.filters), "keepDuration": g.keep_duration_s,
                          "reservedSpace": g.reserved_space, "maxUsedSpace": g.max_used_space,
                          "minFreeSpace": g.min_free_space} for g in w.gc_policies],
            "cdiDevices": [{"name": d.name, "autoAllow": d.auto_allow, "onDemand": d.on_demand,
                            "annotations": d.annotations} for d in w.cdi_devices]}


def describe_local() -> dict[str, Any]:
    """workbench's own engine in the same shape: this machine's platform, the root, the GC cap, CDI devices."""
    import platform
    from importlib.metadata import PackageNotFoundError, version

    from workbench.cdi import ConfigError, config_path, load_cdi_config
    from workbench.cdi.listing import device_rows
    from workbench.gc.pruning import default_cap
    from workbench.request import default_root

    try:
        ours = version("workbench")
    except PackageNotFoundError:
        ours = "unknown"
    arch = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm/v7", "ppc64le": "ppc64le",
            "s390x": "s390x", "riscv64": "riscv64"}.get(platform.machine(), platform.machine())
    root = default_root()
    gc: list[dict[str, Any]] = []
    if root.is_dir():
        try:
            gc.append({"all": True, "filters": [], "keepDuration": 0.0, "reservedSpace": default_cap(root),
                       "maxUsedSpace": 0, "minFreeSpace": 0})
        except OSError:
            pass
    devices: list[dict[str, Any]] = []
    try:
        config = load_cdi_config(config_path())
        if not config.disabled:
            rows, _ = device_rows(config)
            devices = [{"name": r["name"], "autoAllow": r["autoAllow"], "onDemand": False,
                        "annotations": r["annotations"]} for r in rows]
    except ConfigError as e:
        print(f"WARNING: {e}", file=sys.stderr)
    worker = {"id": "local", "platforms": [f"linux/{arch}"], "labels": {"workbench.root": str(root),
                                                                         "workbench.executor": "runc"},
              "gcPolicy": gc, "cdiDevices": devices}
    return {"address": "local", "source": "", "engine": "workbench", "hasInfo": True, "buildkit": None,
            "version": f"workbench {ours} (local engine)", "workers": [worker]}


def format_text(d: dict[str, Any]) -> str:
    from workbench.progress.units import format_bytes

    out = [f"Address:\t{d['address']}" + (f" (from {d['source']})" if d["source"] == "BUILDKIT_HOST" else ""),
           f"BuildKit:\t{d['version']}"]
    if d.get("docker", {}).get("apiVersion"):
        out.append(f"Docker API:\t{d['docker']['apiVersion']}")
    for w in d["workers"]:
        out += ["", f"Worker:\t\t{w['id']}", f"Platforms:\t{', '.join(w['platforms']) or '(none)'}"]
        if w["labels"]:
            out.append("Labels:")
            out += [f"\t{k}:\t{v}" for k, v in w["labels"].items()]
        for g in w["gcPolicy"]:
            parts = ["All:\ttrue" if g["all"] else ""]
            if g["filters"]:
                parts.append(f"Filters:\t{', '.join(g['filters'])}")
            if g["keepDuration"]:
                parts.append(f"Keep duration:\t{_duration(g['keepDuration'])}")
            for key, name in (("reservedSpace", "Reserved space"), ("maxUsedSpace", "Max used space"),
                              ("minFreeSpace", "Min free space")):
                if g[key]:
                    parts.append(f"{name}:\t{format_bytes(g[key])}")
            out.append("GC policy:")
            out += [f"\t{p}" for p in parts if p]
        if w["cdiDevices"]:
            out.append("CDI devices:")
            for dev in w["cdiDevices"]:
                flags = [f for f, on in (("auto-allowed", dev["autoAllow"]), ("on demand", dev["onDemand"])) if on]
                out.append(f"\t{dev['name']}" + (f" ({', '.join(flags)})" if flags else ""))
        else:
            out.append("CDI devices:\t(none)")
    return "\n".join(out) + "\n"


def _duration(seconds: float) -> str:
    """As Go prints a time.Duration of whole hours or seconds: `48h0m0s`, `90s` → `1m30s`."""
    whole = int(seconds)
    h, rest = divmod(whole, 3600)
    m, s = divmod(rest, 60)
    return (f"{h}h" if h else "") + (f"{m}m" if h or m else "") + f"{s}s"
