"""``parley client`` against a real server process (memory storage, token mode)."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from parley.client.api import ParleyApi
from parley.client.cli import Exit, Runtime, main, run
from parley.client.config import load

pytestmark = pytest.mark.slow

SRC = Path(__file__).resolve().parents[2] / "src"
STARTUP_TIMEOUT = 20.0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = _free_port()
    log_path = tmp_path_factory.mktemp("server") / "server.log"
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(SRC), env.get("PYTHONPATH")]))
    env["PARLEY_DATA_DIR"] = str(log_path.parent / "data")  # uploaded files
    command = [
        sys.executable,
        "-m",
        "parley",
        "serve",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--storage",
        "memory",
        "--auth",
        "token",
        "--rate-limits",
        "off",
    ]
    url = f"http://127.0.0.1:{port}"
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while True:
            if process.poll() is not None:
                pytest.fail(f"server exited with {process.returncode}:\n{log_path.read_text()}")
            try:
                if httpx.get(f"{url}/healthz", timeout=1.0).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"server not healthy in {STARTUP_TIMEOUT} s:\n{log_path.read_text()}")
            time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


@dataclass
class Account:
    """One user of the CLI, with its own config file."""

    server: str
    config: Path
    capsys: pytest.CaptureFixture[str]

    def __call__(self, *argv: str) -> tuple[int, str, str]:
        code = main(["--server", self.server, "--config", str(self.config), *argv])
        out, err = self.capsys.readouterr()
        return code, out, err

    def ok(self, *argv: str) -> str:
        code, out, err = self(*argv)
        assert code == Exit.OK, f"{argv}: exit {code}: {err}"
        return out


def test_two_users_talk_through_the_cli(
    server: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    alice = Account(server, tmp_path / "alice.json", capsys)
    bob = Account(server, tmp_path / "bob.json", capsys)

    alice_id = alice.ok("register", "alice").strip()
    bob_id = bob.ok("register", "bob").strip()
    assert alice_id != bob_id
    saved = load(alice.config)
    assert (saved.user_id, saved.username, saved.server) == (alice_id, "alice", server)
    assert saved.token
    assert (alice.config.stat().st_mode & 0o777) == 0o600
    assert alice_id in alice.ok("whoami")
    assert "bob" in alice.ok("user", bob_id)

    group_id = alice.ok("group", "create", "team").strip()
    alice.ok("group", "add", group_id, bob_id)
    shown = alice.ok("group", "show", group_id)
    assert "team" in shown
    assert alice_id in shown
    assert bob_id in shown
    assert group_id in bob.ok("groups")

    alice.ok("send", "--to", bob_id, "hello bob")
    bob.ok("send", "--group", group_id, "hello team")

    table = bob.ok("messages")
    assert "hello bob" in table
    assert "hello team" in table
    assert "#team" in table
    assert "alice" in table
    assert len(table.splitlines()) == 3  # header and two messages

    conversation = alice.ok("messages", "--sent", "--json", "--limit", "1")
    assert len(conversation.splitlines()) == 2  # alice's private message and the group's

    bob.ok("block", alice_id)
    assert alice_id in bob.ok("blocked")
    code, out, err = alice("send", "--to", bob_id, "are you there?")
    assert code == Exit.FORBIDDEN
    assert out == ""
    assert err.startswith("error: forbidden: you are blocked by this user")
    alice.ok("send", "--group", group_id, "still in the group")  # blocking is private only
    bob.ok("unblock", alice_id)

    code, _, err = alice("group", "show", "g_does_not_exist")
    assert code == Exit.NOT_FOUND


def test_watch_receives_a_message_sent_meanwhile(
    server: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    alice = Account(server, tmp_path / "alice.json", capsys)
    bob = Account(server, tmp_path / "bob.json", capsys)
    alice_id = alice.ok("register", "alice").strip()
    bob.ok("register", "bob")
    bob_config = load(bob.config)
    assert bob_config.user_id is not None

    def send_later() -> None:
        time.sleep(1.0)
        with ParleyApi(server, bob_config.token) as api:
            api.send_private(bob_config.user_id or "", alice_id, "live message")

    sender = threading.Thread(target=send_later)
    started = time.monotonic()
    sender.start()
    try:
        code, out, err = alice("watch", "--max-messages", "1", "--max-seconds", "20")
    finally:
        sender.join(timeout=10)
    assert code == Exit.OK, err
    assert out.count("\n") == 1
    assert "live message" in out
    assert "bob" in out
    assert time.monotonic() - started < 15  # woken by the message, not by the timeout


def test_unreachable_server_is_reported(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = f"http://127.0.0.1:{_free_port()}"
    code = main(["--server", url, "--config", str(tmp_path / "c.json"), "register", "x"])
    assert code == Exit.UNREACHABLE
    assert capsys.readouterr().err == f"error: cannot reach server at {url} (connection refused)\n"


def test_devices_link_logout_and_password_sign_in(
    server: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    phone = Account(server, tmp_path / "phone.json", capsys)
    alice_id = phone.ok("register", "alice").strip()
    secret = "correct horse battery"
    asked: list[str] = []

    def typed(prompt: str) -> str:
        asked.append(prompt)
        return secret

    def run_as(config: Path, *argv: str) -> tuple[int, str, str]:
        code = run(
            ["--server", server, "--config", str(config), *argv], Runtime(read_password=typed)
        )
        out, err = capsys.readouterr()
        return code, out, err

    assert run_as(phone.config, "password")[0] == Exit.OK

    # link a laptop with a one-time token
    token = phone.ok("link", "--name", "laptop").strip()
    laptop = Account(server, tmp_path / "laptop.json", capsys)
    laptop.ok("login", "--user-id", alice_id, "--token", token)
    devices = laptop.ok("devices")
    assert "laptop" in devices and "unnamed device" in devices
    assert "laptop" in next(line for line in devices.splitlines() if line.startswith("*"))

    # sign in on a tablet with the password
    tablet = tmp_path / "tablet.json"
    code, _, err = run_as(
        tablet, "login", "--user-id", alice_id, "--password", "--device", "tablet"
    )
    assert code == Exit.OK, err
    assert asked[-1] == f"password for {alice_id}: "
    assert load(tablet).token and "tablet" in phone.ok("devices")

    # the phone signs the laptop out; the laptop signs itself out
    line = next(line for line in phone.ok("devices").splitlines() if "laptop" in line)
    laptop_id = re.findall(r"\bt_[\w-]+", line)[0]
    phone.ok("logout", laptop_id)
    code, _, err = laptop("devices")
    assert code == Exit.UNAUTHORIZED, err
    code, _, _ = run_as(tablet, "logout")
    assert code == Exit.OK and load(tablet).token is None
    remaining = phone.ok("devices")
    assert "tablet" not in remaining and "laptop" not in remaining

    # a wrong password signs nobody in
    asked.clear()
    secret = "not the password"
    code, _, err = run_as(tmp_path / "thief.json", "login", "--user-id", alice_id, "--password")
    assert code == Exit.UNAUTHORIZED and "wrong user id or password" in err


def test_conversations_history_and_read(
    server: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    alice = Account(server, tmp_path / "alice.json", capsys)
    bob = Account(server, tmp_path / "bob.json", capsys)
    alice_id = alice.ok("register", "alice").strip()
    bob_id = bob.ok("register", "bob").strip()
    for i in range(5):
        bob.ok("send", "--to", alice_id, f"note {i}")
        time.sleep(0.002)  # distinct milliseconds: pages of two hold two
    time.sleep(0.01)
    listed = alice.ok("conversations")
    assert "bob" in listed and "note 4" in listed
    assert listed.splitlines()[1].split()[2] == "5"  # five unread
    code, out, err = alice("history", bob_id, "--limit", "2", "--pages", "2")
    assert code == Exit.OK, err
    assert [line.split()[-1] for line in out.splitlines()[1:]] == ["1", "2", "3", "4"]
    assert "older: --before" in err
    older = err.split("--before")[1].split()[0]
    out = alice.ok("history", bob_id, "--before", older, "--json")
    assert [json.loads(line)["message"] for line in out.splitlines()] == ["note 0"]
    assert alice.ok("read", bob_id).startswith("read up to ")
    assert alice.ok("conversations").splitlines()[1].split()[2] == "0"
    (mine,) = [json.loads(line) for line in bob.ok("conversations", "--json").splitlines()]
    assert (
        mine["conversationId"] == alice_id
        and mine["peerReadUpTo"] == mine["lastMessage"]["timestamp"]
    )


def test_files_are_sent_and_saved(
    server: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    alice = Account(server, tmp_path / "alice.json", capsys)
    bob = Account(server, tmp_path / "bob.json", capsys)
    alice.ok("register", "alice")
    bob_id = bob.ok("register", "bob").strip()
    picture = tmp_path / "cat.png"
    picture.write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(300_000))
    notes = tmp_path / "notes.txt"
    notes.write_text("read me")
    alice.ok("send", "--to", bob_id, "--file", str(picture), "--file", str(notes), "look")
    alice.ok("send", "--to", bob_id, "--file", str(notes))  # text: the file's name
    (line,) = [json for json in bob.ok("messages", "--json").splitlines() if "look" in json]
    ids = re.findall(r"f_[A-Za-z0-9_-]+", line)
    assert len(ids) == 2
    table = bob.ok("messages")
    assert "[file " in table and "notes.txt" in table
    saved = tmp_path / "saved.png"
    assert "image/png" in bob.ok("download", ids[0], "-o", str(saved))
    assert saved.read_bytes() == picture.read_bytes()
    code, _, err = alice("send", "--to", bob_id, "--file", str(tmp_path / "missing"))
    assert code == Exit.USAGE and "no such file" in err
    code, _, _ = bob("download", "f_nothing", "-o", str(tmp_path / "x"))
    assert code == Exit.NOT_FOUND
