"""The README walkthrough, through a client generated from Parley's OpenAPI document.

    ./generate.sh                                  # makes ./parley_client
    python walkthrough.py http://127.0.0.1:8080    # against a running Parley (token mode)

Two users, a group, a private and a group message, polling with nextTimestamp, then a block
and the send it refuses. Every call goes through the generated code, unchanged; the script
stops with an error if an answer is not the one the walkthrough expects.
"""

from __future__ import annotations

import sys
from typing import TypeVar

from parley_client import AuthenticatedClient, Client
from parley_client.api.default import (
    create_group,
    create_user,
    get_messages,
    group_op,
    send_message,
    user_op,
)
from parley_client.models import (
    BlockIn,
    BlockOut,
    CreateGroupIn,
    CreateUserIn,
    ErrorOut,
    GroupOpOp,
    GroupOut,
    MemberIn,
    MembershipOut,
    MessageOut,
    MessagesOut,
    SendIn,
    SendMessageType,
    UserOpOp,
    UserOut,
)
from parley_client.types import Response

T = TypeVar("T")


def expect(response: Response[object], kind: type[T], status: int = 200) -> T:
    """The parsed answer, which must have this status and type."""
    if response.status_code != status or not isinstance(response.parsed, kind):
        raise SystemExit(
            f"expected {status} {kind.__name__}, got {response.status_code}: {response.content!r}"
        )
    return response.parsed


def sign_up(base_url: str, name: str) -> tuple[str, AuthenticatedClient]:
    with Client(base_url=base_url) as public:
        user = expect(
            create_user.sync_detailed(client=public, body=CreateUserIn(username=name)), UserOut
        )
    assert isinstance(user.token, str), "token mode: every new user gets a token"
    return user.user_id, AuthenticatedClient(base_url=base_url, token=user.token)


def main(base_url: str) -> None:
    alice_id, alice = sign_up(base_url, "alice")
    bob_id, bob = sign_up(base_url, "bob")
    print(f"users: alice={alice_id} bob={bob_id}")

    group = create_group.sync_detailed(client=alice, body=CreateGroupIn(group_name="team"))
    group_id = expect(group, GroupOut).group_id
    added = group_op.sync_detailed(
        group_id, client=alice, op=GroupOpOp.ADD, body=MemberIn(user_id=bob_id)
    )
    assert expect(added, MembershipOut).member
    print(f"group: {group_id} with bob")

    private = send_message.sync_detailed(
        client=alice,
        type_=SendMessageType.PRIVATE,
        body=SendIn(sender_id=alice_id, receiver_id=bob_id, message="hi bob"),
    )
    expect(private, MessageOut)
    to_group = send_message.sync_detailed(
        client=alice,
        type_=SendMessageType.GROUP,
        body=SendIn(sender_id=alice_id, group_id=group_id, message="hello team"),
    )
    expect(to_group, MessageOut)

    page = expect(get_messages.sync_detailed(bob_id, client=bob), MessagesOut)
    texts = [m.message for m in page.messages]
    assert texts == ["hi bob", "hello team"], texts
    print(f"bob reads: {texts}, nextTimestamp={page.next_timestamp}")
    again = expect(
        get_messages.sync_detailed(bob_id, client=bob, timestamp=page.next_timestamp), MessagesOut
    )
    assert again.messages == [], "polling with nextTimestamp returns only newer messages"

    blocked = user_op.sync_detailed(
        bob_id, client=bob, op=UserOpOp.BLOCK, body=BlockIn(blocked_user_id=alice_id)
    )
    assert expect(blocked, BlockOut).blocked
    refused = send_message.sync_detailed(
        client=alice,
        type_=SendMessageType.PRIVATE,
        body=SendIn(sender_id=alice_id, receiver_id=bob_id, message="still there?"),
    )
    error = expect(refused, ErrorOut, status=403)
    assert error.error.code == "blocked", error.error.code
    print(f"bob blocked alice; her send is refused: {error.error.code}")

    page = expect(
        get_messages.sync_detailed(bob_id, client=bob, timestamp=page.next_timestamp), MessagesOut
    )
    assert page.messages == [], "the refused message was not stored"
    print("walkthrough done")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "http://127.0.0.1:8080")
