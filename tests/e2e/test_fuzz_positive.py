"""Positive schema fuzzing: what the document calls valid, the server accepts.

The schemathesis command line drives a live ``parley serve`` (each auth mode, memory storage)
from its own ``/openapi.json``, in positive mode only (examples, coverage and fuzzing
phases; seeded and deterministic, so every run sends the same requests). Real users, a
group and a message are made first; ``fuzz_hooks`` puts their ids and the caller's token
into the generated requests.

Accepted means a 2xx answer, or a 403/404/409 that the operation documents and that depends
on state (a block that already exists, a member already added). At least 95 % of the valid
requests must be accepted, and schemathesis must raise no warning that schema and server
disagree (or any other warning), and find no failure in its checks.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import httpx
import pytest

from parley.http.openapi import TOKEN_MODE_ONLY, document
from tests.e2e.server import Server

# Left out of this run, each tested on its own (tests/e2e/test_accounts.py): operations that
# end the run's own session (its token, its account), and the ones whose answer depends on a
# password the generator cannot know (401 bad_credentials is their right answer to a guess).
SESSION_ENDING = ("revoke_token", "delete_user")
NEEDS_A_SECRET = ("sign_in", "set_password")


def excluded(token_mode: bool) -> list[str]:
    names = {*SESSION_ENDING, *NEEDS_A_SECRET}
    if not token_mode:
        names |= set(TOKEN_MODE_ONLY)
    return sorted(names)


ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = 30  # generated requests per operation, on top of examples and coverage cases
STATE_DEPENDENT = {403, 404, 409}
CONFIG = """
seed = 20261201
warnings = {{ fail-on = true }}
{headers}

[generation]
mode = "positive"
max-examples = {examples}
deterministic = true
database = "none"

[phases]
examples = {{ enabled = true }}
coverage = {{ enabled = true }}
fuzzing = {{ enabled = true }}
stateful = {{ enabled = false }}

[checks]
positive_data_acceptance = {{ enabled = true, expected-statuses = ["2XX", "403", "404", "409"] }}

[[operations]]
# A live stream never ends: stop at its first data event, or after 0.3 s of none.
include-operation-id = "stream_messages"
max-stream-events = 1
request-timeout = 0.3
generation = {{ max-examples = 10 }}
"""


def _world(url: str, token_mode: bool) -> dict[str, str]:
    with httpx.Client(base_url=url, timeout=10) as client:

        def user(name: str) -> tuple[str, str]:
            r = client.post("/v1/users/create", json={"username": name})
            r.raise_for_status()
            return r.json()["userId"], r.json().get("token", "")

        me, token = user("me")
        other, _ = user("other")
        auth = {"Authorization": f"Bearer {token}"} if token_mode else {}
        r = client.post("/v1/groups/create", json={"groupName": "mine"}, headers=auth)
        r.raise_for_status()
        group = r.json()["groupId"]
        if not token_mode:  # open mode: a group starts empty
            client.post(f"/v1/groups/{group}?op=add", json={"userId": me}).raise_for_status()
        r = client.post(
            "/v1/messages/send?type=group",
            json={"senderId": me, "groupId": group, "message": "hello"},
            headers=auth,
        )
        r.raise_for_status()
        message = r.json()["messageId"]
        r = client.post("/v1/media", content=b"a file", headers=auth)
        r.raise_for_status()
        media = r.json()["mediaId"]
    return {
        "me": me,
        "other": other,
        "group": group,
        "token": token,
        "message": message,
        "media": media,
    }


@pytest.mark.parametrize("auth", ["token", "none"])
def test_valid_requests_are_accepted(auth: str, tmp_path: Path) -> None:
    token_mode = auth == "token"
    server = Server(tmp_path / "data", PARLEY_STORAGE="memory", PARLEY_AUTH=auth).start()
    try:
        w = _world(server.url, token_mode)
        world_file = tmp_path / "world.json"
        world_file.write_text(json.dumps(w))
        config = tmp_path / "schemathesis.toml"
        headers = f'headers = {{ Authorization = "Bearer {w["token"]}" }}' if token_mode else ""
        config.write_text(CONFIG.format(headers=headers, examples=EXAMPLES))
        log, report = tmp_path / "answers.ndjson", tmp_path / "report.json"
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
            "SCHEMATHESIS_HOOKS": "tests.e2e.fuzz_hooks",
            "PARLEY_FUZZ_WORLD": str(world_file),
            "PARLEY_FUZZ_LOG": str(log),
        }
        run = subprocess.run(
            [
                sys.executable,
                "-m",
                "schemathesis.cli",
                "--config-file",
                str(config),
                "run",
                f"{server.url}/openapi.json",
                "--workers",
                "1",
                "--mode",
                "positive",
                # an operation that never succeeds in this mode has no valid requests
                *[f"--exclude-operation-id={name}" for name in excluded(token_mode)],
                "--report",
                "json",
                "--report-json-path",
                str(report),
            ],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=300,
        )
    finally:
        server.kill()
    output = run.stdout[-6000:] + run.stderr[-3000:]
    assert run.returncode == 0, output
    summary = json.loads(report.read_text())
    warnings = {kind: labels for kind, labels in summary["warnings"].items() if labels}
    assert not warnings, (warnings, output)

    answers = [json.loads(line) for line in log.read_text().splitlines()]
    positive = [a for a in answers if a["mode"] == "positive"]
    assert len(positive) >= 9 * EXAMPLES, len(positive)  # the stateless ones have fewer
    doc = document(token_mode)
    documented = {
        f"{method.upper()} {path}": {int(s) for s in op["responses"]}
        for path, item in doc["paths"].items()
        for method, op in item.items()
    }

    def accepted(a: dict[str, object]) -> bool:
        status = a["status"]
        assert isinstance(status, int)
        return 200 <= status < 300 or (
            status in STATE_DEPENDENT and status in documented[str(a["operation"])]
        )

    refused = Counter((a["operation"], a["status"]) for a in positive if not accepted(a))
    rate = sum(map(accepted, positive)) / len(positive)
    ok = sum(200 <= int(a["status"]) < 300 for a in positive) / len(positive)
    figure = f"{len(positive)} valid requests, {rate:.1%} accepted, {ok:.1%} 2xx"
    print(f"positive fuzzing, auth {auth}: {figure}")
    assert rate >= 0.95, (rate, refused)
