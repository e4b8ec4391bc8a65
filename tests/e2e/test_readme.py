"""The README's curl walkthrough runs as printed against a real server."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.e2e.server import Server

README = Path(__file__).resolve().parents[2] / "README.md"
pytestmark = pytest.mark.slow


def walkthrough() -> str:
    text = README.read_text()
    section = text.split("## A walkthrough with curl", 1)[1]
    match = re.search(r"```sh\n(.*?)```", section, re.S)
    assert match, "the walkthrough's shell block is missing"
    return match.group(1)


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_readme_walkthrough(tmp_path: Path) -> None:
    script = walkthrough()
    assert "P=http://127.0.0.1:8080" in script
    server = Server(tmp_path / "data", PARLEY_AUTH="token").start()
    try:
        script = script.replace("P=http://127.0.0.1:8080", f"P={server.url}")
        out = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", script],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        ).stdout
    finally:
        server.stop()
    assert '"member":true' in out
    assert '"message":"hi bob"' in out and '"message":"hello team"' in out
    assert '"blocked":true' in out
    assert out.rstrip().endswith(
        '{"error":{"code":"blocked","message":"the receiver has blocked you"}}'
    )
