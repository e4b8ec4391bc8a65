"""Files on the web page, in Chromium against a real server: sent with the file picker and by
dropping them on the chat, pictures shown inline (sized by the browser), other files as
download links that save the same bytes. Same set-up as ``test_browser.py``."""

from __future__ import annotations

import base64
import struct
import zlib
from pathlib import Path
from typing import TYPE_CHECKING

from tests.e2e.test_browser import (  # noqa: F401  (fixtures, registered by being imported)
    DESKTOP,
    EXPECT_TIMEOUT_MS,
    _open_conversation,
    _shot,
    _sign_up,
    browser,
    server_url,
    two_people,
)

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page


def png(width: int, height: int, rgb: tuple[int, int, int]) -> bytes:
    """A small valid PNG of one colour."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    row = b"\x00" + bytes(rgb) * width
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(row * height))
        + chunk(b"IEND", b"")
    )


def _drop(page: Page, name: str, kind: str, data: bytes) -> None:
    """Drop a file on the open chat, as a user dragging it from their desktop would."""
    page.evaluate(
        """([name, kind, b64]) => {
            const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
            const transfer = new DataTransfer();
            transfer.items.add(new File([bytes], name, { type: kind }));
            const pane = document.getElementById("chat-main");
            for (const type of ["dragenter", "dragover", "drop"]) {
                pane.dispatchEvent(new DragEvent(type, {
                    dataTransfer: transfer, bubbles: true, cancelable: true,
                }));
            }
        }""",
        [name, kind, base64.b64encode(data).decode()],
    )


def test_files_by_picker_and_by_drop(server_url: str, browser: Browser, tmp_path: Path) -> None:  # noqa: F811
    from playwright.sync_api import expect

    expect.set_options(timeout=EXPECT_TIMEOUT_MS)
    with two_people(browser, accept_downloads=True) as (alice, bob, errors):
        alice_id = _sign_up(alice, server_url, "Alice")
        bob_id = _sign_up(bob, server_url, "Bob")
        alice.get_by_label("New private conversation — paste a user id").fill(bob_id)
        alice.get_by_role("button", name="Open", exact=True).click()
        expect(alice.locator("#chat-title")).to_have_text("Bob")

        # --- the picker: a picture and a document, with a caption --------------------------
        picture = tmp_path / "beach.png"
        picture.write_bytes(png(640, 480, (30, 144, 255)))
        notes = tmp_path / "notes.html"  # a type a browser would run: only ever a download
        notes.write_text("<script>alert('no')</script>")
        alice.set_input_files("#attach-input", [str(picture), str(notes)])
        files = alice.get_by_role("list", name="Files to send")
        expect(files.get_by_role("listitem")).to_have_count(2)
        box = alice.get_by_label("Message", exact=True)
        box.fill("From the trip")
        box.press("Enter")
        sent = alice.locator('#messages .msg[data-state="sent"]', has_text="From the trip")
        expect(sent.locator("img.msg-image")).to_be_visible()
        expect(files).to_be_hidden()

        # --- Bob sees the picture inline and the document as a download link ---------------
        bob.get_by_label("New private conversation — paste a user id").fill(alice_id)
        bob.get_by_role("button", name="Open", exact=True).click()
        _open_conversation(bob, "Alice")
        message = bob.locator("#messages .msg", has_text="From the trip")
        image = message.locator("img.msg-image")
        expect(image).to_be_visible()
        size = image.evaluate(
            "(img) => [img.naturalWidth, img.clientWidth, img.clientHeight, img.src]"
        )
        assert size[0] == 640, size  # the real picture, decoded
        assert 0 < size[1] <= 240 and 0 < size[2] <= 240, size  # a thumbnail, scaled down
        assert size[3].startswith("blob:"), size
        link = message.get_by_role("button", name="Download file (text/html")
        expect(link).to_be_visible()
        with bob.expect_download() as download_info:
            link.click()
        saved = tmp_path / "saved.html"
        download_info.value.save_as(saved)
        assert saved.read_bytes() == notes.read_bytes()
        _shot(bob, "media-01-bob-picture-and-file")

        # --- Bob drops a picture on the chat and sends it without text ----------------------
        _drop(bob, "sunset.png", "image/png", png(32, 32, (250, 120, 40)))
        expect(bob.get_by_role("list", name="Files to send").get_by_role("listitem")).to_have_count(
            1
        )
        bob.get_by_role("button", name="Send").click()
        dropped = alice.locator("#messages .msg", has_text="sunset.png")
        expect(dropped.locator("img.msg-image")).to_be_visible()
        width = dropped.locator("img.msg-image").evaluate("(img) => img.naturalWidth")
        assert width == 32
        _shot(alice, "media-02-alice-dropped-picture")
    assert not errors, errors
