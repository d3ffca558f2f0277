"""Exports never write through what is already at the destination (issue 15, item 2).

A symlink or hard link left in a `type=local` destination (by an earlier build, or by someone else) is replaced,
never followed; a directory symlink gives way to the directory; an archive destination (`type=oci|docker|tar`)
that is a symlink is replaced, and a planted `DEST.tmp` link is never written through. A destination that
cannot be written is one clear line, and `--output ''` is an error, not an export into the current directory.
"""

from __future__ import annotations

import os
import stat
import subprocess
import tarfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.conftest import WORKBENCH, wb

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (overlay mounts)")


def _context(tmp_path: Path, dockerfile: str, files: dict[str, str]) -> Path:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(dockerfile)
    for name, text in files.items():
        (ctx / name).parent.mkdir(parents=True, exist_ok=True)
        (ctx / name).write_text(text)
    return ctx


def _one_error(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode != 0, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr and "[Errno" not in proc.stderr, proc.stderr[-2000:]
    assert "cp:" not in proc.stderr, proc.stderr[-2000:]
    return proc.stderr


def test_symlink_in_local_dest_is_replaced_not_followed(tmp_path: Path, root: Path) -> None:
    ctx = _context(tmp_path, "FROM scratch\nCOPY report.txt /report.txt\n", {"report.txt": "from the image\n"})
    host_file = tmp_path / "host-file"
    host_file.write_text("host data\n")
    dest = tmp_path / "out"
    dest.mkdir()
    (dest / "report.txt").symlink_to(host_file)  # what build 1 (or another user) left
    wb(str(ctx), "--output", f"type=local,dest={dest}", root=root)
    assert host_file.read_text() == "host data\n"
    assert not (dest / "report.txt").is_symlink()
    assert (dest / "report.txt").read_text() == "from the image\n"


def test_directory_symlink_in_local_dest_is_replaced_by_the_directory(tmp_path: Path, root: Path) -> None:
    ctx = _context(tmp_path, "FROM scratch\nCOPY etc /etc\nCOPY z.txt /z.txt\n",
                   {"etc/app.conf": "conf\n", "etc/deeper/x": "x\n", "z.txt": "z\n"})
    host_dir = tmp_path / "host-etc"
    host_dir.mkdir()
    dest = tmp_path / "out"
    dest.mkdir()
    (dest / "etc").symlink_to(host_dir)
    proc = wb(str(ctx), "--output", f"type=local,dest={dest}", root=root, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert list(host_dir.iterdir()) == []
    assert not (dest / "etc").is_symlink() and (dest / "etc").is_dir()
    assert (dest / "etc/app.conf").read_text() == "conf\n"
    assert (dest / "etc/deeper/x").read_text() == "x\n"
    assert (dest / "z.txt").read_text() == "z\n"  # the export went on to the end


def test_dangling_symlinks_in_local_dest_are_replaced(tmp_path: Path, root: Path) -> None:
    ctx = _context(tmp_path, "FROM scratch\nCOPY . /\n", {"new.txt": "new\n", "newdir/f": "f\n"})
    dest = tmp_path / "out"
    dest.mkdir()
    (dest / "new.txt").symlink_to(tmp_path / "created-through-link")
    (dest / "newdir").symlink_to(tmp_path / "dir-through-link")
    proc = wb(str(ctx), "--output", f"type=local,dest={dest}", root=root, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert not (tmp_path / "created-through-link").exists()
    assert not (tmp_path / "dir-through-link").exists()
    assert (dest / "new.txt").read_text() == "new\n"
    assert (dest / "newdir/f").read_text() == "f\n"


def test_dotdot_link_in_dest_cannot_lead_out(tmp_path: Path, root: Path) -> None:
    ctx = _context(tmp_path, "FROM scratch\nCOPY up /up\nCOPY up /up2/up\n", {"up/escape.txt": "in up\n"})
    dest = tmp_path / "a" / "out"
    dest.mkdir(parents=True)
    (dest / "up").symlink_to("..")  # dest/up/escape.txt would be a/escape.txt through it
    (dest / "up2").symlink_to("../..")
    proc = wb(str(ctx), "--output", f"type=local,dest={dest}", root=root, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    found = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("escape.txt"))
    assert [p for p in found if not p.startswith(("ctx/", "root/"))] == ["a/out/up/escape.txt",
                                                                        "a/out/up2/up/escape.txt"], found
    assert (dest / "up").is_dir() and not (dest / "up").is_symlink()


def test_local_export_keeps_modes_owners_links_and_times_over_a_hostile_dest(
    registry: str, tmp_path: Path, root: Path
) -> None:
    ctx = _context(tmp_path, """FROM localhost:5055/busybox
RUN mkdir -p /t/d && echo data > /t/f && chown 1234:5678 /t/f && chmod 4755 /t/f && ln /t/f /t/hard \\
 && ln -s f /t/link && ln -s /etc/passwd /t/abs && mkfifo /t/fifo && chmod 0640 /t/fifo \\
 && chmod 0705 /t/d && chown 42:43 /t/d && touch -h -d @1000000000 /t/link && touch -d @1200000000 /t/f \\
 && touch -d @1100000000 /t/d
""", {})
    host_dir = tmp_path / "host"
    host_dir.mkdir()
    (host_dir / "passwd").write_text("host\n")
    dest = tmp_path / "out"
    (dest / "t").mkdir(parents=True)
    (dest / "t" / "d").symlink_to(host_dir)
    (dest / "t" / "f").symlink_to(host_dir / "passwd")
    (dest / "t" / "abs").symlink_to(host_dir / "passwd")
    os.link(host_dir / "passwd", dest / "t" / "hard")  # written in place, it would change the host file
    proc = wb(str(ctx), "--output", f"type=local,dest={dest}", root=root, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (host_dir / "passwd").read_text() == "host\n" and sorted(os.listdir(host_dir)) == ["passwd"]
    t = dest / "t"
    f = os.lstat(t / "f")
    assert stat.S_ISREG(f.st_mode) and stat.S_IMODE(f.st_mode) == 0o4755 and (f.st_uid, f.st_gid) == (1234, 5678)
    assert int(f.st_mtime) == 1200000000 and (t / "f").read_text() == "data\n"
    assert os.lstat(t / "hard").st_ino == f.st_ino and f.st_nlink == 2
    assert os.readlink(t / "link") == "f" and int(os.lstat(t / "link").st_mtime) == 1000000000
    assert os.readlink(t / "abs") == "/etc/passwd"
    fifo = os.lstat(t / "fifo")
    assert stat.S_ISFIFO(fifo.st_mode) and stat.S_IMODE(fifo.st_mode) == 0o640
    d = os.lstat(t / "d")
    assert stat.S_ISDIR(d.st_mode) and stat.S_IMODE(d.st_mode) == 0o705 and (d.st_uid, d.st_gid) == (42, 43)
    assert int(d.st_mtime) == 1100000000
    assert (dest / "bin" / "busybox").is_file()


@pytest.mark.parametrize("kind", ["oci", "docker", "tar"])
def test_symlinked_archive_dest_is_replaced_and_its_target_untouched(
    tmp_path: Path, root: Path, kind: str
) -> None:
    ctx = _context(tmp_path, "FROM scratch\nCOPY a.txt /a.txt\n", {"a.txt": "a\n"})
    target, planted = tmp_path / "target", tmp_path / "planted"
    target.write_text("keep me\n")
    planted.write_text("keep me too\n")
    outdir = tmp_path / "outdir"
    outdir.mkdir()
    dest = outdir / "image.tar"
    dest.symlink_to(target)
    (outdir / "image.tar.tmp").symlink_to(planted)  # a temp name an attacker could guess
    dangling = outdir / "second.tar"
    dangling.symlink_to(tmp_path / "made-through-dangling-link")
    wb(str(ctx), "--output", f"type={kind},dest={dest}", "--output", f"type={kind},dest={dangling}", root=root)
    assert target.read_text() == "keep me\n" and planted.read_text() == "keep me too\n"
    assert not (tmp_path / "made-through-dangling-link").exists()
    for out in (dest, dangling):
        assert not out.is_symlink() and out.is_file()
        with tarfile.open(out) as tar:
            names = tar.getnames()
        assert ("./a.txt" in names or "a.txt" in names) if kind == "tar" else "index.json" in names


@contextmanager
def _read_only_dir(path: Path) -> Iterator[Path]:
    path.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", str(path)], check=False)


@pytest.mark.parametrize("kind", ["local", "oci", "tar"])
def test_unwritable_dest_is_one_clear_error(tmp_path: Path, root: Path, kind: str) -> None:
    ctx = _context(tmp_path, "FROM scratch\nCOPY a.txt /a.txt\n", {"a.txt": "a\n"})
    with _read_only_dir(tmp_path / "ro") as ro:
        dest = ro / "out"
        err = _one_error(wb(str(ctx), "--output", f"type={kind},dest={dest}", root=root, check=False))
        assert str(dest) in err and "Read-only file system" in err, err[-2000:]
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    dest = a_file / "out" if kind != "local" else a_file
    err = _one_error(wb(str(ctx), "--output", f"type={kind},dest={dest}", root=root, check=False))
    assert str(dest) in err or str(a_file) in err, err[-2000:]
    assert a_file.read_text() == "x"


def test_archive_dest_that_is_a_directory_is_one_clear_error(tmp_path: Path, root: Path) -> None:
    ctx = _context(tmp_path, "FROM scratch\nCOPY a.txt /a.txt\n", {"a.txt": "a\n"})
    dest = tmp_path / "a-dir"
    dest.mkdir()
    err = _one_error(wb(str(ctx), "--output", f"type=oci,dest={dest}", root=root, check=False))
    assert f"{dest}: it is a directory" in err, err[-2000:]
    assert os.listdir(dest) == [] and sorted(os.listdir(tmp_path)) == ["a-dir", "ctx", "root"]


@pytest.mark.parametrize("spec", ["", " ", "type=local,dest=", "type=oci,dest="])
def test_empty_output_spec_is_an_error_not_an_export_into_cwd(tmp_path: Path, spec: str) -> None:
    ctx = _context(tmp_path, "FROM scratch\nCOPY a.txt /a.txt\n", {"a.txt": "a\n"})
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    proc = subprocess.run(WORKBENCH + ["build", "--root", str(tmp_path / "root"), "--progress", "plain",
                                       "--output", spec, str(ctx)], cwd=cwd, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode != 0
    assert "--output" in proc.stderr and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert os.listdir(cwd) == []


class _FakeSnapshots:
    """A SnapshotManager stand-in whose read-only view is a plain directory."""

    def __init__(self, tree: Path) -> None:
        self.tree = tree

    @contextmanager
    def mount_readonly(self, chain: list[str]) -> Iterator[Path]:
        yield self.tree


def test_symlink_swapped_in_during_a_local_export_is_never_followed(tmp_path: Path) -> None:
    from workbench.exporter.local import export_local

    tree = tmp_path / "tree"
    for d in range(20):
        for i in range(100):
            p = tree / "d" / f"sub{d:02}" / f"f{i}"
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_text(f"{d}/{i}\n")
    victim = tmp_path / "victim"
    victim.mkdir()
    for d in range(20):
        (victim / f"sub{d:02}").mkdir()
    dest = tmp_path / "out"
    dest.mkdir()

    def attacker(started: threading.Event, stop: threading.Event) -> None:
        """Once the export has begun filling dest/d, swap it for a link to the victim dir."""
        started.set()
        while not (dest / "d" / "sub19").exists() and not (dest / "d" / "sub00").exists():
            if stop.is_set():
                return
        os.rename(dest / "d", tmp_path / f"moved-{os.urandom(4).hex()}")
        (dest / "d").symlink_to(victim)

    for _ in range(3):
        if (dest / "d").is_symlink():
            (dest / "d").unlink()
        started, stop = threading.Event(), threading.Event()
        thread = threading.Thread(target=attacker, args=(started, stop))
        thread.start()
        started.wait()
        try:
            export_local(["x"], _FakeSnapshots(tree), dest)  # type: ignore[arg-type]
        except OSError:
            pass  # losing the race may fail the export; writing into the victim never
        finally:
            stop.set()
            thread.join()
    assert [p for p in victim.rglob("*") if p.is_file()] == []


def test_a_device_or_fifo_dest_is_written_into_not_replaced(tmp_path: Path, root: Path) -> None:
    """`dest=/dev/null`, `/dev/stdout` (a link to the process's pipe) or a FIFO: the archive is streamed into
    it; the device node, link and FIFO stay what they were (a regular file renamed over /dev/null would break
    the host)."""
    ctx = _context(tmp_path, "FROM scratch\nCOPY a.txt /a.txt\n", {"a.txt": "a\n"})
    null = tmp_path / "null"
    os.mknod(null, 0o666 | stat.S_IFCHR, os.makedev(1, 3))  # a /dev/null of our own
    link = tmp_path / "stdout"
    link.symlink_to(null)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    received: list[bytes] = []
    reader = threading.Thread(target=lambda: received.append(fifo.read_bytes()))
    reader.start()
    wb(str(ctx), "--output", f"type=tar,dest={null}", "--output", f"type=oci,dest={link}",
       "--output", f"type=tar,dest={fifo}", root=root)
    reader.join(timeout=60)
    assert stat.S_ISCHR(null.stat().st_mode) and link.is_symlink() and stat.S_ISFIFO(fifo.lstat().st_mode)
    assert received and b"a.txt" in received[0]
