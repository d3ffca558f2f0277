"""CDI for one build: the registry, the client's device grants, and what each step was granted.

The build makes one `BuildDevices` when its graph has `RUN --device` requests, checks every exec step
before solving (`check`), gives the solver each step's cache-key part (`key_part`) and, when a step runs,
an edit for its OCI config (`spec_edit`) that refreshes the registry and injects the granted devices.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from workbench.cdi.config import CDIConfig
from workbench.cdi.entitlements import DevicesConfig
from workbench.cdi.grants import StepDevices, check_step
from workbench.cdi.inject import InjectError, inject
from workbench.cdi.registry import Registry
from workbench.cdi.resolve import DeviceError, find_devices
from workbench.llb.ops import ExecOp, Vertex
from workbench.progress.events import BuildWarning, DeviceGrant, EventBus


class CDIError(ValueError):
    """A step's devices could not be injected; the step fails with this message."""


class BuildDevices:
    """The device side of one build (see the module docstring)."""

    def __init__(self, config: CDIConfig, grants: DevicesConfig | None, bus: EventBus) -> None:
        self.config = config
        self.grants = grants
        self.bus = bus
        self.registry = Registry(config.spec_dirs, config.auto_allowed)
        self.steps: dict[str, StepDevices] = {}
        self._warned: set[str] = set()

    def _warn_broken_specs(self) -> None:
        for line in self.registry.error_lines():
            if line not in self._warned:
                self._warned.add(line)
                self.bus.emit(BuildWarning(line))

    def check(self, target: Vertex) -> dict[str, StepDevices]:
        """Decide every exec step's devices; raises DeviceError (the build must not start)."""
        steps = [v for v in target.walk() if isinstance(v.op, ExecOp) and v.op.devices]
        if not steps:
            return {}
        if not self.config.disabled:
            self.registry.refresh()
            self._warn_broken_specs()
        for v in steps:
            try:
                if self.config.disabled:
                    self._check_disabled(v)
                    continue
                self.steps[v.digest] = check_step(v, self.registry, self.grants, self.bus.emit)
            except DeviceError as e:
                e.vertex = v
                raise
            self._warn_missing(v, [d.name for d in v.op.devices if not d.required])  # type: ignore[union-attr]
        return self.steps

    def _check_disabled(self, v: Vertex) -> None:
        assert isinstance(v.op, ExecOp)
        where = f" in {self.config.source}" if self.config.source else ""
        for d in v.op.devices:
            why = f"CDI is disabled{where}"
            self.bus.emit(DeviceGrant(v.digest, d.name, (), False, why, d.required))
            if d.required:
                raise DeviceError(f'required device "{d.name}" is not registered ({why})')
            self.bus.emit(BuildWarning(f'optional device "{d.name}" is not registered ({why})', v.source,
                                       vertex=v.digest))

    def _warn_missing(self, v: Vertex, optional: list[str]) -> None:
        for name in optional:
            try:
                if not find_devices(self.registry, [(name, True)]):
                    self.bus.emit(BuildWarning(f'optional device "{name}" is not registered', v.source,
                                               vertex=v.digest))
            except DeviceError:
                pass

    def key_part(self, v: Vertex) -> str:
        """The step's cache-key part: the devices it was granted ("" for a step without devices)."""
        step = self.steps.get(v.digest)
        return step.key_part() if step is not None and step.requests else ""

    def granted(self, v: Vertex) -> list[str]:
        """The granted device names of a step, for miss reasons."""
        step = self.steps.get(v.digest)
        return [d.name for d in step.requests] if step is not None else []

    def spec_edit(self, v: Vertex) -> Callable[[dict[str, Any]], None] | None:
        """An edit injecting the step's devices into its OCI config (None when it has none)."""
        step = self.steps.get(v.digest)
        if step is None or not step.requests:
            return None

        def edit(config: dict[str, Any]) -> None:
            self.registry.refresh()  # spec files may have changed since the check (BuildKit refreshes here)
            self._warn_broken_specs()
            requests = [(d.name, not d.required) for d in step.requests]
            try:
                devices = find_devices(self.registry, requests)
                inject(self.registry, config, devices)
            except (DeviceError, InjectError) as e:
                raise CDIError(f"CDI device injection failed: {e}") from None

        return edit
