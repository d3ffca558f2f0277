"""`workbench devices`: the registered CDI devices, as `buildctl debug workers -v` lists them."""

from __future__ import annotations

import json

from workbench.cdi.config import CDIConfig
from workbench.cdi.registry import Registry


def device_rows(config: CDIConfig) -> tuple[list[dict[str, object]], list[str]]:
    """Every device (name, kind, annotations, auto-allowed and why) and the spec errors."""
    registry = Registry(config.spec_dirs, config.auto_allowed)
    rows: list[dict[str, object]] = []
    for name in registry.list_devices():
        dev = registry.get(name)
        assert dev is not None
        why = registry.auto_allow(name)
        rows.append({"name": name, "kind": dev.kind, "annotations": dict(sorted(dev.annotations.items())),
                     "autoAllow": bool(why), "autoAllowBy": why, "spec": dev.spec.path})
    return rows, registry.error_lines()


def format_devices(config: CDIConfig, as_json: bool = False) -> tuple[str, list[str]]:
    """The listing text (or JSON) and the spec errors (for stderr)."""
    if config.disabled:
        where = f" in {config.source}" if config.source else ""
        return ("[]\n" if as_json else f"CDI is disabled{where}\n"), []
    rows, errors = device_rows(config)
    if as_json:
        return json.dumps(rows, indent=2) + "\n", errors
    out = [f"Spec dirs:\t{', '.join(config.spec_dirs)}"]
    out.append("Devices:" if rows else "Devices:\t(none)")
    for row in rows:
        out.append(f"\tName:\t\t{row['name']}")
        out.append(f"\tKind:\t\t{row['kind']}")
        by = f" ({row['autoAllowBy']})" if row["autoAllowBy"] else ""
        out.append(f"\tAutoAllow:\t{str(row['autoAllow']).lower()}{by}")
        annotations = row["annotations"]
        assert isinstance(annotations, dict)
        if annotations:
            out.append("\tAnnotations:")
            out += [f"\t\t{k}:\t{v}" for k, v in annotations.items()]
        out.append("")
    return "\n".join(out).rstrip("\n") + "\n", errors
