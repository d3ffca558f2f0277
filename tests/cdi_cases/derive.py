#!/usr/bin/env python3
"""Write each case's expected.json from the image BuildKit v0.20 builds for it, derived by hand from
BuildKit's documented rules (see README.md) — not from a BuildKit run and not from workbench's output.

usage: python3 derive.py    (rewrites cdi_cases/*/expected.json)
"""

import hashlib
import json
import os

HERE = os.path.dirname(os.path.abspath(__file__))
BASE_ENV = ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]

# case -> (files each RUN writes: path -> text, image config Env) or the error BuildKit stops with.
CASES = {
    # Auto-allowed by the spec annotation, so no --allow. `example.com/fake` is the first device of the kind in
    # sorted order (null0 < scratch). Spec-level edits come before the device's; CDI's AddMultipleProcessEnv
    # replaces MODE=image in the process env with MODE=spec (the image config keeps MODE=image). The device node
    # takes type c and 1:3 from the host's /dev/null and gets a devices-cgroup rule, so the write succeeds;
    # it lives in the /dev tmpfs, not in the layer.
    "c01-autoallow-env-node": ({"/env.txt": "spec 1 null0\n", "/node.txt": "character special file 1:3\n"},
                               [*BASE_ENV, "MODE=image"]),
    # Not auto-allowed and not granted: ValidateEntitlements refuses while loading the LLB.
    "c02-gated-denied": "error: failed to solve: failed to load LLB: device example.com/gated=a is requested by the "
                        "build but not allowed",
    # --allow device=example.com/gated=a grants exactly that device.
    "c03-gated-allowed": ({"/g.txt": "a\n"}, BASE_ENV),
    # --allow device=example.com/gated=b,alias=gpu: the request "gpu" is rewritten to example.com/gated=b.
    "c04-alias": ({"/g.txt": "b\n"}, BASE_ENV),
    # =* is every device of the kind (a, b, c in sorted order: b's GATED=b replaces a's GATED=a);
    # =fast matches no device name, so the devices whose class annotation is "fast" (b, c).
    "c05-wildcard-and-class": ({"/all.txt": "GATED=b\nGATED_C=1\n", "/class.txt": "GATED=b\nGATED_C=1\n"}, BASE_ENV),
    # An optional device that is not registered is skipped (a warning); the other device is injected.
    "c06-optional-missing": ({"/o.txt": "ok null0\n"}, BASE_ENV),
    # A required one that is not registered stops the build while loading the LLB.
    "c07-required-missing": 'error: failed to solve: failed to load LLB: required device "example.com/none" is not '
                            "registered",
    # A CDI tmpfs mount over /tmp (which the base has): what is written there does not reach the layer.
    "c08-tmpfs-mount": ({"/tmp-fs.txt": "tmpfs\n"}, BASE_ENV),
}


def file_entry(text: str) -> str:
    """A root-owned 0644 regular file as tests/conformance/ocitree.py describes it."""
    data = text.encode()
    entry = f"f 0644 0:0 {len(data)} {hashlib.sha256(data).hexdigest()[:16]}"
    return entry + (" " + json.dumps(text) if len(data) <= 120 and data.isascii() else "")


def expected(spec: object) -> dict[str, object]:
    if isinstance(spec, str):
        return {"fails": True, "error": spec}
    files, env = spec  # type: ignore[misc]
    return {"changed": {p: file_entry(t) for p, t in files.items()}, "config": {"Cmd": ["sh"], "Env": env},
            "removed": []}


if __name__ == "__main__":
    for case, spec in CASES.items():
        with open(os.path.join(HERE, case, "expected.json"), "w") as f:
            json.dump(expected(spec), f, indent=1, sort_keys=True)
            f.write("\n")
        print(case)
