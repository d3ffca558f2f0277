"""Issue 15's security suite."""
