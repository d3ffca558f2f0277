"""The `device` entitlement of `--allow`, parsed and merged as BuildKit's `entitlements.DevicesConfig`.

`--allow device` grants every requested device; `--allow device=NAME` what NAME resolves to;
`--allow device=NAME,alias=ALIAS` lets the build request ALIAS and injects NAME in its place.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field


class EntitlementError(ValueError):
    """A malformed `--allow device…` value."""


@dataclass
class DevicesConfig:
    """Merged device grants: `all`, or requested name → device name ("" when it is not an alias)."""

    all: bool = False
    devices: dict[str, str] = field(default_factory=dict)

    def describe(self, key: str) -> str:
        """The `--allow` value that granted `key` (a device name or an alias)."""
        target = self.devices.get(key, "")
        return f"--allow device={target},alias={key}" if target else f"--allow device={key}"


def parse_device_entitlement(value: str) -> DevicesConfig:
    """One `device[=NAME[,alias=ALIAS]]` value (the part after `--allow`)."""
    key, eq, rest = value.partition("=")
    if key != "device":
        raise EntitlementError(f"--allow {value}: not a device entitlement")
    if not eq or rest == "":
        return DevicesConfig(all=True)
    try:
        fields = next(csv.reader([rest], skipinitialspace=False))
    except (csv.Error, StopIteration) as e:
        raise EntitlementError(f"--allow {value}: {e}") from None
    name, alias = fields[0], ""
    for f in fields[1:]:
        k, has_eq, v = f.partition("=")
        if not has_eq:
            raise EntitlementError(f'--allow {value}: invalid device config "{f}"')
        if k != "alias":
            raise EntitlementError(f'--allow {value}: unknown device config key "{k}"')
        alias = v
    if not name:
        raise EntitlementError(f"--allow {value}: a device name is required")
    return DevicesConfig(devices={alias: name} if alias else {name: ""})


def merge_device_entitlements(values: list[str] | tuple[str, ...] | frozenset[str]) -> DevicesConfig | None:
    """All `device…` values of `--allow` merged (None when there are none), as `DevicesConfig.Merge`."""
    merged: DevicesConfig | None = None
    for value in sorted(values):
        if value != "device" and not value.startswith("device="):
            continue
        cfg = parse_device_entitlement(value)
        if merged is None:
            merged = cfg
        elif cfg.all:
            merged.all = True
        else:
            merged.devices.update(cfg.devices)
    return merged
