"""File actions (mkdir, mkfile, rm, copy) applied to a mounted root, with Dockerfile COPY/ADD semantics.

`sources` picks what a copy reads (BuildKit's fsutil copier: .dockerignore-style exclude/include patterns,
`--parents` pivots), `chmod` parses a symbolic --chmod, `copying` does COPY and ADD, `archive` unpacks ADD's
local tar archives, `actions` does mkdir, mkfile and rm. The names below are what the solver uses.
"""

from workbench.solver.fileops.actions import mkdir, mkfile, rm
from workbench.solver.fileops.chmod import ModeSet, parse_chmod
from workbench.solver.fileops.copying import copy
from workbench.solver.fileops.errors import FileActionError
from workbench.solver.fileops.sources import Excluded, read_entries

__all__ = ["Excluded", "FileActionError", "ModeSet", "copy", "mkdir", "mkfile", "parse_chmod", "read_entries", "rm"]
