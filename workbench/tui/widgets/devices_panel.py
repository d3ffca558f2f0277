"""The devices panel: CDI devices the engine knows, and each device request of the build with its decision."""

from __future__ import annotations

from pathlib import Path

from rich.markup import escape
from textual.widgets import Static

from workbench.tui.model import BuildModel

EMPTY = (
    "No CDI devices are known to the engine.\n\n"
    "Add a CDI spec directory with [b]--cdi-spec-dir DIR[/] (specs in /etc/cdi and /var/run/cdi are read by\n"
    "default), then request a device in a step with [b]RUN --device=vendor.com/class=name[/];\n"
    "grant it with [b]--allow device[/] unless its spec auto-allows it."
)


def known_devices(spec_dirs: list[str] | None = None, config: Path | None = None) -> list[str] | None:
    """The CDI devices the engine would see (`name (auto-allowed: why)`), or None when CDI is unavailable."""
    try:
        from workbench.cdi import ConfigError, config_path, load_cdi_config
        from workbench.cdi.listing import device_rows
    except ImportError:
        return None
    try:
        cdi = load_cdi_config(config or config_path(), spec_dirs or [])
        if cdi.disabled:
            return None
        rows, _errors = device_rows(cdi)
    except (ConfigError, OSError, ValueError):  # a broken spec or config: the build reports it, located
        return None
    return [str(r["name"]) + (f" (auto-allowed: {r['autoAllowBy']})" if r.get("autoAllow") else "") for r in rows]


def describe(model: BuildModel | None, devices: list[str] | None) -> str:
    out: list[str] = []
    if devices:
        out.append("[b]known devices[/]")
        out += [f"  {escape(d)}" for d in devices]
        out.append("")
    grants = model.grants if model is not None else []
    if grants:
        out.append("[b]requests of this build[/]")
        for g in grants:
            step = model.vertices.get(g.vertex) if model is not None else None
            where = f"#{step.number} " if step else ""
            verdict = ("granted" if g.granted else "[b]denied[/]") + (f" ({escape(g.how)})" if g.how else "")
            resolved = f" → {', '.join(g.devices)}" if g.devices else ""
            need = "" if g.required else " optional"
            out.append(f"  {where}{escape(g.request)}{resolved}{need}: {verdict}")
    elif devices:
        out.append("this build requested no devices")
    if not out:
        return EMPTY
    return "\n".join(out)


class DevicesPanel(Static):
    def show(self, model: BuildModel | None, devices: list[str] | None) -> None:
        self.update(describe(model, devices))
