"""zstd layers in bounded memory (issue 19): fixed-size jobs and as many workers as `ZSTD_MEMORY` holds, the bytes
the same whatever the thread count, also when the input ends exactly on a job boundary."""

from __future__ import annotations

import io
import random
import subprocess
import sys
import textwrap

import pytest
import zstandard

from workbench.fsutil.compress import write_compressed

ZSTD_JOB = 4 << 20  # workbench.fsutil.compress.ZSTD_JOB (spelt out: the test also runs against older code)

_MEASURE = textwrap.dedent("""
    import io, random, sys
    from workbench.fsutil.compress import write_compressed

    level, threads, mib = (int(a) for a in sys.argv[1:4])

    def hwm():
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmHWM")) * 1024

    rng = random.Random(1)
    words = [bytes(rng.choice(b"abcdefghijklmnop ") for _ in range(rng.randint(2, 9))) for _ in range(5000)]
    text = b" ".join(rng.choice(words) for _ in range(200000))[:1 << 20]

    class Null(io.RawIOBase):
        def writable(self):
            return True

        def write(self, b):
            return memoryview(b).nbytes

    def fill(w):
        for i in range(mib):  # half text-like, half random, 1 MiB a write
            w.write(text[i * 997:] + text[:i * 997] if i % 2 else rng.randbytes(1 << 20))

    before = hwm()
    write_compressed(fill, Null(), "zstd", level, threads)
    print(hwm() - before)
""")


def _growth(level: int, threads: int, mib: int) -> int:
    proc = subprocess.run([sys.executable, "-c", _MEASURE, str(level), str(threads), str(mib)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return int(proc.stdout.strip())


@pytest.mark.parametrize(("level", "mib", "bound"), [(3, 64, 60), (19, 24, 80)])
def test_one_zstd_writer_stays_within_its_memory(level: int, mib: int, bound: int) -> None:
    """8 threads asked for: before, libzstd's default jobs (8 MiB at level 3, 32 MiB at 19) on 8 workers grew
    the peak RSS by 80-90 MiB (64 MiB in, level 3) and ~105 MiB (24 MiB in, level 19); now ~35 and ~55."""
    grown = _growth(level, 8, mib)
    assert grown < bound << 20, f"peak RSS grew by {grown >> 20} MiB compressing {mib} MiB at zstd level {level}"


def _data(size: int) -> bytes:
    rng = random.Random(size)
    words = [bytes(rng.choice(b"abcdefghij /._-") for _ in range(rng.randint(2, 9))) for _ in range(3000)]
    text = b" ".join(rng.choice(words) for _ in range(size // 5))
    out = bytearray()
    while len(out) < size:  # text-like stretches and random ones, so jobs take different times
        out += text[len(out) % 4096: len(out) % 4096 + (1 << 19)] if rng.random() < 0.7 else rng.randbytes(1 << 19)
    return bytes(out[:size])


@pytest.mark.parametrize(("level", "size"), [
    (3, 3 * ZSTD_JOB),  # ends on a job boundary: whether the last full job left before the end was timing
    (3, 3 * ZSTD_JOB + 1),
    (3, ZSTD_JOB),
    (1, 0),
    (19, 2 * ZSTD_JOB),
])
def test_zstd_same_bytes_whatever_the_thread_count(level: int, size: int) -> None:
    data = _data(size)
    seen = set()
    for threads in (1, 2, 3, 8, 1, 8, 2) if level < 19 else (1, 8, 3):  # level 19 is slow: fewer runs
        out = io.BytesIO()

        def fill(w: object) -> None:
            for at in range(0, len(data), 1 << 20):
                w.write(data[at:at + (1 << 20)])  # type: ignore[attr-defined]

        seen.add(write_compressed(fill, out, "zstd", level, threads))
        assert zstandard.ZstdDecompressor().stream_reader(io.BytesIO(out.getvalue())).read() == data
    assert len(seen) == 1, seen
