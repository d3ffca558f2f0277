"""Themes loaded by name from the `themes/` folder (TOML files of Textual theme colours), and the remembered choice."""

from __future__ import annotations

import json
import os
import tomllib
from pathlib import Path

from textual.theme import Theme

THEMES_DIR = Path(__file__).resolve().parents[2] / "themes"
DEFAULT_THEME = "dark"
VARIABLE_DEFAULTS = {"dag-cached": "#4FA3F7", "dag-running": "#FBBF24", "dag-pending": "#808080",
                     "editor-step-background": "#2B3A1F", "editor-warning-background": "#3D2A12",
                     "editor-breakpoint-background": "#5A1E1E", "editor-pause-background": "#1E3A6E"}
"""The workbench's own theme variables (used in its CSS), for themes that leave them out."""
_COLOURS = ("primary", "secondary", "accent", "success", "warning", "error", "foreground", "background",
            "surface", "panel", "boost")


class ThemeError(ValueError):
    """A theme file that cannot be used, or a name no file has."""


def themes_dir() -> Path:
    """`$WORKBENCH_THEMES` or the `themes/` folder of the source tree."""
    return Path(os.environ.get("WORKBENCH_THEMES") or THEMES_DIR)


def load_theme(path: Path) -> Theme:
    """One theme file; the theme's name is the file's stem."""
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise ThemeError(f"theme {path}: {e}") from None
    if "primary" not in data:
        raise ThemeError(f"theme {path}: 'primary' colour is missing")
    variables = data.get("variables") or {}
    if not isinstance(variables, dict):
        raise ThemeError(f"theme {path}: [variables] must be a table")
    colours = {k: str(data[k]) for k in _COLOURS if k in data}
    defaults = VARIABLE_DEFAULTS | {"dag-cached": colours["primary"],
                                    "dag-running": colours.get("warning", colours["primary"])}
    theme = Theme(name=path.stem, primary=colours["primary"], dark=bool(data.get("dark", True)),
                  variables=defaults | {str(k): str(v) for k, v in variables.items()})
    for key, value in colours.items():
        setattr(theme, key, value)
    return theme


def available_themes() -> dict[str, Theme]:
    """Every theme in the themes folder by name, the default first (files that fail to load are skipped)."""
    out: dict[str, Theme] = {}
    for path in sorted(themes_dir().glob("*.toml"), key=lambda p: (p.stem != DEFAULT_THEME, p.stem)):
        try:
            out[path.stem] = load_theme(path)
        except ThemeError:
            continue
    return out


def state_file() -> Path:
    """Where the TUI remembers its choices: `$WORKBENCH_TUI_STATE`, else under $XDG_STATE_HOME."""
    if env := os.environ.get("WORKBENCH_TUI_STATE"):
        return Path(env)
    base = os.environ.get("XDG_STATE_HOME") or os.path.expanduser("~/.local/state")
    return Path(base) / "workbench" / "tui.json"


def load_state() -> dict[str, object]:
    try:
        data = json.loads(state_file().read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def save_state(**changes: object) -> None:
    """Merge `changes` into the state file (best effort: a read-only home must not break the app)."""
    state = load_state() | changes
    path = state_file()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(state, indent=1))
        os.replace(tmp, path)
    except OSError:
        pass
