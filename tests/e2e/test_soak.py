"""A short soak (30 s after a 5 s warm-up): ``loadtest/soak.py`` against a real server, with
every answer a 200, no message seen twice and every private message delivered. Memory
growth is judged by the full five-minute run (``loadtest/soak.py --minutes 5``), not here:
30 seconds are too short for a fair figure."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

SOAK = Path(__file__).resolve().parents[2] / "loadtest" / "soak.py"


def test_short_soak_has_no_errors() -> None:
    run = subprocess.run(
        [sys.executable, str(SOAK), "--minutes", "0.5", "--warmup", "5", "--max-growth", "1000"],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "errors:            0" in run.stdout
    assert "send_private" in run.stdout and "long_poll" in run.stdout
