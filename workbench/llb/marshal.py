"""Vertex names as BuildKit's LLB marshaller leaves them (client/llb/state.go `marshal`).

Ops with the same digest are one vertex in a definition, and its metadata is merged with the last one written
winning (`mergeMetadata`'s maps.Copy). The marshaller writes each op object once, after its inputs, walking
depth first from the target with the inputs in the order the op lists them. So stages that share a base image
show its FROM under the name of the stage whose FROM object is written last.
"""

from __future__ import annotations

import dataclasses

from workbench.llb.ops import ExecOp, Vertex


def marshal_inputs(v: Vertex) -> list[Vertex]:
    """`v`'s inputs in the order BuildKit's op lists them, each object once: an exec's follow its mounts
    sorted by target (the rootfs is `/`, ExecOp.Inputs); other ops keep their own order."""
    if isinstance(v.op, ExecOp) and v.inputs:
        mounts = [("/", 0)] + [(m.target, m.input) for m in v.op.mounts if 0 <= m.input < len(v.inputs)]
        order = [v.inputs[i] for _, i in sorted(mounts, key=lambda m: m[0])]
    else:
        order = list(v.inputs)
    seen: set[int] = set()
    out = []
    for i in order:
        if id(i) not in seen:
            seen.add(id(i))
            out.append(i)
    return out


def marshalled_names(target: Vertex) -> dict[str, str]:
    """digest → the name BuildKit's definition of `target` gives that vertex (the last one written)."""
    names: dict[str, str] = {}
    visited: set[int] = set()
    stack: list[tuple[Vertex, bool]] = [(target, False)]
    while stack:  # marshal's recursion, without Python's stack limit (chains can be thousands deep)
        v, expanded = stack.pop()
        if expanded:
            if v.name:
                names[v.digest] = v.name
            continue
        if id(v) in visited:
            continue
        visited.add(id(v))
        stack.append((v, True))
        stack.extend((i, False) for i in reversed(marshal_inputs(v)))
    return names


def with_marshalled_names(target: Vertex) -> Vertex:
    """`target`'s graph with every vertex named as in BuildKit's definition (see marshalled_names); the
    vertices whose name and inputs are unchanged are kept as they are."""
    names = marshalled_names(target)
    done: dict[int, Vertex] = {}
    stack: list[tuple[Vertex, bool]] = [(target, False)]
    while stack:
        v, expanded = stack.pop()
        if id(v) in done:
            continue
        if not expanded:
            stack.append((v, True))
            stack.extend((i, False) for i in v.inputs if id(i) not in done)
            continue
        inputs = tuple(done[id(i)] for i in v.inputs)
        name = names.get(v.digest, v.name) if v.name else v.name
        if name == v.name and all(a is b for a, b in zip(inputs, v.inputs, strict=True)):
            done[id(v)] = v
            continue
        new = dataclasses.replace(v, inputs=inputs, name=name)
        new.__dict__["digest"] = v.digest  # same op and inputs: no need to hash the graph again
        done[id(v)] = new
    return done[id(target)]
