"""The unit tests need only the base and test dependencies (``scripts/unit-alone``).

Both tests run the check in a child interpreter, where every optional library (asyncpg,
redis, aiobotocore, moto, ...) is refused at import as if it were not installed.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CHECK = ROOT / "scripts" / "unit-alone"


def run_check(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(CHECK), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_unit_tests_pass_without_backend_libraries() -> None:
    here = Path(__file__).relative_to(ROOT)
    result = run_check("tests/unit", "-q", f"--ignore={here}")
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert " passed" in result.stdout


def test_the_check_fails_when_a_conftest_needs_one(tmp_path: Path) -> None:
    (tmp_path / "conftest.py").write_text("import redis\n")
    (tmp_path / "test_nothing.py").write_text("def test_nothing():\n    pass\n")
    result = run_check(str(tmp_path), "-q")
    assert result.returncode != 0
    assert "redis is refused" in result.stdout + result.stderr
