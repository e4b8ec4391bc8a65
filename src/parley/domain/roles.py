"""Who may change a group, and who owns it after its owner leaves (token mode).

Every storage adapter applies these rules to the roster it read *inside* the transaction
that writes the change (SQLite's writer, PostgreSQL's row lock on the group, DynamoDB's
conditional writes), so the answer cannot be overtaken by a concurrent change. ``by`` is
the user asking, or None in open mode (no role checks).

- The owner may add, remove, promote and demote anyone but themselves, and rename.
- An admin may add, remove members (not the owner or other admins), and rename.
- A member may only leave. Anyone may leave.
- When the owner leaves, the longest-standing admin becomes owner, else the
  longest-standing member (earliest ``joined``, then the smaller user id): one answer for
  one roster, so every process and backend picks the same successor.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

import msgspec

Role = Literal["owner", "admin", "member"]
ROLES: tuple[Role, ...] = ("owner", "admin", "member")

# done: written; unchanged: already so (member already there, not a member, same role);
# denied: ``by`` lacks the role; full: the group is at its cap; missing: the target is not
# a member (role changes); owner: the target is the owner (cannot be promoted or demoted);
# no_group: the group does not exist.
Outcome = Literal["done", "unchanged", "denied", "full", "missing", "owner", "no_group"]


class Member(msgspec.Struct, frozen=True):
    user_id: str
    role: Role
    joined: int  # the order members joined in (smaller: earlier)


class GroupWrite(msgspec.Struct, frozen=True):
    """What a membership write did; ``new_owner`` when an owner's leaving handed it over."""

    outcome: Outcome
    new_owner: str | None = None


Roster = Mapping[str, Member]


def may_manage(roster: Roster, by: str | None, target: str | None) -> bool:
    """May ``by`` add (``target`` None or not a member) or remove ``target``?"""
    if by is None:
        return True
    me = roster.get(by)
    if me is None:
        return False
    if me.role == "owner":
        return True
    if me.role == "admin":
        other = roster.get(target) if target is not None else None
        return other is None or other.role == "member"
    return False


def decide_add(roster: Roster, user_id: str, by: str | None, cap: int | None) -> Outcome:
    adder = roster.get(by) if by is not None else None
    return decide_join(
        by is None, adder.role if adder else None, user_id in roster, len(roster), cap
    )


def decide_join(
    open_mode: bool, adder_role: Role | None, present: bool, count: int, cap: int | None
) -> Outcome:
    """``decide_add`` from a summary of the roster: the adder's role (None: not a member),
    whether the user is in it already, and how many members it has."""
    if not open_mode and adder_role not in ("owner", "admin"):
        return "denied"
    if present:
        return "unchanged"
    if cap is not None and count >= cap:
        return "full"
    return "done"


def successor(roster: Roster, leaving: str) -> str | None:
    """Who owns the group once ``leaving`` (its owner) has left; None if nobody is left."""
    rest = [m for m in roster.values() if m.user_id != leaving]
    pool = [m for m in rest if m.role == "admin"] or rest
    if not pool:
        return None
    return min(pool, key=lambda m: (m.joined, m.user_id)).user_id


def decide_remove(roster: Roster, user_id: str, by: str | None) -> GroupWrite:
    leaving = by is None or by == user_id
    if user_id not in roster:
        if not leaving and by not in roster:
            return GroupWrite("denied")
        return GroupWrite("unchanged")
    if not leaving and not may_manage(roster, by, user_id):
        return GroupWrite("denied")
    new_owner = successor(roster, user_id) if roster[user_id].role == "owner" else None
    return GroupWrite("done", new_owner)


def decide_role(roster: Roster, user_id: str, role: Role, by: str | None) -> Outcome:
    """Promote (``admin``) or demote (``member``): the owner only."""
    if by is not None and (by not in roster or roster[by].role != "owner"):
        return "denied"
    target = roster.get(user_id)
    if target is None:
        return "missing"
    if target.role == "owner":
        return "owner"
    return "unchanged" if target.role == role else "done"


def may_rename(roster: Roster, by: str | None) -> bool:
    return by is None or (by in roster and roster[by].role in ("owner", "admin"))


def in_order(roster: Roster) -> list[Member]:
    return sorted(roster.values(), key=lambda m: (m.joined, m.user_id))
