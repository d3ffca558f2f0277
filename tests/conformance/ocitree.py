#!/usr/bin/env python3
"""Read an OCI image archive (tar of an OCI layout) and describe what the image holds.

describe(path) -> {"config": {...selected config fields...}, "tree": {path: entry}} where the tree is the
root filesystem after applying every layer (whiteouts honoured), each entry a short string:
  d 0755 0:0 | f 0644 0:0 <size> <sha256-prefix> ["short text"] | l 0777 0:0 -> target | h -> target | c/b major:minor
mtimes are left out on purpose: they differ from build to build.
"""
import gzip
import hashlib
import io
import json
import posixpath
import sys
import tarfile

CONFIG_FIELDS = ["User", "ExposedPorts", "Env", "Entrypoint", "Cmd", "Volumes", "WorkingDir",
                 "Labels", "StopSignal", "Healthcheck", "Shell", "OnBuild"]


def _open_layout(path):
    tf = tarfile.open(path)
    names = {m.name.lstrip("./"): m for m in tf.getmembers()}

    def blob(digest):
        algo, hexd = digest.split(":", 1)
        return tf.extractfile(names[f"blobs/{algo}/{hexd}"]).read()

    return json.loads(tf.extractfile(names["index.json"]).read()), blob


def _manifest(index, blob):
    desc = index["manifests"][0]
    doc = json.loads(blob(desc["digest"]))
    while "manifests" in doc:  # nested index (multi-platform or attestation wrappers)
        plain = [m for m in doc["manifests"]
                 if m.get("annotations", {}).get("vnd.docker.reference.type") != "attestation-manifest"]
        doc = json.loads(blob(plain[0]["digest"]))
    return doc


def _layer_bytes(raw):
    if raw[:2] == b"\x1f\x8b":
        return gzip.decompress(raw)
    if raw[:4] == b"\x28\xb5\x2f\xfd":
        import zstandard
        return zstandard.ZstdDecompressor().decompressobj().decompress(raw)
    return raw


def _apply(tree, layer):
    with tarfile.open(fileobj=io.BytesIO(layer)) as tf:
        for m in tf:
            name = "/" + posixpath.normpath(m.name.lstrip("./")).lstrip("/")
            if name == "/.":
                continue
            base, leaf = posixpath.split(name)
            if leaf == ".wh..wh..opq":
                for p in [p for p in tree if p.startswith(base.rstrip("/") + "/")]:
                    del tree[p]
                continue
            if leaf.startswith(".wh."):
                gone = posixpath.join(base, leaf[4:])
                for p in [p for p in tree if p == gone or p.startswith(gone + "/")]:
                    del tree[p]
                continue
            own = f"{m.mode & 0o7777:04o} {m.uid}:{m.gid}"
            if m.isdir():
                tree[name] = f"d {own}"
            elif m.issym():
                tree[name] = f"l {own} -> {m.linkname}"
            elif m.islnk():
                target = "/" + m.linkname.lstrip("./")
                tree[name] = tree.get(target, f"h -> {target}")
            elif m.ischr() or m.isblk():
                tree[name] = f"{'c' if m.ischr() else 'b'} {own} {m.devmajor}:{m.devminor}"
            elif m.isfifo():
                tree[name] = f"p {own}"
            else:
                data = tf.extractfile(m).read()
                entry = f"f {own} {len(data)} {hashlib.sha256(data).hexdigest()[:16]}"
                if len(data) <= 120 and data.isascii():  # small text: show it, to make a mismatch readable
                    entry += " " + json.dumps(data.decode())
                tree[name] = entry


def describe(path):
    index, blob = _open_layout(path)
    manifest = _manifest(index, blob)
    config = json.loads(blob(manifest["config"]["digest"]))
    tree = {}
    for layer in manifest["layers"]:
        _apply(tree, _layer_bytes(blob(layer["digest"])))
    cfg = config.get("config", {})
    return {"config": {k: cfg[k] for k in CONFIG_FIELDS if cfg.get(k) not in (None, [], {}, "")},
            "tree": tree}


def against_base(desc, base_tree):
    """Keep only what differs from the base image's tree: added or changed entries, and removals."""
    tree = desc["tree"]
    changed = {p: e for p, e in tree.items() if base_tree.get(p) != e}
    removed = sorted(p for p in base_tree if p not in tree)
    return {"config": desc["config"], "changed": changed, "removed": removed}


if __name__ == "__main__":
    json.dump(describe(sys.argv[1]), sys.stdout, indent=1, sort_keys=True)
