"""The `[cdi]` table of workbench's config file, as buildkitd.toml's (`disabled`, `specDirs`, `autoAllowed`).

The file is `--config FILE`, else `$WORKBENCH_CONFIG`, else /etc/workbench/workbench.toml when it exists (for
an ordinary user `$XDG_CONFIG_HOME/workbench/workbench.toml` first: `workbench.xdg.config_file`).
CDI is enabled unless `disabled = true`; `--cdi-spec-dir` (repeatable) replaces `specDirs`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from workbench.cdi.registry import DEFAULT_SPEC_DIRS

DEFAULT_CONFIG = Path("/etc/workbench/workbench.toml")
_KEYS = ("disabled", "specDirs", "autoAllowed")


class ConfigError(ValueError):
    """A config file that cannot be used: the file, the key, what is wrong."""


@dataclass(frozen=True)
class CDIConfig:
    disabled: bool = False
    spec_dirs: tuple[str, ...] = DEFAULT_SPEC_DIRS
    auto_allowed: tuple[str, ...] = ()
    source: str = ""
    """The config file it came from ("" for the defaults)."""


def config_path(explicit: str | None = None) -> Path | None:
    """The config file to read: `explicit`, $WORKBENCH_CONFIG, or the default one that exists (workbench.xdg)."""
    if explicit:
        return Path(explicit)
    if env := os.environ.get("WORKBENCH_CONFIG"):
        return Path(env)
    from workbench.xdg import config_file

    found = config_file()
    return Path(found) if found else None


def load_cdi_config(path: Path | None, spec_dirs: list[str] | tuple[str, ...] = ()) -> CDIConfig:
    """The CDI settings from `path` (None: defaults), with `--cdi-spec-dir` values replacing specDirs."""
    table: dict[str, Any] = {}
    if path is not None:
        import tomllib

        try:
            with open(path, "rb") as f:
                doc = tomllib.load(f)
        except OSError as e:
            raise ConfigError(f"config file {path}: cannot read: {e.strerror}") from None
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"config file {path}: {e}") from None
        table = doc.get("cdi", {})
        if not isinstance(table, dict):
            raise ConfigError(f"config file {path}: [cdi] must be a table")
    where = f"config file {path}: [cdi]"
    for key in table:
        if key not in _KEYS:
            hint = " (CDI is on unless disabled = true)" if key == "enabled" else ""
            raise ConfigError(f"{where} unknown key {key!r}{hint}; known keys: {', '.join(_KEYS)}")
    disabled = table.get("disabled", False)
    if not isinstance(disabled, bool):
        raise ConfigError(f"{where} disabled must be true or false, not {disabled!r}")
    dirs = _strings(table, "specDirs", where)
    allowed = _strings(table, "autoAllowed", where) or ()
    if spec_dirs:
        dirs = tuple(spec_dirs)
    if dirs is None:
        dirs = DEFAULT_SPEC_DIRS
    if not dirs and not disabled:
        raise ConfigError(f"{where} no CDI specification directories specified")
    return CDIConfig(disabled, dirs, allowed, str(path) if path else "")


def _strings(table: dict[str, Any], key: str, where: str) -> tuple[str, ...] | None:
    if key not in table:
        return None
    value = table[key]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{where} {key} must be a list of strings")
    return tuple(value)
