"""The CDI spec registry: every `*.json` / `*.yaml` file in the spec dirs, reloaded when they change.

As CDI's `Cache`: a dir's priority is its position (a later dir wins when two define the same device;
two files of one dir defining it is a conflict that removes the device), a broken file is recorded as an
error and skipped without taking the valid ones down, and devices are listed in sorted order.
BuildKit's device annotations (`org.mobyproject.buildkit.device.*`) are read here too.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path

from workbench.cdi.spec import Device, Spec, SpecError, load_spec

DEFAULT_SPEC_DIRS = ("/etc/cdi", "/var/run/cdi", "/etc/buildkit/cdi")
ANNOTATION_AUTOALLOW = "org.mobyproject.buildkit.device.autoallow"
ANNOTATION_CLASS = "org.mobyproject.buildkit.device.class"
_TRUE = {"1", "t", "T", "TRUE", "true", "True"}  # strconv.ParseBool's true values


@dataclass(frozen=True)
class RegisteredDevice:
    """A device as the registry knows it: its qualified name, its spec and its own entry."""

    name: str
    spec: Spec
    device: Device

    @property
    def kind(self) -> str:
        return self.spec.kind

    @property
    def annotations(self) -> dict[str, str]:
        """Spec annotations overridden by the device's own (BuildKit's `deviceAnnotations`)."""
        return {**self.spec.annotations, **self.device.annotations}


class Registry:
    """CDI devices from spec dirs, refreshed (by file mtimes and sizes) whenever they are asked for."""

    def __init__(self, spec_dirs: tuple[str, ...] | list[str] = DEFAULT_SPEC_DIRS,
                 auto_allowed: tuple[str, ...] | list[str] = ()) -> None:
        self.spec_dirs = tuple(spec_dirs)
        self.auto_allowed = frozenset(auto_allowed)
        self.errors: dict[str, list[SpecError]] = {}
        """Per spec file, why it (or a device in it) was left out at the last refresh."""
        self._devices: dict[str, RegisteredDevice] = {}
        self._stamp: tuple[object, ...] | None = None
        self._lock = threading.Lock()

    def _scan(self) -> tuple[list[tuple[int, Path]], tuple[object, ...]]:
        files: list[tuple[int, Path]] = []
        stamp: list[object] = []
        for prio, d in enumerate(self.spec_dirs):
            try:
                entries = sorted(os.scandir(d), key=lambda e: e.name)
            except OSError:  # a missing dir is no error (CDI skips it)
                stamp.append((d, None))
                continue
            for e in entries:
                if not e.name.endswith((".json", ".yaml")):
                    continue
                try:
                    st = e.stat()
                except OSError:
                    continue
                if not e.is_file():
                    continue  # CDI does not descend into sub-directories
                files.append((prio, Path(e.path)))
                stamp.append((e.path, st.st_mtime_ns, st.st_size, st.st_ino))
        return files, tuple(stamp)

    def refresh(self, force: bool = False) -> bool:
        """Reload the specs if any file was added, removed or changed; True when it reloaded."""
        with self._lock:
            files, stamp = self._scan()
            if not force and stamp == self._stamp:
                return False
            devices: dict[str, RegisteredDevice] = {}
            errors: dict[str, list[SpecError]] = {}
            conflicts: set[str] = set()
            for prio, path in files:
                try:
                    spec = load_spec(path, prio)
                except SpecError as e:
                    errors.setdefault(str(path), []).append(e)
                    continue
                for dev in spec.devices:
                    name = f"{spec.kind}={dev.name}"
                    old = devices.get(name)
                    if old is not None and old.spec.priority >= spec.priority:
                        if old.spec.priority == spec.priority:
                            for p in (spec.path, old.spec.path):
                                errors.setdefault(p, []).append(SpecError(
                                    p, "devices", f"conflicting device {name!r} (specs {spec.path}, {old.spec.path})"))
                            conflicts.add(name)
                        continue
                    devices[name] = RegisteredDevice(name, spec, dev)
            for name in conflicts:
                devices.pop(name, None)
            self._devices, self.errors, self._stamp = devices, errors, stamp
            return True

    def list_devices(self) -> list[str]:
        """Every device's qualified name, sorted (as `cdi.Cache.ListDevices`)."""
        self.refresh()
        return sorted(self._devices)

    def get(self, name: str) -> RegisteredDevice | None:
        self.refresh()
        return self._devices.get(name)

    def auto_allow(self, name: str) -> str:
        """Why `name` needs no grant: "config" (listed in autoAllowed by name or kind), "annotation", or ""."""
        dev = self.get(name)
        kind = name.split("=", 1)[0]
        if name in self.auto_allowed or kind in self.auto_allowed:
            return "config"
        if dev is not None and dev.annotations.get(ANNOTATION_AUTOALLOW, "") in _TRUE:
            return "annotation"
        return ""

    def error_lines(self) -> list[str]:
        """The errors of the last refresh, one line each, in file order."""
        return [str(e) for path in sorted(self.errors) for e in self.errors[path]]
