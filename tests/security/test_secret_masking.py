"""Secret values are masked in every event of a build, whoever runs it: the engine API without a recorder too."""

from __future__ import annotations

from pathlib import Path

from workbench.build import run_build
from workbench.progress.events import Event, EventBus
from workbench.request import BuildRequest
from workbench.solver.session import SecretSource, Session


def test_run_build_masks_secret_values_without_a_recorder(registry: str, root: Path, tmp_path: Path) -> None:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    secret = tmp_path / "token"
    secret.write_text("s3cr3t-value-42\n")
    (ctx / "Dockerfile").write_text(
        "FROM localhost:5055/busybox\n"
        "RUN --mount=type=secret,id=tok cat /run/secrets/tok; echo; echo s3cr3t-value-42 >&2\n")
    events: list[Event] = []
    bus = EventBus()
    bus.subscribe(events.append)
    req = BuildRequest(context=ctx, dockerfile=ctx / "Dockerfile", root=root,
                       session=Session(secrets={"tok": SecretSource("tok", path=str(secret))}))
    run_build(req, bus)
    shown = repr(events)
    assert "****" in shown  # the step printed it (twice), and the log shows the mask instead
    assert "s3cr3t-value-42" not in shown
