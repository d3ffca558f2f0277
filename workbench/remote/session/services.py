"""What a session offers the daemon: its method table, and the method list announced when it opens."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from workbench.remote.session.h2server import Handler
from workbench.solver.session import SecretSource

if TYPE_CHECKING:
    from workbench.remote.session.content import LocalCacheStore
    from workbench.remote.session.filesend import Output

METHOD_HEADER = "x-docker-expose-session-grpc-method"


@dataclass
class SessionServices:
    """The client side of a build: named local directories, secrets, registry credentials, health, and when
    given, the build's output (FileSend) and its ssh agents (SSH)."""

    dirs: Mapping[str, Path] = field(default_factory=dict)  # dir-name (e.g. context, dockerfile) -> directory
    secrets: Mapping[str, SecretSource] = field(default_factory=dict)
    docker_config: Path | None = None  # None: $DOCKER_CONFIG or ~/.docker
    output: Output | None = None  # filesend.LocalOutput / TarOutput: where `--output` lands
    ssh: Mapping[str, str | Path] = field(default_factory=dict)  # ssh id -> agent socket path
    registry_hosts: frozenset[str] | None = None  # the hosts Auth answers for (None: any)
    content_stores: Mapping[str, LocalCacheStore] = field(default_factory=dict)  # store id -> `type=local` cache

    def handlers(self) -> dict[str, Handler]:
        from workbench.remote.session.auth import auth_handlers
        from workbench.remote.session.filesync import diffcopy_handler
        from workbench.remote.session.health import HANDLERS as HEALTH
        from workbench.remote.session.secrets import secrets_handlers

        table: dict[str, Handler] = {**HEALTH, **auth_handlers(self.docker_config, self.registry_hosts),
                                       **secrets_handlers(self.secrets)}
        if self.dirs:
            table["/moby.filesync.v1.FileSync/DiffCopy"] = diffcopy_handler(self.dirs)
        if self.output is not None:
            from workbench.remote.session.filesend import filesend_handler

            table["/moby.filesync.v1.FileSend/DiffCopy"] = filesend_handler([self.output])
        if self.content_stores:
            from workbench.remote.session.content import content_handlers

            table.update(content_handlers(self.content_stores))
        if self.ssh:
            from workbench.remote.session.sshforward import ssh_handlers

            table.update(ssh_handlers(self.ssh))
        return table


def exposed_methods(handlers: Mapping[str, Handler]) -> list[str]:
    """The paths to announce in `x-docker-expose-session-grpc-method` (the daemon checks FileSync is there
    before it asks for a directory)."""
    return sorted(handlers)


def session_metadata(handlers: Mapping[str, Handler]) -> list[tuple[str, str]]:
    """The method header, repeated once per method (lowercase keys, as grpcio requires)."""
    return [(METHOD_HEADER, m) for m in exposed_methods(handlers)]
