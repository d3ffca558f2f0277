"""`?`: every key binding of the app and its panels."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

HELP = """\
[b]workbench — keys[/]

[b]anywhere[/]
  q            quit (cancels a running build cleanly)
  ?            this help
  r            rerun the build now (cancels a running one)
  n            toggle --no-cache for the next run
  w            toggle watch (rebuild when the Dockerfile or a context file changes)
  t            next theme (remembered)
  tab          next panel;  1 graph  2 logs  3 cache  4 devices  5 editor

[b]debugger[/] (live builds; break on error is on unless --no-break-on-error)
  F9 / b       toggle a breakpoint: at the editor's cursor line (editor focused) or the selected step's
               line; a breakpointed step runs again (not from the cache) and the build stops before it
  F5 / c       continue to the next breakpoint          F10 / s   next: run this step, stop before the next
  F4 / e       a shell (sh) inside the paused step; the app comes back when it exits (changes are thrown away)
  d            diff two finished steps: added / changed / removed files with sizes, text diffs
  f            the files of the selected finished step (at a pause with the paused step selected: its
               input) as a tree; enter opens a directory or shows a file, esc closes
  A / F8       abort the build;  q quits (a paused build and its shells end cleanly)

[b]graph[/]
  ↑ ↓ / k j    previous / next node      pgup pgdn home end
  ← / h        go to the node's first input;   → / l  to its first dependent
  enter space  fold or unfold the stage under the cursor;   z  fold or unfold all stages
  x            next failed step
  the mouse selects nodes; symbols: · pending  ▶ running  ≡ cached  ✔ done  ✘ failed  ⊘ canceled

[b]logs[/]
  /            search (enter: next match, esc: close)
  a            all steps interleaved / selected step
  ↑ ↓ pgup pgdn home, end follows the live end

[b]editor[/]
  ctrl+s       save (with watch on, saving reruns the build)
  esc          back to the graph
"""


class HelpScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape,q,question_mark", "dismiss", "Close")]
    DEFAULT_CSS = """
    HelpScreen { align: center middle; }
    HelpScreen > VerticalScroll { width: 90; max-width: 100%; height: auto; max-height: 100%;
        border: round $primary; background: $panel; padding: 0 1; }
    """

    def compose(self) -> ComposeResult:
        with VerticalScroll():
            yield Static(HELP)

    async def action_dismiss(self, result: None = None) -> None:
        self.dismiss(result)
