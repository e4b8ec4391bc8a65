"""Clients generated from the OpenAPI document work unchanged against a live server.

The examples under ``examples/`` are generated afresh here from the live server's
``/openapi.json`` — openapi-python-client for Python, openapi-typescript (types) with
openapi-fetch (calls) for TypeScript — and each runs the README walkthrough: two users, a
group, private and group sends, polling with nextTimestamp, a block and the refused send.
Nothing generated is edited. Without openapi-python-client, or without Node.js and the
example's ``node_modules`` (``npm ci`` in ``examples/typescript-client``), a test skips; under
``CI=true`` it fails instead.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from parley.http.openapi import document
from tests.conftest import unavailable
from tests.e2e.server import Server

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
WALKTHROUGH_LINES = [
    "bob reads: ",
    "bob blocked alice; her send is refused: blocked",
    "walkthrough done",
]

pytestmark = pytest.mark.slow


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    live = Server(tmp_path / "data").start()
    try:
        yield live
    finally:
        live.kill()


def _run(command: list[str], cwd: Path, timeout: float = 240) -> str:
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    output = done.stdout + done.stderr
    assert done.returncode == 0, f"{command}:\n{output}"
    return output


def _walked(output: str) -> None:
    for line in WALKTHROUGH_LINES:
        assert line in output, output


def test_committed_document_is_current() -> None:
    """``examples/openapi.json``, the generators' committed input, is today's document."""
    committed = json.loads((EXAMPLES / "openapi.json").read_text())
    assert committed == document(), (
        "examples/openapi.json is stale: regenerate it (see README, 'Generated clients')"
    )


def test_python_client_walkthrough(server: Server, tmp_path: Path) -> None:
    generator = shutil.which("openapi-python-client", path=str(Path(sys.executable).parent))
    generator = generator or shutil.which("openapi-python-client")
    if generator is None:
        unavailable("openapi-python-client is not installed (pip install -e '.[test]')")
    work = tmp_path / "python-client"
    shutil.copytree(EXAMPLES / "python-client", work, ignore=shutil.ignore_patterns("parley_*"))
    env_generator = {"OPENAPI_PYTHON_CLIENT": str(generator)}
    done = subprocess.run(
        ["bash", "generate.sh", f"{server.url}/openapi.json"],
        cwd=work,
        env={**os.environ, **env_generator},
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Warning" not in done.stdout + done.stderr, done.stdout + done.stderr
    assert (work / "parley_client" / "api" / "default" / "send_message.py").is_file()
    _walked(_run([sys.executable, "walkthrough.py", server.url], cwd=work))


def test_typescript_client_walkthrough(server: Server, tmp_path: Path) -> None:
    example = EXAMPLES / "typescript-client"
    node, npx = shutil.which("node"), shutil.which("npx")
    if node is None or npx is None:
        unavailable("Node.js and npm are not installed")
    if not (example / "node_modules" / "openapi-fetch").is_dir():
        unavailable("run `npm ci` in examples/typescript-client first")
    work = tmp_path / "typescript-client"
    work.mkdir()
    for name in ("package.json", "tsconfig.json", "walkthrough.ts"):
        shutil.copy(example / name, work / name)
    (work / "node_modules").symlink_to(example / "node_modules")
    bin_dir = work / "node_modules" / ".bin"
    out = work / "generated" / "parley.d.ts"
    _run([str(bin_dir / "openapi-typescript"), f"{server.url}/openapi.json", "-o", str(out)], work)
    _run([str(bin_dir / "tsc"), "-p", "tsconfig.json"], work)  # type-checks the walkthrough
    _walked(_run([node, "dist/walkthrough.js", server.url], cwd=work))


def test_the_served_document_is_the_one_generated_from(server: Server) -> None:
    """What the live server serves is ``document()`` (token mode, its settings)."""
    assert httpx.get(f"{server.url}/openapi.json").json() == document()
