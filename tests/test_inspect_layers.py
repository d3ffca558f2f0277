"""`workbench inspect layers` on real builds: an image with known waste (a 10 MB file written then removed, a
file overwritten) reported per layer from the build's snapshots, from an OCI archive and from the image store
alike; the text table at 80 columns; one clear line for what cannot be shown."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import WORKBENCH, wb

pytestmark = pytest.mark.real

BIG = 10 * 1024 * 1024
DOCKERFILE = """\
FROM localhost:5055/busybox
RUN dd if=/dev/zero of=/big bs=1048576 count=10 2>/dev/null && echo one > /etc/motd
RUN rm /big && echo two, longer > /etc/motd
COPY app.txt /app/app.txt
"""


def layers(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(WORKBENCH + ["inspect", "layers", *args], capture_output=True, text=True, timeout=300)


def report(*args: str) -> dict[str, Any]:
    proc = layers(*args, "--format", "json")
    assert proc.returncode == 0, proc.stderr
    return dict(json.loads(proc.stdout))


@pytest.fixture()
def context(tmp_path: Path) -> Path:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "app.txt").write_text("hello\n")
    (ctx / "Dockerfile").write_text(DOCKERFILE)
    return ctx


def own_layers(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """The layers of the Dockerfile's own steps (after the base image's)."""
    return doc["layers"][-3:]


def test_known_waste_is_reported_per_layer_with_its_paths(registry: str, root: Path, context: Path) -> None:
    doc = report(str(context), "--root", str(root))
    written, removed, copied = own_layers(doc)
    assert written["line"] == 2 and "RUN dd if=/dev/zero" in written["step"]
    assert removed["line"] == 3 and "RUN rm /big" in removed["step"]
    assert copied["line"] == 4 and "COPY app.txt /app/app.txt" in copied["step"]
    # the 10 MB file and the first /etc/motd are written by layer 2, thrown away by layer 3
    assert written["size"] == BIG + len("one\n")
    assert (written["added"], written["changed"], written["removed"]) == (2, 0, 0)
    assert written["wasted"] == BIG + len("one\n")
    assert written["wasted_paths"] == ["/big", "/etc/motd"]
    assert (removed["added"], removed["changed"], removed["removed"]) == (0, 1, 1)
    assert removed["size"] == len("two, longer\n") and removed["wasted"] == 0
    assert (copied["added"], copied["changed"], copied["removed"]) == (2, 0, 0)
    assert copied["size"] == len("hello\n")
    base = doc["layers"][0]
    assert base["line"] == 1 and "FROM localhost:5055/busybox" in base["step"] and base["wasted"] == 0
    assert all(layer["digest"].startswith("sha256:") for layer in doc["layers"])
    assert doc["wasted"] == BIG + len("one\n")
    assert doc["size"] == sum(layer["size"] for layer in doc["layers"])
    assert doc["efficiency"] == pytest.approx(1 - doc["wasted"] / doc["size"], abs=1e-4)
    assert doc["efficiency"] < 1


def test_an_oci_archive_and_a_stored_image_read_the_same(registry: str, root: Path, context: Path,
                                                         tmp_path: Path) -> None:
    archive = tmp_path / "image.tar"
    wb(str(context), "-o", f"type=oci,dest={archive}", "-t", "layers-test:1", root=root)
    built = report(str(context), "--root", str(root))
    for doc in (report(str(archive), "--root", str(root)), report("layers-test:1", "--root", str(root))):
        assert [(x["size"], x["added"], x["changed"], x["removed"], x["wasted"], x["wasted_paths"], x["digest"])
                for x in doc["layers"]] == \
               [(x["size"], x["added"], x["changed"], x["removed"], x["wasted"], x["wasted_paths"], x["digest"])
                for x in built["layers"]]
        assert own_layers(doc)[0]["step"].startswith("RUN /bin/sh -c dd if=/dev/zero")  # the config's history
        assert own_layers(doc)[0]["line"] is None
        assert doc["efficiency"] == built["efficiency"]


def test_the_text_table_fits_80_columns(registry: str, root: Path, context: Path) -> None:
    proc = layers(str(context), "--root", str(root))
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert all(len(line) <= 80 for line in lines), proc.stdout
    assert lines[1].split() == ["#", "LINE", "SIZE", "ADDED", "CHANGED", "REMOVED", "WASTED", "STEP"]
    assert any(line.startswith("efficiency ") and "10.5 MB of" in line for line in lines), proc.stdout
    assert any("/big" in line and "removed by" in line for line in lines), proc.stdout


def test_what_cannot_be_shown_is_one_clear_line(registry: str, root: Path, tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    (tmp_path / "notes.txt").write_text("not an image\n")
    for args, said in (
        (["localhost:5055/no-such-image:1", "--root", str(root)], "localhost:5055/no-such-image:1"),
        ([str(tmp_path / "nowhere" / "ctx"), "--root", str(root)], "not a build context"),
        ([str(empty), "--root", str(root)], "Dockerfile"),
        ([str(tmp_path / "notes.txt"), "--root", str(root)], "not an image archive"),
    ):
        proc = layers(*args)
        assert proc.returncode == 1, proc.stdout
        assert proc.stdout == ""
        assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
        assert proc.stderr.startswith("ERROR: ") and said in proc.stderr, proc.stderr
