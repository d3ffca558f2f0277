"""`--cache-to type=local,dest=DIR` / `--cache-from type=local,src=DIR` on a BuildKit daemon: the client serves DIR
as a content store over the session (workbench/remote/session/content.py) and tags the exported cache in
DIR/index.json. The layout is checked blob by blob; the import is checked on a daemon whose own cache was pruned
(this module's buildkitd v0.20, never the shared one). The content service itself is driven directly too:
digests checked before a blob lands, no name but a digest, read-only import stores."""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest

from tests.docker_daemon import DockerDaemon, docker_daemon  # noqa: F401  (the fixture)
from tests.test_remote_build import context_with, workbench
from tests.test_remote_options import buildkitd, cached_steps, error_lines, prune, remote  # noqa: F401
from tests.test_remote_session import serve  # noqa: F401  (the fixture)
from workbench.remote.session.content import PREFIX, STORE_HEADER, LocalCacheStore
from workbench.remote.session.proto import content_pb2 as pb
from workbench.remote.session.services import SessionServices

CACHED_RUN = "FROM localhost:5055/busybox\nCOPY hello.txt /\nRUN echo run-{tag}-$((2 + 3)) > /made && cat /made\n"
RUN_STEP = "[3/3] RUN echo run-{tag}-$((2 + 3)) > /made && cat /made"
CACHE_CONFIG = "application/vnd.buildkit.cacheconfig.v0"


def blob(cache: Path, digest: str) -> bytes:
    data = (cache / "blobs" / "sha256" / digest.split(":", 1)[1]).read_bytes()
    assert "sha256:" + hashlib.sha256(data).hexdigest() == digest
    return data


def check_layout(cache: Path) -> dict:
    """The cache index tagged latest in DIR/index.json; every blob of DIR is named by its digest."""
    assert json.loads((cache / "oci-layout").read_text()) == {"imageLayoutVersion": "1.0.0"}
    for path in (cache / "blobs" / "sha256").iterdir():
        assert hashlib.sha256(path.read_bytes()).hexdigest() == path.name, path
    top = json.loads((cache / "index.json").read_text())
    [entry] = [m for m in top["manifests"] if m["annotations"]["org.opencontainers.image.ref.name"] == "latest"]
    index = json.loads(blob(cache, entry["digest"]))
    assert entry["size"] == len(blob(cache, entry["digest"]))
    assert any(m["mediaType"] == CACHE_CONFIG for m in index["manifests"]), index
    for m in index["manifests"]:
        assert len(blob(cache, m["digest"])) == m["size"]
    return index


@pytest.mark.real
@pytest.mark.parametrize("frontend", [True, False], ids=["dockerfile.v0", "our-graph"])
def test_local_cache_export_then_import_after_prune(buildkitd: str, registry: str, tmp_path: Path,  # noqa: F811
                                                    root: Path, frontend: bool) -> None:
    tag = uuid.uuid4().hex[:12]
    ctx = context_with(tmp_path, CACHED_RUN.format(tag=tag))
    cache = tmp_path / "cache"
    def build(*args: str):  # type: ignore[no-untyped-def]
        if frontend:
            return remote(buildkitd, ctx, root, *args)
        return workbench("--addr", buildkitd, "--progress", "plain", *args, str(ctx), root=root)

    first = build("--cache-to", f"type=local,dest={cache},mode=max")
    assert first.returncode == 0, first.stderr
    assert f"run-{tag}-5" in first.stderr
    check_layout(cache)

    prune(buildkitd)
    second = build("--cache-from", f"type=local,src={cache}")
    assert second.returncode == 0, second.stderr
    assert f"run-{tag}-5" not in second.stderr  # nothing ran again: it came from DIR
    assert RUN_STEP.format(tag=tag) in cached_steps(second)


@pytest.mark.real
def test_local_cache_without_index_is_a_warning(buildkitd: str, registry: str, tmp_path: Path,  # noqa: F811
                                                root: Path) -> None:
    ctx = context_with(tmp_path, "FROM localhost:5055/busybox\n")
    empty = tmp_path / "nothing-here"
    r = remote(buildkitd, ctx, root, "--cache-from", f"type=local,src={empty}")
    assert r.returncode == 0, r.stderr
    assert f"--cache-from type=local,src={empty}: no cache tagged latest there (no index.json naming it): " \
           f"nothing imported" in r.stderr


@pytest.mark.real
def test_docker_local_cache(docker_daemon: DockerDaemon, buildkitd: str, registry: str,  # noqa: F811
                            tmp_path: Path, root: Path) -> None:
    """Docker 20.10's BuildKit imports a local cache (its importer is there) but has no local exporter."""
    ctx = context_with(tmp_path, "FROM localhost:5055/busybox\n")
    r = remote(docker_daemon.addr, ctx, root, "--cache-to", f"type=local,dest={tmp_path / 'cache'}")
    assert r.returncode == 1
    assert error_lines(r) == ["ERROR: failed to solve: --cache-to type=local is not supported by Docker 20.10's "
                              "BuildKit (it supports type=inline)"], r.stderr
    assert not (tmp_path / "cache").exists()

    tag = uuid.uuid4().hex[:12]
    ctx = context_with(tmp_path, CACHED_RUN.format(tag=tag), name="ctx2")
    (ctx / "hello.txt").write_text(f"only in this test: {tag}\n")  # no daemon has this COPY cached
    cache = tmp_path / "v020-cache"
    made = remote(buildkitd, ctx, root, "--cache-to", f"type=local,dest={cache},mode=max")
    assert made.returncode == 0, made.stderr
    layers = {m["digest"] for m in check_layout(cache)["manifests"] if m["mediaType"] != CACHE_CONFIG}
    used = remote(docker_daemon.addr, ctx, root, "--cache-from", f"type=local,src={cache}")
    assert used.returncode == 0, used.stderr
    # v0.8 keys the COPY as v0.20 does (not the RUN, run in the host's network here): its layer is read from DIR
    assert "[2/3] COPY hello.txt /" in cached_steps(used), used.stderr
    pulled = {line.split()[2] for line in used.stderr.splitlines() if line.split()[1:2] == ["pulling"]}
    assert pulled and pulled <= layers, used.stderr


# -- the content service, driven directly --------------------------------------------------------------------------

def _stubs(channel: grpc.Channel) -> dict[str, Callable]:
    return {
        "info": channel.unary_unary(PREFIX + "Info", request_serializer=pb.InfoRequest.SerializeToString,
                                    response_deserializer=pb.InfoResponse.FromString),
        "read": channel.unary_stream(PREFIX + "Read", request_serializer=pb.ReadContentRequest.SerializeToString,
                                     response_deserializer=pb.ReadContentResponse.FromString),
        "write": channel.stream_stream(PREFIX + "Write",
                                       request_serializer=pb.WriteContentRequest.SerializeToString,
                                       response_deserializer=pb.WriteContentResponse.FromString),
    }


def _served(serve: Callable, *stores: LocalCacheStore) -> dict[str, Callable]:  # noqa: F811
    return _stubs(serve(SessionServices(content_stores={s.store_id: s for s in stores}).handlers()))


def _md(store: LocalCacheStore) -> list[tuple[str, str]]:
    return [(STORE_HEADER, store.store_id)]


def _write(stubs: dict[str, Callable], store: LocalCacheStore, data: bytes, expected: str,
           chunk: int = 3) -> list:
    def requests():  # type: ignore[no-untyped-def]
        yield pb.WriteContentRequest(action=pb.STAT, ref="ref-1", total=len(data), expected=expected)
        for i in range(0, len(data), chunk):
            yield pb.WriteContentRequest(action=pb.WRITE, offset=i, data=data[i:i + chunk])
        yield pb.WriteContentRequest(action=pb.COMMIT, offset=len(data), total=len(data), expected=expected)

    return list(stubs["write"](requests(), metadata=_md(store), timeout=10))


def test_write_commits_a_verified_blob_then_reads_it(serve, tmp_path: Path) -> None:  # noqa: F811
    store = LocalCacheStore(tmp_path / "dest", writable=True)
    store.create("test")
    stubs = _served(serve, store)
    data = b"cache blob content " * 1000
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    answers = _write(stubs, store, data, digest, chunk=4096)
    assert answers[-1].digest == digest and answers[-1].offset == len(data)
    assert blob(store.dir, digest) == data
    assert [p.name for p in (store.dir / "blobs" / "sha256").iterdir()] == [digest.split(":")[1]]  # no temp left
    assert stubs["info"](pb.InfoRequest(digest=digest), metadata=_md(store), timeout=10).info.size == len(data)
    got = b"".join(r.data for r in stubs["read"](pb.ReadContentRequest(digest=digest, offset=5, size=100),
                                                 metadata=_md(store), timeout=10))
    assert got == data[5:105]
    with pytest.raises(grpc.RpcError) as e:  # written once: a second writer is told it exists
        _write(stubs, store, data, digest)
    assert e.value.code() == grpc.StatusCode.ALREADY_EXISTS


def test_a_blob_that_is_not_its_digest_never_lands(serve, tmp_path: Path) -> None:  # noqa: F811
    store = LocalCacheStore(tmp_path / "dest", writable=True)
    store.create("test")
    stubs = _served(serve, store)
    claimed = "sha256:" + hashlib.sha256(b"the real thing").hexdigest()
    with pytest.raises(grpc.RpcError) as e:
        _write(stubs, store, b"something else", claimed)
    assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "unexpected commit digest" in (e.value.details() or "")
    assert os.listdir(store.dir / "blobs" / "sha256") == []  # neither the blob nor a temp file


def test_only_digests_under_dir_are_read(serve, tmp_path: Path) -> None:  # noqa: F811
    (tmp_path / "secret").write_bytes(b"not for the daemon")
    src = tmp_path / "src"
    (src / "blobs" / "sha256").mkdir(parents=True)
    secret_digest = "sha256:" + hashlib.sha256(b"not for the daemon").hexdigest()
    (src / "blobs" / "sha256" / secret_digest.split(":")[1]).symlink_to(tmp_path / "secret")
    store = LocalCacheStore(src, writable=False)
    stubs = _served(serve, store)
    for digest, code in [("../../secret", grpc.StatusCode.INVALID_ARGUMENT),
                         ("sha256:../../../secret", grpc.StatusCode.INVALID_ARGUMENT),
                         (secret_digest, grpc.StatusCode.NOT_FOUND)]:  # a symlink is not a blob
        with pytest.raises(grpc.RpcError) as e:
            list(stubs["read"](pb.ReadContentRequest(digest=digest), metadata=_md(store), timeout=10))
        assert e.value.code() == code, digest
        with pytest.raises(grpc.RpcError) as e:
            stubs["info"](pb.InfoRequest(digest=digest), metadata=_md(store), timeout=10)
        assert e.value.code() == code, digest
    with pytest.raises(grpc.RpcError) as e:  # an import store is read-only
        _write(stubs, store, b"x", "sha256:" + hashlib.sha256(b"x").hexdigest())
    assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED
    with pytest.raises(grpc.RpcError) as e:  # only the stores this build registered
        list(stubs["read"](pb.ReadContentRequest(digest=secret_digest),
                           metadata=[(STORE_HEADER, f"local:{tmp_path}")], timeout=10))
    assert e.value.code() == grpc.StatusCode.NOT_FOUND


def test_blobs_dir_through_a_symlink_is_refused(serve, tmp_path: Path) -> None:  # noqa: F811
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "blobs").symlink_to(elsewhere)
    store = LocalCacheStore(dest, writable=True)
    stubs = _served(serve, store)
    with pytest.raises(grpc.RpcError):
        _write(stubs, store, b"x", "sha256:" + hashlib.sha256(b"x").hexdigest())
    assert os.listdir(elsewhere) == []


def test_tag_keeps_other_tags_and_refuses_an_unwritten_index(tmp_path: Path) -> None:
    from workbench.remote.session.content import CacheStoreError, tag_exported

    store = LocalCacheStore(tmp_path / "dest", writable=True)
    store.create("test")
    (store.dir / "blobs" / "sha256").mkdir(parents=True)
    data = b'{"manifests":[]}'
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    (store.dir / "blobs" / "sha256" / digest.split(":")[1]).write_bytes(data)
    other = {"mediaType": "x", "digest": "sha256:" + "0" * 64, "size": 1,
             "annotations": {"org.opencontainers.image.ref.name": "v1"}}
    (store.dir / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [other]}))
    desc = json.dumps({"mediaType": "application/vnd.oci.image.index.v1+json", "digest": digest,
                       "size": len(data)})
    tag_exported({store.store_id: store}, {store.store_id: "latest"}, {"cache.manifest": desc})
    tag_exported({store.store_id: store}, {store.store_id: "latest"}, {"cache.manifest": desc})  # replaced, once
    manifests = json.loads((store.dir / "index.json").read_text())["manifests"]
    assert [m["annotations"]["org.opencontainers.image.ref.name"] for m in manifests] == ["v1", "latest"]
    assert store.tagged("latest") == digest
    missing = json.dumps({"digest": "sha256:" + "1" * 64, "size": 3})
    with pytest.raises(CacheStoreError, match="which it did not write there"):
        tag_exported({store.store_id: store}, {store.store_id: "latest"}, {"cache.manifest": missing})
    with pytest.raises(CacheStoreError, match="cache.manifest is missing"):
        tag_exported({store.store_id: store}, {store.store_id: "latest"}, {})


def test_the_index_entry_holds_checked_fields_only(tmp_path: Path) -> None:
    """The daemon's cache.manifest descriptor: index.json gets its digest (a blob it wrote), that blob's size, an
    index media type and our tag alone; a malformed one is refused in one line; the last tagging wins."""
    from workbench.remote.session.content import CacheStoreError, tag_exported

    store = LocalCacheStore(tmp_path / "dest", writable=True)
    store.create("test")
    (store.dir / "blobs" / "sha256").mkdir(parents=True)
    data = b"{}"
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    (store.dir / "blobs" / "sha256" / digest.split(":")[1]).write_bytes(data)
    stores, tags = {store.store_id: store}, {store.store_id: "latest"}

    def tag(**descriptor: object) -> None:
        tag_exported(stores, tags, {"cache.manifest": json.dumps({"digest": digest, **descriptor})})

    tag(size=2, annotations={"io.containerd.image.name": "docker.io/library/alpine:latest",
                             "org.opencontainers.image.ref.name": "ignored"}, extra="x")
    tag(mediaType="application/vnd.docker.distribution.manifest.list.v2+json", annotations=["x"])
    manifests = json.loads((store.dir / "index.json").read_text())["manifests"]
    assert manifests == [{"mediaType": "application/vnd.docker.distribution.manifest.list.v2+json",
                          "digest": digest, "size": 2,
                          "annotations": {"org.opencontainers.image.ref.name": "latest"}}]
    assert store.tagged("docker.io/library/alpine:latest") is None
    for bad, message in [({"mediaType": "text/html\u202e"}, "media type 'text/html\\u202e' is not an image index"),
                         ({"size": 10**10}, f"size '10000000000' is not the 2 bytes of {digest}"),
                         ({"size": "2"}, "size '2' is not the 2 bytes"),
                         ({"digest": ["x"]}, "malformed digest")]:
        with pytest.raises(CacheStoreError, match="the daemon's cache index") as e:
            tag(**bad)
        assert message in str(e.value) and "\n" not in str(e.value)
    other = "sha256:" + "0" * 64  # an index.json where an older entry also names "latest" (kept: it is an image)
    (store.dir / "index.json").write_text(json.dumps({"manifests": [
        {"digest": other, "annotations": {"io.containerd.image.name": "x", "org.opencontainers.image.ref.name":
                                          "latest"}}]}))
    tag()
    assert store.tagged("latest") == digest
