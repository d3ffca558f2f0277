"""CDI conformance: each tests/cdi_cases case's image (or failure) must equal what BuildKit v0.20 gives.

The expected images were derived from BuildKit's documented rules (tests/cdi_cases/README.md), in the
shared conformance format, and are compared exactly as tests/test_conformance.py compares its cases.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import CONFORMANCE, WORKBENCH

sys.path.insert(0, str(CONFORMANCE))
import ocitree  # noqa: E402
import run as conformance_run  # noqa: E402

CASES_DIR = Path(__file__).parent / "cdi_cases"
CASES = sorted(p.name for p in CASES_DIR.iterdir() if (p / "Dockerfile").exists())


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cdi-conformance") / "root"


@pytest.mark.parametrize("case", CASES)
def test_case(case: str, registry: str, root: Path, tmp_path: Path) -> None:
    case_dir = CASES_DIR / case
    meta = conformance_run.load_case(str(case_dir))
    expected = json.loads((case_dir / "expected.json").read_text())
    out = tmp_path / "out.tar"
    cmd = conformance_run.workbench_cmd(str(case_dir), meta, str(out))
    assert "--cdi-spec-dir" in cmd
    cmd = WORKBENCH + ["build", "--root", str(root)] + cmd[2:]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    if expected.get("fails"):
        assert proc.returncode != 0, "built, but BuildKit fails this case"
        assert re.search(meta["error_pattern"], proc.stderr), proc.stderr[-800:]
        return
    assert proc.returncode == 0, proc.stderr[-2000:]
    base = ocitree.describe(registry)["tree"]
    diff = conformance_run.diff(expected, ocitree.against_base(ocitree.describe(str(out)), base))
    assert not diff, "\n".join(diff)


def test_expected_images_are_the_derivation() -> None:
    """expected.json files are exactly what derive.py writes from the documented rules."""
    sys.path.insert(0, str(CASES_DIR))
    import derive  # noqa: E402

    assert sorted(derive.CASES) == CASES
    for case, spec in derive.CASES.items():
        assert json.loads((CASES_DIR / case / "expected.json").read_text()) == derive.expected(spec), case
