"""A small typed wrapper over Parley's HTTP API: one method per endpoint.

Exceptions::

    ClientError                  anything that stops a call from giving an answer
     ├── ApiError                the server answered with an error status
     │                           (``status``, ``code``, ``message``, ``retry_after``)
     ├── UnreachableError        no answer: connection refused, reset, timed out
     └── ProtocolError           an answer that is not what the contract describes

Error bodies on the wire are ``{"error": {"code": "<snake_case>", "message": "<text>"}}``;
a body of any other shape still gives an ``ApiError`` with the code ``http_<status>``.
"""

from __future__ import annotations

import mimetypes
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, Self, TypeVar
from urllib.parse import quote

import httpx
import msgspec

__all__ = [
    "ApiError",
    "ClientError",
    "Group",
    "Message",
    "MessagePage",
    "ParleyApi",
    "ProtocolError",
    "Registered",
    "UnreachableError",
    "User",
]

Json = dict[str, Any]
T = TypeVar("T")

#: How long ``send_*`` waits before its one retry when the server gave no ``Retry-After``.
SEND_RETRY_DELAY = 1.0
#: Upper bound on that wait, whatever ``Retry-After`` says.
SEND_RETRY_DELAY_MAX = 5.0
#: Extra read time granted to a long-poll beyond the ``wait`` the server was asked for.
LONG_POLL_MARGIN = 10.0


class ClientError(Exception):
    """Base of every error this module raises."""


class ApiError(ClientError):
    """The server answered with a non-2xx status and (usually) a JSON error body."""

    def __init__(
        self, status: int, code: str, message: str, retry_after: float | None = None
    ) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.retry_after = retry_after


class UnreachableError(ClientError):
    """The request got no answer: the server is down, unreachable or too slow."""

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(f"cannot reach server at {url} ({reason})")
        self.url = url
        self.reason = reason


class ProtocolError(ClientError):
    """The server answered 2xx with a body this client does not understand."""


class User(msgspec.Struct, frozen=True, rename="camel"):
    user_id: str
    username: str


class Registered(msgspec.Struct, frozen=True, rename="camel"):
    """The answer to ``POST /v1/users/create``; ``token`` only in token mode."""

    user_id: str
    username: str
    token: str | None = None


class Group(msgspec.Struct, frozen=True, rename="camel"):
    """A group; ``members`` and ``roles`` are ``None`` where the endpoint does not list them."""

    group_id: str
    group_name: str
    members: list[str] | None = None
    roles: dict[str, str] | None = None


class Message(msgspec.Struct, frozen=True, rename="camel"):
    """A stored message; ``timestamp`` is decimal unix milliseconds, as on the wire."""

    message_id: str
    type: Literal["private", "group"]
    sender_id: str
    recipient_id: str
    timestamp: str
    message: str = ""  # none when deleted
    deleted: bool = False
    edited_at: str | None = None
    attachments: tuple[str, ...] = ()  # media ids (download with ``download``)

    @property
    def timestamp_ms(self) -> int:
        return int(self.timestamp)


class Media(msgspec.Struct, frozen=True, rename="camel"):
    """An uploaded file."""

    media_id: str
    content_type: str
    size: int
    sha256: str


class MessagePage(msgspec.Struct, frozen=True):
    """One answer to ``GET /v1/messages/:userId``; ``raw`` keeps the messages as received."""

    messages: list[Message]
    next_timestamp: str
    has_more: bool
    raw: list[Json]
    events: list[dict[str, str]] = []  # change events (``include_events``), as received


class HistoryPage(msgspec.Struct, frozen=True, rename="camel"):
    """One page of a conversation, oldest first; ``next_before`` asks for the page before."""

    messages: list[Message]
    has_more: bool
    next_before: str | None = None


class Conversation(msgspec.Struct, frozen=True, rename="camel"):
    """One entry of ``GET /v1/users/:userId/conversations``."""

    conversation_id: str
    type: Literal["private", "group"]
    name: str
    last_message: Message | None
    unread_count: int
    read_up_to: str
    unread_capped: bool = False
    peer_read_up_to: str | None = None


class Conversations(msgspec.Struct, frozen=True, rename="camel"):
    conversations: list[Conversation]
    has_more: bool


class _Read(msgspec.Struct, frozen=True, rename="camel"):
    conversation_id: str
    read_up_to: str


class _Groups(msgspec.Struct, frozen=True):
    groups: list[Group]


class _Blocked(msgspec.Struct, frozen=True, rename="camel"):
    blocked_user_ids: list[str]


class _Page(msgspec.Struct, frozen=True, rename="camel"):
    messages: list[Json]
    next_timestamp: str
    has_more: bool = False
    events: list[dict[str, str]] = []


def _seg(value: str) -> str:
    """One path segment: every id is escaped, so ``../`` or ``%00`` stays inside it."""
    return quote(value, safe="")


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("Retry-After")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


def _error_from(response: httpx.Response) -> ApiError:
    code = f"http_{response.status_code}"
    message = response.reason_phrase or "error"
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        error = body["error"]
        if isinstance(error.get("code"), str) and error["code"]:
            code = error["code"]
        if isinstance(error.get("message"), str) and error["message"]:
            message = error["message"]
    return ApiError(response.status_code, code, message, _retry_after(response))


def _unreachable_reason(exc: httpx.TransportError) -> str:
    if isinstance(exc, httpx.ConnectTimeout):
        return "connection timed out"
    if isinstance(exc, httpx.TimeoutException):
        return "no answer in time"
    if isinstance(exc, httpx.ConnectError):
        text = str(exc).lower()
        return "connection refused" if "refused" in text else f"cannot connect: {exc}"
    if isinstance(exc, httpx.RemoteProtocolError):
        return "connection closed by the server"
    return str(exc) or type(exc).__name__


class NewToken(msgspec.Struct, frozen=True, rename="camel"):
    """A token for a device (from linking one or signing in with a password)."""

    token_id: str
    token: str
    device_name: str
    created_at: str
    user_id: str


class Device(msgspec.Struct, frozen=True, rename="camel"):
    token_id: str
    device_name: str
    created_at: str
    last_used_at: str
    current: bool


class _Devices(msgspec.Struct, frozen=True):
    tokens: list[Device]


class ParleyApi:
    """Synchronous client for one Parley server.

    ``token`` is sent as ``Authorization: Bearer <token>`` on every request when set.
    ``transport`` lets tests plug in ``httpx.MockTransport``; ``sleep`` lets them skip waits.
    """

    def __init__(
        self,
        base_url: str,
        token: str | None = None,
        *,
        timeout: float = 10.0,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._sleep = sleep
        self._timeout = timeout
        headers = {"Accept": "application/json", "User-Agent": "parley-client"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self._http = httpx.Client(
            base_url=self.base_url,
            headers=headers,
            timeout=timeout,
            transport=transport,
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- plumbing ---------------------------------------------------------------------------

    def _request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        body: Json | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float | None = None,
    ) -> Any:
        try:
            response = self._http.request(
                method,
                path,
                params=params,
                json=body,
                headers=headers,
                timeout=timeout if timeout is not None else self._timeout,
            )
        except httpx.TransportError as exc:
            raise UnreachableError(self.base_url, _unreachable_reason(exc)) from exc
        if not response.is_success:
            raise _error_from(response)
        if not response.content:
            return None
        try:
            return response.json()
        except ValueError as exc:
            raise ProtocolError(f"{method} {path}: the answer is not JSON") from exc

    @staticmethod
    def _decode(data: Any, kind: type[T], what: str) -> T:
        try:
            return msgspec.convert(data, kind)
        except msgspec.ValidationError as exc:
            raise ProtocolError(f"unexpected answer to {what}: {exc}") from exc

    # -- users and blocking -----------------------------------------------------------------

    def create_user(self, username: str) -> Registered:
        data = self._request("POST", "/v1/users/create", body={"username": username})
        return self._decode(data, Registered, "create user")

    def get_user(self, user_id: str) -> User:
        data = self._request("GET", f"/v1/users/{_seg(user_id)}")
        return self._decode(data, User, "get user")

    def block(self, user_id: str, blocked_user_id: str) -> None:
        self._request(
            "POST",
            f"/v1/users/{_seg(user_id)}",
            params={"op": "block"},
            body={"blockedUserId": blocked_user_id},
        )

    def unblock(self, user_id: str, blocked_user_id: str) -> None:
        self._request(
            "POST",
            f"/v1/users/{_seg(user_id)}",
            params={"op": "unblock"},
            body={"blockedUserId": blocked_user_id},
        )

    def blocked(self, user_id: str) -> list[str]:
        """The ids of the users ``user_id`` has blocked (``GET /v1/users/:userId/blocked``)."""
        data = self._request("GET", f"/v1/users/{_seg(user_id)}/blocked")
        return self._decode(data, _Blocked, "list blocked users").blocked_user_ids

    def user_groups(self, user_id: str) -> list[Group]:
        """The groups ``user_id`` belongs to (``GET /v1/users/:userId/groups``)."""
        data = self._request("GET", f"/v1/users/{_seg(user_id)}/groups")
        return self._decode(data, _Groups, "list groups").groups

    # -- groups -----------------------------------------------------------------------------

    def create_group(self, name: str) -> Group:
        data = self._request("POST", "/v1/groups/create", body={"groupName": name})
        return self._decode(data, Group, "create group")

    def get_group(self, group_id: str) -> Group:
        """A group with its member ids; only members may ask."""
        data = self._request("GET", f"/v1/groups/{_seg(group_id)}")
        return self._decode(data, Group, "get group")

    def add_member(self, group_id: str, user_id: str) -> None:
        self._request(
            "POST", f"/v1/groups/{_seg(group_id)}", params={"op": "add"}, body={"userId": user_id}
        )

    def remove_member(self, group_id: str, user_id: str) -> None:
        self._request(
            "POST",
            f"/v1/groups/{_seg(group_id)}",
            params={"op": "remove"},
            body={"userId": user_id},
        )

    def set_role(self, group_id: str, user_id: str, role: str) -> None:
        """``admin`` (promote) or ``member`` (demote): the group's owner only."""
        op = "promote" if role == "admin" else "demote"
        self._request(
            "POST", f"/v1/groups/{_seg(group_id)}", params={"op": op}, body={"userId": user_id}
        )

    def rename_group(self, group_id: str, name: str) -> None:
        self._request(
            "POST",
            f"/v1/groups/{_seg(group_id)}",
            params={"op": "rename"},
            body={"groupName": name},
        )

    # -- messages ---------------------------------------------------------------------------

    # -- devices and passwords --------------------------------------------------------------

    def link_device(self, user_id: str, device_name: str | None = None) -> NewToken:
        body: Json = {} if device_name is None else {"deviceName": device_name}
        data = self._request("POST", f"/v1/users/{_seg(user_id)}/tokens", body=body)
        return self._decode(data, NewToken, "new token")

    def devices(self, user_id: str) -> list[Device]:
        data = self._request("GET", f"/v1/users/{_seg(user_id)}/tokens")
        return self._decode(data, _Devices, "device list").tokens

    def revoke(self, user_id: str, token_id: str) -> None:
        self._request("DELETE", f"/v1/users/{_seg(user_id)}/tokens/{_seg(token_id)}")

    def sign_in(self, user_id: str, password: str, device_name: str | None = None) -> NewToken:
        body: Json = {"userId": user_id, "password": password}
        if device_name is not None:
            body["deviceName"] = device_name
        return self._decode(self._request("POST", "/v1/sessions", body=body), NewToken, "sign-in")

    def set_password(self, user_id: str, password: str, current: str | None = None) -> None:
        body: Json = {"password": password}
        if current is not None:
            body["currentPassword"] = current
        self._request("POST", f"/v1/users/{_seg(user_id)}/password", body=body)

    def send_private(
        self,
        sender_id: str,
        receiver_id: str,
        text: str,
        idempotency_key: str | None = None,
        attachments: Sequence[str] = (),
    ) -> Message:
        body: Json = {"senderId": sender_id, "receiverId": receiver_id, "message": text}
        if attachments:
            body["attachments"] = list(attachments)
        return self._send("private", body, idempotency_key)

    def send_group(
        self,
        sender_id: str,
        group_id: str,
        text: str,
        idempotency_key: str | None = None,
        attachments: Sequence[str] = (),
    ) -> Message:
        body: Json = {"senderId": sender_id, "groupId": group_id, "message": text}
        if attachments:
            body["attachments"] = list(attachments)
        return self._send("group", body, idempotency_key)

    # -- attachments --------------------------------------------------------------------------

    def upload(self, path: Path, content_type: str | None = None) -> Media:
        """Upload a file (streamed from disk); attach the answer's ``media_id`` to a send."""
        kind = content_type or mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        size = path.stat().st_size
        with path.open("rb") as handle:
            try:
                response = self._http.post(
                    "/v1/media",
                    content=handle,
                    headers={"Content-Type": kind, "Content-Length": str(size)},
                    timeout=max(self._timeout, 300.0),
                )
            except httpx.TransportError as exc:
                raise UnreachableError(self.base_url, _unreachable_reason(exc)) from exc
        if not response.is_success:
            raise _error_from(response)
        return self._decode(response.json(), Media, "upload")

    def download(self, media_id: str, target: Path) -> str:
        """Save a file to ``target``; return its content type."""
        try:
            with self._http.stream(
                "GET", f"/v1/media/{_seg(media_id)}", timeout=max(self._timeout, 300.0)
            ) as response:
                if not response.is_success:
                    response.read()
                    raise _error_from(response)
                with target.open("wb") as out:
                    for chunk in response.iter_bytes():
                        out.write(chunk)
                return str(response.headers.get("content-type", "application/octet-stream"))
        except httpx.TransportError as exc:
            raise UnreachableError(self.base_url, _unreachable_reason(exc)) from exc

    def _send(self, kind: str, body: Json, idempotency_key: str | None) -> Message:
        """Send once, and once more with the same key on no answer or 503.

        The ``Idempotency-Key`` makes the retry safe: the server stores one message and
        replays its first answer.
        """
        key = idempotency_key or uuid.uuid4().hex
        headers = {"Idempotency-Key": key}
        params = {"type": kind}
        try:
            data = self._request(
                "POST", "/v1/messages/send", params=params, body=body, headers=headers
            )
        except UnreachableError:
            self._sleep(SEND_RETRY_DELAY)
        except ApiError as exc:
            if exc.status != 503:
                raise
            delay = exc.retry_after if exc.retry_after is not None else SEND_RETRY_DELAY
            self._sleep(min(delay, SEND_RETRY_DELAY_MAX))
        else:
            return self._decode(data, Message, "send message")
        data = self._request("POST", "/v1/messages/send", params=params, body=body, headers=headers)
        return self._decode(data, Message, "send message")

    def messages(
        self,
        user_id: str,
        *,
        since: str | None = None,
        include_sent: bool = False,
        limit: int | None = None,
        wait: int | None = None,
        include_events: bool = False,
    ) -> MessagePage:
        """One page of ``user_id``'s messages newer than ``since`` (all when ``None``).

        With ``wait`` the server holds the request up to that many seconds for a new message.
        """
        params: dict[str, str] = {}
        if since is not None:
            params["timestamp"] = since
        include = [name for name, on in (("sent", include_sent), ("events", include_events)) if on]
        if include:
            params["include"] = ",".join(include)
        if limit is not None:
            params["limit"] = str(limit)
        timeout = None
        if wait is not None:
            params["wait"] = str(wait)
            timeout = wait + LONG_POLL_MARGIN
        data = self._request("GET", f"/v1/messages/{_seg(user_id)}", params=params, timeout=timeout)
        page = self._decode(data, _Page, "get messages")
        messages = self._decode(page.messages, list[Message], "get messages")
        return MessagePage(messages, page.next_timestamp, page.has_more, page.messages, page.events)

    def conversations(
        self, user_id: str, *, before: str | None = None, limit: int | None = None
    ) -> Conversations:
        """The user's conversations, most recent activity first, with unread counts."""
        params = {"before": before, "limit": None if limit is None else str(limit)}
        data = self._request(
            "GET",
            f"/v1/users/{_seg(user_id)}/conversations",
            params={k: v for k, v in params.items() if v is not None},
        )
        return self._decode(data, Conversations, "list conversations")

    def history(
        self,
        user_id: str,
        conversation_id: str,
        *,
        before: str | None = None,
        limit: int | None = None,
    ) -> HistoryPage:
        """One page of a conversation (a peer's user id or a group id), newest page first."""
        params = {"before": before, "limit": None if limit is None else str(limit)}
        data = self._request(
            "GET",
            f"/v1/users/{_seg(user_id)}/conversations/{_seg(conversation_id)}/messages",
            params={k: v for k, v in params.items() if v is not None},
        )
        return self._decode(data, HistoryPage, "get history")

    def mark_read(self, user_id: str, conversation_id: str, timestamp: str) -> str:
        """Move the read marker of a conversation forward; returns where it stands."""
        data = self._request(
            "POST",
            f"/v1/users/{_seg(user_id)}/read",
            body={"conversationId": conversation_id, "timestamp": timestamp},
        )
        return self._decode(data, _Read, "mark read").read_up_to

    def edit_message(self, message_id: str, text: str) -> Message:
        """Replace the text of a message you sent."""
        data = self._request(
            "POST",
            f"/v1/messages/{_seg(message_id)}",
            params={"op": "edit"},
            body={"message": text},
        )
        return self._decode(data, Message, "edit message")

    def delete_message(self, message_id: str) -> Message:
        """Delete a message you sent (its text is erased; id and timestamp stay)."""
        data = self._request("POST", f"/v1/messages/{_seg(message_id)}", params={"op": "delete"})
        return self._decode(data, Message, "delete message")
