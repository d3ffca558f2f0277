"""The error every file action fails with."""

from __future__ import annotations


class FileActionError(Exception):
    """A file action that cannot be done; the message names the path."""
