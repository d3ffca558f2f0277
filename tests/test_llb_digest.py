from workbench.llb.ops import Copy, ExecOp, FileOp, ImageSource, LocalSource, Vertex
from workbench.progress.events import SourceLocation


def _image() -> Vertex:
    return Vertex(ImageSource("localhost:5055/busybox:latest", "sha256:" + "a" * 64), name="[1/2] FROM")


def test_digest_ignores_name_and_source_map() -> None:
    a = Vertex(ExecOp(("sh", "-c", "true"), ("PATH=/bin",)), (_image(),), name="[2/2] RUN true")
    b = Vertex(ExecOp(("sh", "-c", "true"), ("PATH=/bin",)), (_image(),), name="other",
               source=SourceLocation("Dockerfile", 9, 9))
    assert a.digest == b.digest


def test_digest_changes_with_op_and_inputs() -> None:
    base = _image()
    a = Vertex(ExecOp(("sh", "-c", "true"), ()), (base,))
    assert a.digest != Vertex(ExecOp(("sh", "-c", "false"), ()), (base,)).digest
    other_base = Vertex(ImageSource("localhost:5055/busybox:latest", "sha256:" + "b" * 64))
    assert a.digest != Vertex(ExecOp(("sh", "-c", "true"), ()), (other_base,)).digest


def test_walk_orders_inputs_first_and_dedupes() -> None:
    base = _image()
    ctx = Vertex(LocalSource("context"))
    copy = Vertex(FileOp((Copy(1, "a", "/a"),)), (base, ctx))
    run = Vertex(ExecOp(("true",), ()), (copy,))
    top = Vertex(FileOp((Copy(1, "/x", "/y"),)), (run, Vertex(ImageSource("localhost:5055/busybox:latest",
                                                                          "sha256:" + "a" * 64))))
    order = [v.digest for v in top.walk()]
    assert len(order) == len(set(order)) == 5
    assert order.index(base.digest) < order.index(copy.digest) < order.index(run.digest) < order.index(top.digest)
