"""Issue 15's faults suite."""
