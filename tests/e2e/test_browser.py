"""The web chat page, driven in Chromium through Playwright against a real server process.

Two browser contexts (Alice and Bob) sign up in token mode, share a group, exchange private and
group messages that arrive live (long-poll, no reload), then Bob blocks Alice: her next private
message is refused on her page while group messages still flow. Screenshots of both pages at
each step, and of a phone-sized viewport, go to ``test-artifacts/browser/``. Two shorter tests
load every ES module of the page (no console error, each served as JavaScript) and take the
paths the scenario leaves out (sign out and in, unblock, remove a member, leave a group).

Needs the ``playwright`` Python package and Debian's Chromium at ``/usr/bin/chromium`` (no
browser download). Without them the test is skipped, except under ``CI=true`` where it fails.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page, Route

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts" / "browser"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--headless=new",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
HEALTH_TIMEOUT_S = 20.0
EXPECT_TIMEOUT_MS = 10_000
DESKTOP = {"width": 1200, "height": 800}
PHONE = {"width": 390, "height": 844}


def _unavailable_reason() -> str | None:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError as exc:
        return f"playwright is not importable ({exc}); install it with `pip install playwright`"
    if not os.path.exists(CHROMIUM):
        return f"Chromium not found at {CHROMIUM}; install it with `apt-get install chromium`"
    return None


def _require_browser() -> None:
    reason = _unavailable_reason()
    if reason is None:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"browser test cannot run under CI=true: {reason}")
    pytest.skip(reason)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/healthz", timeout=2) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


@pytest.fixture
def server_url(tmp_path: Path) -> Iterator[str]:
    _require_browser()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    env = dict(os.environ)
    src = str(ROOT / "src")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (src, env.get("PYTHONPATH")) if p)
    env["PARLEY_DATA_DIR"] = str(tmp_path / "data")  # uploaded files
    log_path = ARTIFACTS / "server.log"
    log: IO[bytes] = open(log_path, "wb")  # noqa: SIM115 - closed in the finally below
    command = [sys.executable, "-m", "parley", "serve", "--host", "127.0.0.1"]
    command += ["--port", str(port), "--storage", "memory", "--auth", "token"]
    command += ["--rate-limits", "off"]
    proc = subprocess.Popen(
        command,
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + HEALTH_TIMEOUT_S
        while not _healthy(url):
            if proc.poll() is not None:
                pytest.fail(
                    f"parley serve exited with {proc.returncode}:\n"
                    + log_path.read_text(errors="replace")[-4000:]
                )
            if time.monotonic() > deadline:
                pytest.fail(
                    f"parley serve did not answer /healthz within {HEALTH_TIMEOUT_S} s:\n"
                    + log_path.read_text(errors="replace")[-4000:]
                )
            time.sleep(0.1)
        yield url
    finally:
        _stop(proc)
        log.close()


@pytest.fixture
def browser() -> Iterator[Browser]:
    _require_browser()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            yield chromium
        finally:
            chromium.close()


def _shot(page: Page, name: str) -> None:
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=False)


@contextmanager
def two_people(browser: Browser, **options: Any) -> Iterator[tuple[Page, Page, list[str]]]:
    """Alice's and Bob's pages, each in a browser context of its own (two people, or two
    devices), with every uncaught page error collected; the contexts close on the way out."""
    errors: list[str] = []
    contexts = [browser.new_context(viewport=DESKTOP, **options) for _ in range(2)]
    try:
        pages = [context.new_page() for context in contexts]
        for who, page in zip(("alice", "bob"), pages, strict=True):
            page.set_default_timeout(EXPECT_TIMEOUT_MS)
            page.on("pageerror", lambda exc, who=who: errors.append(f"{who}: {exc}"))
        yield pages[0], pages[1], errors
    finally:
        for context in contexts:
            context.close()


def _sign_up(page: Page, base: str, username: str) -> str:
    from playwright.sync_api import expect

    page.goto(f"{base}/")
    expect(page.get_by_role("heading", name="Welcome to Parley")).to_be_visible()
    page.get_by_label("Username", exact=True).fill(username)
    page.get_by_role("button", name="Create account").click()
    expect(page.locator("#me-name")).to_have_text(username)
    user_id = page.get_by_role("textbox", name="Your user id").input_value()
    assert user_id, "the page shows no user id after sign-up"
    stored = page.evaluate("() => JSON.parse(localStorage.getItem('parley.session'))")
    assert stored["userId"] == user_id
    assert stored["username"] == username
    assert stored["token"], "the token is not kept in localStorage"
    return user_id


def _send(page: Page, text: str) -> None:
    box = page.get_by_label("Message", exact=True)
    box.fill(text)
    box.press("Enter")


def _conversation(page: Page, name: str) -> Any:
    exact = re.compile(rf"^{re.escape(name)}( \(blocked\))?$")
    return page.locator("#conversation-list button.conv").filter(
        has=page.locator(".conv-name", has_text=exact)
    )


def _open_conversation(page: Page, name: str) -> None:
    from playwright.sync_api import expect

    button = _conversation(page, name)
    expect(button).to_be_visible()
    button.click()
    expect(page.locator("#chat-title")).to_have_text(name)


def _sent(page: Page, text: str) -> Any:
    return page.locator('#messages .msg[data-state="sent"]', has_text=text)


def test_every_module_of_the_page_loads(server_url: str, browser: Browser) -> None:
    """The page is ES modules: one that fails to load (not found, served with a type that is not
    JavaScript, a syntax error, an import of a name another module does not export) stops the
    whole page. Every module file of the page must be fetched as JavaScript, with no console
    error, no uncaught exception and no failed request, and the page must start."""
    from playwright.sync_api import Response, expect

    static = ROOT / "src" / "parley" / "web" / "static"
    modules = {p.relative_to(static).as_posix() for p in static.rglob("*.js")}
    problems: list[str] = []
    scripts: dict[str, str] = {}  # path -> content-type of every script the page fetched

    def on_response(response: Response) -> None:
        if response.status >= 400:
            problems.append(f"{response.status} for {response.url}")
        if response.request.resource_type == "script":
            path = response.url.removeprefix(server_url + "/")
            scripts[path] = response.headers.get("content-type", "")

    context = browser.new_context(viewport=DESKTOP)
    try:
        page = context.new_page()
        page.on(
            "console",
            lambda m: problems.append(f"console: {m.text}") if m.type == "error" else None,
        )
        page.on("pageerror", lambda exc: problems.append(f"uncaught: {exc}"))
        page.on("requestfailed", lambda req: problems.append(f"failed: {req.url} {req.failure}"))
        page.on("response", on_response)
        page.goto(f"{server_url}/")
        # The sign-up form is hidden in the HTML; only the entry module, run after every module
        # it imports, shows and focuses it.
        expect(page.get_by_role("heading", name="Welcome to Parley")).to_be_visible()
        expect(page.get_by_label("Username", exact=True)).to_be_focused()
        page.wait_for_load_state("networkidle")
    finally:
        context.close()
    assert not problems, problems
    assert set(scripts) == modules, f"fetched {sorted(scripts)}, on disk {sorted(modules)}"
    wrong = {path: kind for path, kind in scripts.items() if not kind.startswith("text/javascript")}
    assert not wrong, f"scripts not served as JavaScript: {wrong}"


def test_two_users_chat_live_block_and_phone_layout(server_url: str, browser: Browser) -> None:
    from playwright.sync_api import expect

    expect.set_options(timeout=EXPECT_TIMEOUT_MS)
    started = time.monotonic()
    errors: list[str] = []
    logs: list[str] = []  # console and failed requests of both pages, saved for diagnosis

    alice_ctx = browser.new_context(viewport=DESKTOP)
    bob_ctx = browser.new_context(viewport=DESKTOP)
    try:
        alice = alice_ctx.new_page()
        bob = bob_ctx.new_page()
        for who, page in (("alice", alice), ("bob", bob)):
            page.set_default_timeout(EXPECT_TIMEOUT_MS)
            page.on("pageerror", lambda exc, who=who: errors.append(f"{who}: {exc}"))
            page.on(
                "console", lambda msg, who=who: logs.append(f"{who} console {msg.type}: {msg.text}")
            )
            page.on(
                "requestfailed",
                lambda req, who=who: logs.append(f"{who} request failed: {req.url} {req.failure}"),
            )

        # --- sign up -------------------------------------------------------------------
        alice_id = _sign_up(alice, server_url, "Alice")
        bob_id = _sign_up(bob, server_url, "Bob")
        assert alice_id != bob_id
        expect(alice.get_by_role("region", name="Save your token")).to_be_visible()
        _shot(alice, "01-alice-signed-up")
        _shot(bob, "01-bob-signed-up")

        # --- Alice creates a group and adds Bob (his id read from his page) -------------
        alice.get_by_label("New group — name").fill("Weekend plans")
        alice.get_by_role("button", name="Create group").click()
        expect(alice.locator("#chat-title")).to_have_text("Weekend plans")
        alice.get_by_label("Add a member — paste their user id").fill(bob_id)
        alice.get_by_role("button", name="Add", exact=True).click()
        members = alice.get_by_role("region", name="Group members")
        expect(members.get_by_text("Bob", exact=True)).to_be_visible()
        expect(alice.locator("#chat-subtitle")).to_have_text("Group · 2 members")
        _shot(alice, "02-alice-group-created")

        # --- group messages, both ways, live ---------------------------------------------
        _send(alice, "Hi group, Alice here")
        expect(_sent(alice, "Hi group, Alice here")).to_be_visible()
        # Bob was added while his long-poll was waiting: the group and its message must still
        # show up on his page within seconds, without a reload.
        expect(
            _conversation(bob, "Weekend plans"),
            "the group Bob was just added to, with Alice's message, did not appear on his page"
            " (the server must wake a waiting long-poll for a group its user joined meanwhile)",
        ).to_be_visible()
        _open_conversation(bob, "Weekend plans")
        expect(_sent(bob, "Hi group, Alice here")).to_be_visible()
        _send(bob, "Hello from Bob")
        expect(_sent(alice, "Hello from Bob")).to_be_visible()  # Alice's open chat updates
        _shot(alice, "03-alice-group-chat")
        _shot(bob, "03-bob-group-chat")

        # --- private messages, both ways, live -------------------------------------------
        bob.get_by_label("New private conversation — paste a user id").fill(alice_id)
        bob.get_by_role("button", name="Open", exact=True).click()
        expect(bob.locator("#chat-title")).to_have_text("Alice")
        # The first answer to this send is lost on the way back (the server stored the
        # message): the page retries with the same Idempotency-Key and nobody sees a duplicate.
        send_keys: list[str | None] = []

        def lose_first_answer(route: Route) -> None:
            send_keys.append(route.request.headers.get("idempotency-key"))
            if len(send_keys) == 1:
                route.fetch()
                route.abort("connectionreset")
            else:
                route.continue_()

        bob.route("**/v1/messages/send?type=private", lose_first_answer)
        _send(bob, "Private hello to Alice")
        expect(_sent(bob, "Private hello to Alice")).to_be_visible()
        deadline = time.monotonic() + 5
        while len(send_keys) < 2 and time.monotonic() < deadline:
            bob.wait_for_timeout(50)  # the retry follows a short back-off
        bob.unroute("**/v1/messages/send?type=private")
        assert len(send_keys) == 2, send_keys
        assert send_keys[0] and send_keys[0] == send_keys[1], send_keys
        private_row = _conversation(alice, "Bob")
        expect(private_row).to_have_attribute("aria-label", "Bob, 1 unread")
        _open_conversation(alice, "Bob")
        expect(_sent(alice, "Private hello to Alice")).to_have_count(1)
        bob_copies = bob.locator("#messages .msg", has_text="Private hello to Alice")
        expect(bob_copies).to_have_count(1)
        expect(bob_copies).to_have_attribute("data-state", "sent")
        _send(alice, "Hi Bob, privately")
        expect(_sent(bob, "Hi Bob, privately")).to_be_visible()  # Bob's open chat updates
        _shot(alice, "04-alice-private-chat")
        _shot(bob, "04-bob-private-chat")

        # --- Bob blocks Alice; her next private message is refused on her page -----------
        bob.get_by_role("button", name="Block Alice").click()
        expect(bob.get_by_role("button", name="Unblock Alice")).to_have_attribute(
            "aria-pressed", "true"
        )
        expect(bob.locator("#chat-notice")).to_contain_text("You blocked Alice")
        _send(alice, "Are you still there?")
        refusal = alice.locator("#chat-error")
        expect(refusal).to_be_visible()
        expect(refusal).to_contain_text("You can't message this user")
        # The server's own message and error code are shown too.
        expect(refusal).to_contain_text(re.compile(r"Server says: .+ \(\w+\)"))
        expect(alice.locator('#messages .msg[data-state="failed"]')).to_contain_text(
            "Are you still there?"
        )
        _shot(alice, "05-alice-blocked-refusal")
        _shot(bob, "05-bob-blocked-alice")

        # --- group messages still work both ways ------------------------------------------
        _open_conversation(alice, "Weekend plans")
        _send(alice, "Group still works")
        expect(_sent(alice, "Group still works")).to_be_visible()
        _open_conversation(bob, "Weekend plans")
        expect(_sent(bob, "Group still works")).to_be_visible()
        _send(bob, "Yes it does")
        expect(_sent(alice, "Yes it does")).to_be_visible()
        # The refused private message never reached Bob.
        expect(bob.get_by_text("Are you still there?")).to_have_count(0)
        _shot(alice, "06-alice-group-after-block")
        _shot(bob, "06-bob-group-after-block")

        # --- phone-sized viewport: chat and list switch -----------------------------------
        alice.set_viewport_size(PHONE)
        expect(alice.locator("#sidebar")).to_be_hidden()
        expect(alice.locator("#messages")).to_be_visible()
        expect(alice.get_by_label("Message", exact=True)).to_be_in_viewport()
        _shot(alice, "07-alice-phone-chat")
        alice.get_by_role("button", name="Back to conversations").click()
        expect(alice.locator("#sidebar")).to_be_visible()
        expect(alice.locator("#chat")).to_be_hidden()
        expect(alice.get_by_role("textbox", name="Your user id")).to_be_visible()
        _shot(alice, "07-alice-phone-list")
        _open_conversation(alice, "Bob")
        expect(alice.locator("#chat-error")).to_contain_text("You can't message this user")
        _shot(alice, "07-alice-phone-private")

        assert not errors, f"uncaught errors in the page: {errors}"
    finally:
        (ARTIFACTS / "pages.log").write_text("\n".join(logs) + "\n")
        alice_ctx.close()
        bob_ctx.close()
    elapsed = time.monotonic() - started
    assert elapsed < 60, f"the browser scenario took {elapsed:.1f} s"


def test_sign_in_again_unblock_members_and_leave(server_url: str, browser: Browser) -> None:
    """The paths the two-user scenario does not take: sign out and back in with id and token,
    a second tab following the sign-out, unblocking from the account list, removing a member,
    leaving a group."""
    from playwright.sync_api import expect

    expect.set_options(timeout=EXPECT_TIMEOUT_MS)
    with two_people(browser) as (alice, bob, errors):
        _sign_up(alice, server_url, "Alice")
        bob_id = _sign_up(bob, server_url, "Bob")
        token = alice.evaluate("() => JSON.parse(localStorage.getItem('parley.session')).token")
        alice_id = alice.get_by_role("textbox", name="Your user id").input_value()

        # Block Bob, then unblock him from the list under "Account and blocked users".
        alice.get_by_label("New private conversation — paste a user id").fill(bob_id)
        alice.get_by_role("button", name="Open", exact=True).click()
        alice.get_by_role("button", name="Block Bob").click()
        expect(alice.locator("#chat-notice")).to_contain_text("You blocked Bob")
        alice.get_by_text("Account and blocked users").click()
        alice.locator("#blocked-list").get_by_role("button", name="Unblock Bob").click()
        expect(alice.locator("#no-blocked")).to_be_visible()
        expect(alice.locator("#chat-notice")).to_be_hidden()
        _send(alice, "Hello Bob")
        expect(_sent(alice, "Hello Bob")).to_be_visible()

        # A group with Bob; remove him, then leave it.
        alice.get_by_label("New group — name").fill("Book club")
        alice.get_by_role("button", name="Create group").click()
        alice.get_by_label("Add a member — paste their user id").fill(bob_id)
        alice.get_by_role("button", name="Add", exact=True).click()
        expect(alice.locator("#chat-subtitle")).to_have_text("Group · 2 members")
        # the owner's panel shows roles and promotes and demotes
        expect(alice.locator("#member-list")).to_contain_text("owner")
        alice.get_by_role("button", name="Make Bob an admin").click()
        expect(alice.locator("#member-list")).to_contain_text("admin")
        alice.get_by_role("button", name="Make Bob a member").click()
        expect(alice.get_by_role("button", name="Make Bob an admin")).to_be_visible()
        alice.get_by_role("button", name="Remove Bob from the group").click()
        expect(alice.locator("#chat-subtitle")).to_have_text("Group · 1 member")
        alice.get_by_role("button", name="Leave group").click()
        expect(_conversation(alice, "Book club")).to_have_count(0)
        expect(alice.locator("#chat-empty")).to_be_visible()

        # A second tab follows the first one's sign-out.
        second = alice.context.new_page()
        second.on("pageerror", lambda exc: errors.append(f"alice tab 2: {exc}"))
        second.goto(f"{server_url}/")
        expect(second.locator("#me-name")).to_have_text("Alice")
        alice.get_by_role("button", name="Sign out").click()
        alice.get_by_role("dialog").get_by_role("button", name="Sign out").click()
        expect(alice.get_by_role("heading", name="Welcome to Parley")).to_be_visible()
        expect(second.get_by_role("heading", name="Welcome to Parley")).to_be_visible()

        # Back in with the id and token; a wrong token is refused with the server's reason.
        alice.get_by_label("User id", exact=True).fill(alice_id)
        alice.get_by_label("Token", exact=True).fill(token + "x")
        alice.get_by_role("button", name="Sign in").click()
        expect(alice.locator("#signin-error")).to_contain_text("The token was not accepted")
        alice.get_by_label("Token", exact=True).fill(token)
        alice.get_by_role("button", name="Sign in").click()
        expect(alice.locator("#me-name")).to_have_text("Alice")
        _open_conversation(alice, "Bob")  # the history came back from the server
        expect(_sent(alice, "Hello Bob")).to_be_visible()
        assert not errors, f"uncaught errors in the page: {errors}"


def test_link_a_device_sign_it_out_password_and_delete(server_url: str, browser: Browser) -> None:
    """Link a second browser context with the one-time link (drawn as a QR code too), see both
    devices, sign the second one out from the first (its page is signed out by the server),
    set a password and sign in with it, then delete the account behind its confirmation."""
    from playwright.sync_api import expect

    expect.set_options(timeout=EXPECT_TIMEOUT_MS)
    errors: list[str] = []
    phone_ctx = browser.new_context(viewport=DESKTOP)
    laptop_ctx = browser.new_context(viewport=DESKTOP)
    try:
        phone = phone_ctx.new_page()
        laptop = laptop_ctx.new_page()
        for who, page in (("phone", phone), ("laptop", laptop)):
            page.set_default_timeout(EXPECT_TIMEOUT_MS)
            page.on("pageerror", lambda exc, who=who: errors.append(f"{who}: {exc}"))
        alice_id = _sign_up(phone, server_url, "Alice")

        phone.get_by_text("Account and blocked users").click()
        expect(phone.locator("#device-list li")).to_have_count(1)
        phone.locator("#link-name").fill("laptop")
        phone.get_by_role("button", name="Link a device").click()
        link = phone.locator("#link-url")
        expect(link).to_have_value(re.compile(r"/#link=u_"))
        url = link.input_value()
        dark = phone.evaluate(
            """() => { const c = document.getElementById('link-qr');
                       const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
                       let n = 0; for (let i = 0; i < d.length; i += 4) if (d[i] < 128) n++;
                       return [c.width, n]; }"""
        )
        assert dark[0] >= 100 and dark[1] > 500, f"no QR code drawn: {dark}"
        _shot(phone, "devices-link")

        laptop.goto(url)  # what scanning the code opens
        expect(laptop.locator("#me-name")).to_have_text("Alice")
        assert "#link=" not in laptop.url
        assert laptop.get_by_role("textbox", name="Your user id").input_value() == alice_id

        phone.get_by_text("Account and blocked users").click()  # close and reopen: refresh
        phone.get_by_text("Account and blocked users").click()
        devices = phone.locator("#device-list li")
        expect(devices).to_have_count(2)
        expect(devices.filter(has_text="(this browser)")).to_have_count(1)
        devices.filter(has_text="laptop").get_by_role(
            "button", name=re.compile(r"^Sign .* out$")
        ).click()
        expect(devices).to_have_count(1)
        # The laptop's open long-poll is refused at once: its page says so.
        expect(laptop.locator("#connection")).to_have_text("Signed out by the server")
        _shot(laptop, "devices-signed-out")

        # A password, then signing in with it on the laptop.
        phone.get_by_label("New password (at least 8 characters)").fill("correct horse battery")
        phone.get_by_role("button", name="Set password").click()
        expect(phone.locator("#password-status")).to_contain_text("Password set")
        laptop.evaluate("() => localStorage.clear()")
        laptop.goto(f"{server_url}/")
        laptop.locator("#password-signin-userid").fill(alice_id)
        laptop.locator("#password-signin-password").fill("wrong password!")
        laptop.get_by_role("button", name="Use password").click()
        expect(laptop.locator("#password-signin-error")).to_contain_text(
            "Wrong user id or password"
        )
        laptop.locator("#password-signin-password").fill("correct horse battery")
        laptop.get_by_role("button", name="Use password").click()
        expect(laptop.locator("#me-name")).to_have_text("Alice")

        # Deleting the account asks first; cancelling changes nothing.
        phone.get_by_role("button", name="Delete account…").click()
        expect(phone.locator("#delete-dialog")).to_be_visible()
        phone.locator("#delete-cancel").click()
        expect(phone.locator("#delete-dialog")).to_be_hidden()
        phone.get_by_role("button", name="Delete account…").click()
        phone.locator("#delete-password").fill("correct horse battery")
        phone.locator("#delete-confirm").click()
        expect(phone.get_by_role("heading", name="Welcome to Parley")).to_be_visible()
        expect(laptop.locator("#connection")).to_have_text("Signed out by the server")
    finally:
        phone_ctx.close()
        laptop_ctx.close()
    assert not errors, errors


def test_edit_delete_and_typing(server_url: str, browser: Browser) -> None:
    """Alice edits and deletes her own messages from her page; Bob's page shows the
    "edited" marker and the deleted marker live (through the cursor's change events) and
    offers him no edit or delete on Alice's messages. While Bob types, Alice's page shows
    a typing line, which goes away once the notice expires."""
    from playwright.sync_api import expect

    expect.set_options(timeout=EXPECT_TIMEOUT_MS)
    with two_people(browser) as (alice, bob, errors):
        alice_id = _sign_up(alice, server_url, "Alice")
        bob_id = _sign_up(bob, server_url, "Bob")

        alice.get_by_label("New private conversation — paste a user id").fill(bob_id)
        alice.get_by_role("button", name="Open", exact=True).click()
        expect(alice.locator("#chat-title")).to_have_text("Bob")
        _send(alice, "See you at 5")
        _send(alice, "A message to take back")
        expect(_sent(alice, "A message to take back")).to_be_visible()
        _open_conversation(bob, "Alice")
        expect(_sent(bob, "See you at 5")).to_be_visible()
        expect(_sent(bob, "A message to take back")).to_be_visible()
        # Bob has no edit or delete on Alice's messages
        expect(bob.locator("#messages .msg .msg-edit")).to_have_count(0)
        expect(bob.locator("#messages .msg .msg-delete")).to_have_count(0)

        # --- Alice edits: both pages show the new text and "edited" ---------------------
        mine = alice.locator("#messages .msg", has_text="See you at 5")
        mine.get_by_role("button", name="Edit").click()
        box = alice.get_by_label("Edit message")
        expect(box).to_have_value("See you at 5")
        box.fill("See you at 6")
        alice.locator("#messages .msg-edit-form").get_by_role("button", name="Save").click()
        edited = alice.locator("#messages .msg", has_text="See you at 6")
        expect(edited.locator(".msg-edited")).to_have_text("edited")
        expect(alice.locator("#messages .msg", has_text="See you at 5")).to_have_count(0)
        on_bob = bob.locator("#messages .msg", has_text="See you at 6")
        expect(on_bob.locator(".msg-edited"), "the edit did not reach Bob's page").to_be_visible()
        expect(bob.locator("#messages .msg", has_text="See you at 5")).to_have_count(0)

        # --- Alice deletes: both pages show the deleted marker ---------------------------
        gone = alice.locator("#messages .msg", has_text="A message to take back")
        gone.get_by_role("button", name="Delete").click()
        expect(alice.locator("#messages .msg", has_text="A message to take back")).to_have_count(0)
        expect(alice.locator("#messages .msg-deleted")).to_have_count(1)
        expect(bob.locator("#messages .msg-deleted"), "the delete did not reach Bob").to_have_count(
            1
        )
        expect(bob.locator("#messages .msg", has_text="A message to take back")).to_have_count(0)
        _shot(alice, "20-alice-edited-and-deleted")
        _shot(bob, "20-bob-sees-edited-and-deleted")

        # --- typing: Bob types, Alice sees "Bob is typing…", then it expires ------------
        typing_line = alice.locator("#typing-line")
        expect(typing_line).to_be_hidden()
        bob.get_by_label("Message", exact=True).press_sequentially("On my w")
        expect(typing_line, "Bob's typing did not show on Alice's page").to_have_text(
            "Bob is typing…"
        )
        _shot(alice, "21-alice-sees-bob-typing")
        expect(typing_line).to_be_hidden(timeout=12_000)  # the notice lasts 5 seconds
        assert alice_id != bob_id
    assert not errors, errors


def _api_send(base: str, token: str, sender: str, receiver: str, text: str) -> None:
    import json

    request = urllib.request.Request(
        f"{base}/v1/messages/send?type=private",
        data=json.dumps({"senderId": sender, "receiverId": receiver, "message": text}).encode(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 200


def test_unread_counts_read_ticks_and_history_pages(server_url: str, browser: Browser) -> None:
    """Bob sends Alice 60 messages while her page is closed: when it opens, the list shows
    the server's unread count (60); opening the conversation shows the newest page (50) and
    scrolling back loads the rest; her reading reaches Bob's page as read ticks, and after a
    reload the count is gone (the server keeps her read marker)."""
    from playwright.sync_api import expect

    expect.set_options(timeout=EXPECT_TIMEOUT_MS)
    with two_people(browser) as (alice, bob, errors):
        alice_id = _sign_up(alice, server_url, "Alice")
        bob_id = _sign_up(bob, server_url, "Bob")
        alice_context = alice.context
        alice.close()

        bob.get_by_label("New private conversation — paste a user id").fill(alice_id)
        bob.get_by_role("button", name="Open", exact=True).click()
        expect(bob.locator("#chat-title")).to_have_text("Alice")
        token = bob.evaluate("() => JSON.parse(localStorage.getItem('parley.session')).token")
        for i in range(60):
            _api_send(server_url, token, bob_id, alice_id, f"note {i:02d}")
        expect(_sent(bob, "note 59")).to_be_visible()
        expect(bob.locator("#messages .msg-tick.read")).to_have_count(0)
        expect(bob.locator("#messages .msg-tick").first).to_have_text("✓")

        # --- Alice's page opens: the server's unread count --------------------------------
        alice = alice_context.new_page()
        alice.set_default_timeout(EXPECT_TIMEOUT_MS)
        alice.on("pageerror", lambda exc: errors.append(f"alice: {exc}"))
        alice.goto(f"{server_url}/")
        row = _conversation(alice, "Bob")
        expect(row.locator(".badge")).to_have_text("60")
        _shot(alice, "30-alice-unread-from-the-server")

        # --- the newest page, then scrolling back ---------------------------------------
        _open_conversation(alice, "Bob")
        expect(_sent(alice, "note 59")).to_be_visible()
        # the newest page holds at least notes 20..59; the newest may show before it
        expect(_sent(alice, "note 20")).to_be_visible()
        first_page = alice.locator("#messages .msg").count()
        # 50, or fewer when the 50th shares its millisecond with older ones (never split)
        assert 40 <= first_page <= 50, first_page
        expect(_sent(alice, "note 00")).to_have_count(0)
        older = alice.get_by_role("button", name="Load older messages")
        expect(older).to_be_visible()
        older.click()
        expect(alice.locator("#messages .msg")).to_have_count(60)
        expect(_sent(alice, "note 00")).to_be_visible()
        expect(older).to_be_hidden()
        expect(row.locator(".badge")).to_have_count(0)
        _shot(alice, "31-alice-scrolled-back")

        # --- Bob sees that Alice read his messages ---------------------------------------
        expect(
            bob.locator("#messages .msg", has_text="note 59").locator(".msg-tick.read"),
            "the receipt did not reach Bob's page",
        ).to_have_text("✓✓ Read")
        _shot(bob, "32-bob-read-ticks")

        # --- the marker is kept by the server ---------------------------------------------
        alice.goto(f"{server_url}/")
        expect(_conversation(alice, "Bob")).to_be_visible()
        expect(_conversation(alice, "Bob").locator(".badge")).to_have_count(0)
        _api_send(server_url, token, bob_id, alice_id, "one more")
        expect(_conversation(alice, "Bob").locator(".badge")).to_have_text("1")
    assert not errors, errors
