"""`workbench image load` of malformed archives: one error line naming the archive, never a traceback."""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import tarfile
from pathlib import Path

import pytest

from tests.conftest import WORKBENCH


def _tar(path: Path, files: dict[str, bytes | str]) -> Path:
    with tarfile.open(path, "w") as tf:
        for name, data in files.items():
            raw = data.encode() if isinstance(data, str) else data
            info = tarfile.TarInfo(name)
            info.size = len(raw)
            tf.addfile(info, io.BytesIO(raw))
    return path


def _blob(doc: object) -> tuple[str, bytes]:
    raw = json.dumps(doc).encode()
    return "sha256:" + hashlib.sha256(raw).hexdigest(), raw


def _oci(manifest_doc: object) -> dict[str, bytes | str]:
    digest, raw = _blob(manifest_doc)
    return {"index.json": json.dumps({"manifests": [{"digest": digest}]}), f"blobs/sha256/{digest[7:]}": raw}


def _nested(depth: int) -> dict[str, bytes | str]:
    files: dict[str, bytes | str] = {}
    digest, raw = _blob({"schemaVersion": 2, "manifests": []})
    for _ in range(depth):
        files[f"blobs/sha256/{digest[7:]}"] = raw
        digest, raw = _blob({"schemaVersion": 2, "manifests": [{"digest": digest}]})
    files[f"blobs/sha256/{digest[7:]}"] = raw
    files["index.json"] = json.dumps({"manifests": [{"digest": digest}]})
    return files


CASES: dict[str, dict[str, bytes | str]] = {
    "config-is-a-number": {"manifest.json": json.dumps([{"Config": 5, "Layers": []}])},
    "config-is-a-list": {"manifest.json": json.dumps([{"Config": "c.json", "Layers": []}]), "c.json": "[1,2]"},
    "config-not-json": {"manifest.json": json.dumps([{"Config": "c.json", "Layers": []}]), "c.json": "nope"},
    "layers-a-string": {"manifest.json": json.dumps([{"Config": "c.json", "Layers": "abc"}]),
                        "c.json": json.dumps({"rootfs": {"diff_ids": ["a", "b", "c"]}})},
    "manifest-not-a-list": {"manifest.json": json.dumps({"Config": "c.json"})},
    "index-entry-a-number": {"index.json": json.dumps({"manifests": [5]})},
    "digest-a-number": {"index.json": json.dumps({"manifests": [{"digest": 5}]})},
    "descriptor-without-digest": _oci({"schemaVersion": 2, "manifests": [{"size": 1}]}),
    "manifest-a-list": _oci([1]),
    "layers-a-number": _oci({"config": {"digest": "sha256:" + "0" * 64}, "layers": 7}),
    "indexes-nested-1500-deep": _nested(1500),
    "not-a-tar-member-list": {"index.json": "\x00\x01"},
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_malformed_archive_is_one_error(tmp_path: Path, case: str) -> None:
    archive = _tar(tmp_path / f"{case}.tar", CASES[case])
    proc = subprocess.run(WORKBENCH + ["image", "load", "--root", str(tmp_path / "root"), "-i", str(archive)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0, proc.stdout
    assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and str(archive) in lines[0], proc.stderr
