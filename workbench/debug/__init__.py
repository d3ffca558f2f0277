"""Breaking into builds: breakpoints, pauses, shells inside steps, looking at and diffing step filesystems."""
