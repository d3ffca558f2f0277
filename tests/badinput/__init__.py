"""Issue 15's badinput suite."""
