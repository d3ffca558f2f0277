"""The workbench TUI: a Textual app over the build event stream (nothing here is imported by the engine)."""
