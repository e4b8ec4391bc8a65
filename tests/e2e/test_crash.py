"""kill -9 during a burst of sends on SQLite: every acknowledged message survives, exactly
once, and retries with the same Idempotency-Key store nothing twice."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e.crash import kill_during_burst_and_check

pytestmark = pytest.mark.slow


async def test_kill_9_loses_no_acknowledged_send(tmp_path: Path) -> None:
    acked, attempted = await kill_during_burst_and_check(
        tmp_path / "data", {"PARLEY_STORAGE": "sqlite"}
    )
    print(f"\nkill -9 on sqlite: {acked} acknowledged, {attempted} attempted")
