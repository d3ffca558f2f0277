"""The cache store is shared by processes: records from one are seen by another, first writer wins."""

import subprocess
import sys
from pathlib import Path

from workbench.cache.store import CacheStore, LayerBlob


def test_records_survive_and_first_writer_wins(tmp_path: Path) -> None:
    db = tmp_path / "cache.db"
    s = CacheStore(db)
    assert s.lookup("k") is None
    assert s.record("k", ["a", "b"]) == ["a", "b"]
    assert s.record("k", ["c"]) == ["a", "b"]
    s.record_layer_blob("a", LayerBlob("sha256:1", "sha256:2", 3, "application/vnd.oci.image.layer.v1.tar+gzip"))
    s.close()
    code = (
        "import sys; from pathlib import Path; from workbench.cache.store import CacheStore;"
        f"s = CacheStore(Path({str(db)!r})); print(s.lookup('k'), s.layer_blob('a').digest);"
        "s.record('k2', ['z'])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "['a', 'b'] sha256:2"
    assert CacheStore(db).lookup("k2") == ["z"]


def test_concurrent_writers(tmp_path: Path) -> None:
    db = tmp_path / "cache.db"
    CacheStore(db).close()
    code = (
        "import sys; from pathlib import Path; from workbench.cache.store import CacheStore;"
        f"s = CacheStore(Path({str(db)!r}));"
        "[s.record(f'{sys.argv[1]}-{i}', [str(i)]) for i in range(200)]"
    )
    procs = [subprocess.Popen([sys.executable, "-c", code, str(n)]) for n in range(3)]
    assert all(p.wait() == 0 for p in procs)
    s = CacheStore(db)
    assert all(s.lookup(f"{n}-199") == ["199"] for n in range(3))
