"""CDI devices as BuildKit v0.20 has them: spec registry, resolution, grants and container edits.

    config.py        the `[cdi]` table of the config file (disabled, specDirs, autoAllowed)
    spec.py          one spec file, parsed and validated (JSON/YAML, cdiVersion 0.3.0-0.8.0, 1.0.0)
    registry.py      every spec of the spec dirs, refreshed when files change; annotations, auto-allow
    resolve.py       `vendor/class`, `=name`, `=*`, class annotation → concrete devices
    entitlements.py  `--allow device[=NAME[,alias=ALIAS]]`
    grants.py        which devices a step may use (every grant/denial is a DeviceGrant event)
    inject.py        container edits applied to a step's OCI config
    context.py       all of it for one build
    listing.py       `workbench devices`
"""

from workbench.cdi.config import CDIConfig, ConfigError, config_path, load_cdi_config
from workbench.cdi.context import BuildDevices, CDIError
from workbench.cdi.entitlements import EntitlementError, merge_device_entitlements, parse_device_entitlement
from workbench.cdi.resolve import DeviceError

__all__ = [
    "BuildDevices",
    "CDIConfig",
    "CDIError",
    "ConfigError",
    "DeviceError",
    "EntitlementError",
    "config_path",
    "load_cdi_config",
    "merge_device_entitlements",
    "parse_device_entitlement",
]
