"""A bus that leaves out the events of vertices the progress does not show (as BuildKit, which has no vertex
for scratch and shows a `COPY --link`'s merge as part of its copy); a failure of one still shows."""

from __future__ import annotations

from collections.abc import Set

from workbench.progress.events import Event, EventBus, Sink, VertexEvent, VertexFailed


class QuietBus(EventBus):
    """`bus` without the events of the vertices whose digests are in `quiet` (their failures excepted)."""

    def __init__(self, bus: EventBus, quiet: Set[str]) -> None:  # no sinks of its own: it forwards to `bus`
        self.bus = bus
        self.quiet = quiet

    def emit(self, event: Event) -> None:
        if isinstance(event, VertexEvent) and event.vertex in self.quiet and not isinstance(event, VertexFailed):
            return
        self.bus.emit(event)

    def subscribe(self, sink: Sink) -> None:
        self.bus.subscribe(sink)
