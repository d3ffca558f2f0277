"""ADD of a local tar archive: unpacked into a container dir by the one safe extractor."""

from __future__ import annotations

import tarfile
from pathlib import Path

from workbench.fsutil.paths import UnsafePathError
from workbench.fsutil.tar import UnsafeMemberError, extract
from workbench.solver.fileops.actions import Owner, mkdir_all
from workbench.solver.fileops.errors import FileActionError


def unpack(archive: Path, dest_root: Path, dest: str, owner: Owner = None, name: str = "") -> None:
    """Extract tar `archive` into container dir `dest` of `dest_root` (created 0755), never writing outside it.

    Members keep their mode, mtime and numeric owner (`owner`, from --chown, wins). Absolute names and symlink
    targets met on the way are taken from the extraction dir, a relative `..` stops there, a name that climbs
    out is an error, and a hard link must point at a member already extracted. `.wh.` names are plain files.
    """
    target = mkdir_all(dest_root, dest, 0o755, owner)
    try:
        with open(archive, "rb") as f:
            extract(f, target, whiteouts=False, owner=owner)
    except UnsafeMemberError as e:  # names the member already
        raise FileActionError(str(e)) from None
    except (OSError, UnsafePathError, tarfile.TarError, EOFError) as e:
        raise FileActionError(f"failed to extract {name or archive}: {e}") from None
