"""Layer tars ⇄ snapshot dirs in overlayfs lower format, with extraction that never writes outside `dest`."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import posixpath
import stat
import tarfile
from pathlib import Path
from typing import BinaryIO

from workbench.snapshot.rootpath import resolve_in_root

WHITEOUT_PREFIX = ".wh."
OPAQUE = ".wh..wh..opq"
OPAQUE_XATTR = "trusted.overlay.opaque"


class UnsafeLayerError(Exception):
    pass


def _open_stream(stream: BinaryIO, media_type: str) -> BinaryIO:
    head = stream.read(4)
    rest = io.BufferedReader(_Prepend(head, stream))  # type: ignore[arg-type,type-var]
    if head[:2] == b"\x1f\x8b":
        return gzip.GzipFile(fileobj=rest)  # type: ignore[return-value]
    if head == b"\x28\xb5\x2f\xfd" or media_type.endswith("zstd"):
        import zstandard

        return zstandard.ZstdDecompressor().stream_reader(rest)  # type: ignore[return-value]
    return rest  # type: ignore[return-value]


class _Prepend(io.RawIOBase):
    def __init__(self, head: bytes, stream: BinaryIO) -> None:
        self.head, self.stream = head, stream

    def readable(self) -> bool:
        return True

    def readinto(self, b: bytearray) -> int:  # type: ignore[override]
        if self.head:
            n = min(len(b), len(self.head))
            b[:n], self.head = self.head[:n], self.head[n:]
            return n
        data = self.stream.read(len(b))
        b[: len(data)] = data
        return len(data)


def _safe_name(name: str) -> str | None:
    """The member's path relative to the layer root, or None if it is the root itself."""
    clean = posixpath.normpath("/" + name)
    return None if clean == "/" else clean


def _parent_in(dest: Path, path: str) -> Path:
    """Host path of `path`'s parent dir, symlinks resolved inside `dest`; the leaf is never followed."""
    parent = resolve_in_root(dest, posixpath.dirname(path))
    real_dest, real_parent = os.path.realpath(dest), os.path.realpath(parent)
    if os.path.commonpath([real_dest, real_parent]) != real_dest:
        raise UnsafeLayerError(f"{path}: resolves outside the layer")
    parent.mkdir(parents=True, exist_ok=True)
    return parent / posixpath.basename(path)


def _remove(host: Path) -> None:
    if host.is_dir() and not host.is_symlink():
        import shutil

        shutil.rmtree(host)
    elif os.path.lexists(host):
        host.unlink()


def extract_layer(
    stream: BinaryIO, dest: Path, media_type: str = "application/vnd.oci.image.layer.v1.tar+gzip"
) -> None:
    """Extract a layer tar into `dest` as an overlay lower dir; no member can land outside `dest`."""
    dest.mkdir(parents=True, exist_ok=True)
    dirs: list[tuple[Path, tarfile.TarInfo]] = []
    with tarfile.open(fileobj=_open_stream(stream, media_type), mode="r|") as tar:
        for m in tar:
            path = _safe_name(m.name)
            if path is None:
                continue
            base = posixpath.basename(path)
            host = _parent_in(dest, path)
            if base == OPAQUE:
                os.setxattr(host.parent, OPAQUE_XATTR, b"y")
                continue
            if base.startswith(WHITEOUT_PREFIX):
                target = host.parent / base[len(WHITEOUT_PREFIX):]
                _remove(target)
                os.mknod(target, stat.S_IFCHR | 0o000, os.makedev(0, 0))
                continue
            if os.path.lexists(host) and not (m.isdir() and host.is_dir() and not host.is_symlink()):
                _remove(host)
            mode = m.mode & 0o7777
            if m.isdir():
                host.mkdir(exist_ok=True)
                dirs.append((host, m))
            elif m.isreg():
                src = tar.extractfile(m)
                fd = os.open(host, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
                with os.fdopen(fd, "wb") as f:
                    assert src is not None
                    while chunk := src.read(1 << 20):
                        f.write(chunk)
            elif m.issym():
                os.symlink(m.linkname, host)
            elif m.islnk():
                target_path = _safe_name(m.linkname)
                if target_path is None:
                    raise UnsafeLayerError(f"{path}: hard link to the layer root")
                target = _parent_in(dest, target_path)
                if not os.path.lexists(target):
                    raise UnsafeLayerError(f"{path}: hard link target {m.linkname} is not in the layer")
                os.link(target, host, follow_symlinks=False)
                continue
            elif m.ischr() or m.isblk():
                kind = stat.S_IFCHR if m.ischr() else stat.S_IFBLK
                os.mknod(host, kind | mode, os.makedev(m.devmajor, m.devminor))
            elif m.isfifo():
                os.mkfifo(host, mode)
            else:
                continue
            os.lchown(host, m.uid, m.gid)
            if not m.issym():
                os.chmod(host, mode)
            for key, value in m.pax_headers.items():
                if key.startswith("SCHILY.xattr."):
                    os.setxattr(host, key[13:], value.encode("utf-8", "surrogateescape"), follow_symlinks=False)
            if not m.isdir():
                os.utime(host, (m.mtime, m.mtime), follow_symlinks=False)
    for host, m in reversed(dirs):  # after children, so their writes don't bump the times
        os.lchown(host, m.uid, m.gid)
        os.chmod(host, m.mode & 0o7777)
        os.utime(host, (m.mtime, m.mtime))


def _is_whiteout(st: os.stat_result) -> bool:
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


def write_layer(layer_dir: Path, out: BinaryIO, compress: str = "gzip") -> tuple[str, str, int]:
    """Write `layer_dir` as an OCI layer tar; returns (diff_id, digest, compressed size)."""
    hashed = _HashingWriter(out)
    gz = gzip.GzipFile(fileobj=hashed, mode="wb", compresslevel=6, mtime=0, filename="") if compress == "gzip" \
        else None
    raw = _HashingWriter(gz if gz is not None else hashed)  # type: ignore[arg-type]
    inodes: dict[tuple[int, int], str] = {}
    with tarfile.open(fileobj=raw, mode="w|", format=tarfile.PAX_FORMAT) as tar:  # type: ignore[call-overload]
        for rel in _walk(layer_dir):
            host = layer_dir / rel
            st = os.lstat(host)
            if _is_whiteout(st):
                ti = tarfile.TarInfo(posixpath.join(posixpath.dirname(rel), WHITEOUT_PREFIX + posixpath.basename(rel)))
                ti.mode, ti.mtime = 0, int(st.st_mtime)
                tar.addfile(ti)
                continue
            ti = tar.gettarinfo(str(host), arcname=rel)
            ti.uname = ti.gname = ""
            xattrs = {}
            for key in os.listxattr(host, follow_symlinks=False):
                if key.startswith("trusted.overlay."):
                    continue
                xattrs["SCHILY.xattr." + key] = os.getxattr(host, key, follow_symlinks=False).decode(
                    "utf-8", "surrogateescape")
            ti.pax_headers = xattrs
            if stat.S_ISREG(st.st_mode) and st.st_nlink > 1:
                ino = (st.st_dev, st.st_ino)
                if ino in inodes:
                    ti.type, ti.linkname, ti.size = tarfile.LNKTYPE, inodes[ino], 0
                    tar.addfile(ti)
                    continue
                inodes[ino] = rel
            if ti.isreg():
                with open(host, "rb") as f:
                    tar.addfile(ti, f)
            else:
                tar.addfile(ti)
            if stat.S_ISDIR(st.st_mode) and _is_opaque(host):
                op = tarfile.TarInfo(posixpath.join(rel, OPAQUE))
                op.mode = 0
                tar.addfile(op)
    if gz is not None:
        gz.close()
    return "sha256:" + raw.sha.hexdigest(), "sha256:" + hashed.sha.hexdigest(), hashed.size


def _is_opaque(host: Path) -> bool:
    try:
        return os.getxattr(host, OPAQUE_XATTR, follow_symlinks=False) == b"y"
    except OSError:
        return False


def _walk(root: Path) -> list[str]:
    out: list[str] = []

    def visit(rel: str) -> None:
        for name in sorted(os.listdir(root / rel) if rel else os.listdir(root)):
            child = posixpath.join(rel, name) if rel else name
            out.append(child)
            p = root / child
            if p.is_dir() and not p.is_symlink():
                visit(child)

    visit("")
    return out


class _HashingWriter(io.RawIOBase):
    def __init__(self, out: BinaryIO) -> None:
        self.out, self.sha, self.size = out, hashlib.sha256(), 0

    def writable(self) -> bool:
        return True

    def write(self, b: bytes) -> int:  # type: ignore[override]
        self.sha.update(b)
        self.size += len(b)
        self.out.write(b)
        return len(b)
