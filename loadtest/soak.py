"""Soak: a real server under a steady, moderate mixed load; memory must stay flat.

    .venv/bin/python loadtest/soak.py --minutes 5 [--warmup 30] [--users 40] [--sends 20]

Starts ``parley serve`` (SQLite in a temporary folder, token mode, rate limits off) and
runs, for a warm-up and then ``--minutes``:

* senders: private and group messages, ``--sends`` per second in all;
* checkers: every user checks its messages about once a second, always passing the previous
  answer's ``nextTimestamp``; a message seen twice is an error;
* long-pollers: a few users hold ``wait=5`` long-polls, following ``nextTimestamp`` too;
* churn: group creation, members added and removed, a new user now and then.

Every answer must be a 200. At the end every user drains its messages and must have
received every private message sent to it. The server's resident memory (all its
processes) is sampled every few seconds; the run fails when it grew by ``--max-growth``
percent or more between the end of the warm-up and the end of the load, or on any error.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from parley.bench.procs import Server

MB = 1024 * 1024


def say(text: str) -> None:
    print(text, flush=True)


@dataclass
class User:
    id: str
    headers: dict[str, str]
    cursor: str | None = None
    seen: set[str] = field(default_factory=set)
    expected: set[str] = field(default_factory=set)  # private messages sent to it


@dataclass
class Soak:
    client: httpx.AsyncClient
    rng: random.Random
    deadline: float
    users: list[User] = field(default_factory=list)
    groups: dict[str, set[str]] = field(default_factory=dict)  # group id -> member ids
    owners: dict[str, User] = field(default_factory=dict)  # group id -> creator (never leaves)
    counts: Counter[str] = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)

    async def call(
        self,
        kind: str,
        method: str,
        url: str,
        user: User | None = None,
        body: object = None,
        timeout: float = 10,
    ) -> dict[str, object] | None:
        self.counts[kind] += 1
        try:
            r = await self.client.request(
                method, url, json=body, headers=user.headers if user else None, timeout=timeout
            )
        except httpx.HTTPError as exc:
            self.error(f"{kind}: {type(exc).__name__}: {exc}")
            return None
        if r.status_code != 200:
            self.error(f"{kind}: {method} {url} -> {r.status_code} {r.text[:200]}")
            return None
        answer: dict[str, object] = r.json()
        return answer

    def error(self, text: str) -> None:
        self.errors.append(text)
        if len(self.errors) <= 10:
            say(f"error: {text}")

    @property
    def running(self) -> bool:
        return time.monotonic() < self.deadline and len(self.errors) < 100

    # setup -------------------------------------------------------------------------------
    async def new_user(self, name: str) -> User | None:
        body = await self.call("create_user", "POST", "/v1/users/create", None, {"username": name})
        if body is None:
            return None
        user = User(str(body["userId"]), {"Authorization": f"Bearer {body['token']}"})
        self.users.append(user)
        return user

    async def new_group(self, owner: User, members: list[User]) -> None:
        body = await self.call(
            "create_group", "POST", "/v1/groups/create", owner, {"groupName": "soak"}
        )
        if body is None:
            return
        group = str(body["groupId"])
        self.groups[group] = {owner.id}
        self.owners[group] = owner
        for member in members:
            if member.id not in self.groups[group]:
                await self.add(group, owner, member)

    async def add(self, group: str, actor: User, member: User) -> None:
        url = f"/v1/groups/{group}?op=add"
        if await self.call("group_add", "POST", url, actor, {"userId": member.id}) is not None:
            self.groups[group].add(member.id)

    # load --------------------------------------------------------------------------------
    async def sender(self, per_second: float) -> None:
        while self.running:
            started = time.monotonic()
            if self.rng.random() < 0.3:  # by the group's creator: churn never removes it
                group = self.rng.choice(list(self.groups))
                owner = self.owners[group]
                body = {"senderId": owner.id, "groupId": group, "message": "to the group"}
                await self.call("send_group", "POST", "/v1/messages/send?type=group", owner, body)
            else:
                sender = self.rng.choice(self.users)
                receiver = self.rng.choice(self.users)
                text = "x" * self.rng.randint(1, 300)
                body = {"senderId": sender.id, "receiverId": receiver.id, "message": text}
                answer = await self.call(
                    "send_private", "POST", "/v1/messages/send?type=private", sender, body
                )
                if answer is not None:
                    receiver.expected.add(str(answer["messageId"]))
            await asyncio.sleep(max(0.0, 1 / per_second - (time.monotonic() - started)))

    async def check(self, user: User, kind: str, wait: int = 0) -> bool:
        """One check following the cursor; True if a page said more is waiting."""
        url = f"/v1/messages/{user.id}"
        if user.cursor is not None:
            url += f"?timestamp={user.cursor}" + (f"&wait={wait}" if wait else "")
        page = await self.call(kind, "GET", url, user, timeout=wait + 10)
        if page is None:
            return False
        for message in page["messages"]:  # type: ignore[union-attr]
            message_id = message["messageId"]
            if message_id in user.seen:
                self.error(f"{user.id} received {message_id} twice")
            user.seen.add(message_id)
        user.cursor = str(page["nextTimestamp"])
        return bool(page["hasMore"])

    async def checker(self, user: User) -> None:
        await asyncio.sleep(self.rng.random())
        while self.running:
            more = await self.check(user, "check")
            if not more:
                await asyncio.sleep(0.8 + self.rng.random() * 0.4)

    async def long_poller(self, user: User) -> None:
        while self.running:
            await self.check(user, "long_poll", wait=5)

    async def churn(self) -> None:
        """Groups change: members join and leave, new groups and users appear."""
        n = 0
        while self.running:
            n += 1
            await asyncio.sleep(0.5)
            group = self.rng.choice(list(self.groups))
            members = self.groups[group]
            owner = self.owners[group]
            outsider = self.rng.choice(self.users)
            if outsider.id in members and outsider.id != owner.id:
                url = f"/v1/groups/{group}?op=remove"
                body = {"userId": outsider.id}
                if await self.call("group_remove", "POST", url, outsider, body) is not None:
                    members.discard(outsider.id)
            elif outsider.id not in members:
                await self.add(group, owner, outsider)
            if n % 20 == 0:
                await self.new_group(self.rng.choice(self.users), self.rng.sample(self.users, 3))
            if n % 30 == 0:
                await self.new_user(f"late-{n}")
            reader = self.rng.choice(self.users)
            await self.call("read_groups", "GET", f"/v1/users/{reader.id}/groups", reader)

    async def drain(self) -> None:
        """After the load: every user reads to the end and has every private message."""
        for user in self.users:
            for _ in range(1000):
                if not await self.check(user, "drain") and user.cursor is not None:
                    break
            # a message stored just before the last check may be a millisecond away
            await asyncio.sleep(0.01)
            await self.check(user, "drain")
            missing = user.expected - user.seen
            if missing:
                self.error(f"{user.id} never received {len(missing)} messages")


def database_bytes(server: Server) -> int:
    return sum(p.stat().st_size for p in server.data_dir.glob("parley.db*"))


async def soak(args: argparse.Namespace) -> int:
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory(prefix="parley-soak-") as tmp:
        server = Server(Path(tmp) / "data", PARLEY_AUTH="token", PARLEY_RATE_LIMITS="off")
        server.start()
        say(f"server on {server.url}, rss {server.rss_bytes() / MB:.1f} MiB")
        try:
            code = await _run(server, rng, args)
        finally:
            server.stop()
        if code:
            say("\nlast lines of the server's log:")
            say("\n".join(server.log_path.read_text(errors="replace").splitlines()[-40:]))
        return code


async def _run(server: Server, rng: random.Random, args: argparse.Namespace) -> int:
    warmup, measured = args.warmup, args.minutes * 60
    limits = httpx.Limits(max_connections=200, max_keepalive_connections=200)
    async with httpx.AsyncClient(base_url=server.url, limits=limits) as client:
        run = Soak(client, rng, time.monotonic() + warmup + measured)
        for n in range(args.users):
            await run.new_user(f"user-{n}")
        for _ in range(max(1, args.users // 5)):
            await run.new_group(rng.choice(run.users), rng.sample(run.users, 5))
        if run.errors:
            say("setup failed")
            return 1
        initial = list(run.users)
        tasks = [asyncio.create_task(run.sender(args.sends / 4)) for _ in range(4)]
        tasks += [asyncio.create_task(run.checker(u)) for u in initial[args.long_pollers :]]
        tasks += [asyncio.create_task(run.long_poller(u)) for u in initial[: args.long_pollers]]
        tasks.append(asyncio.create_task(run.churn()))

        started = time.monotonic()
        samples: list[tuple[float, int]] = []
        baseline = 0
        while run.running:
            await asyncio.sleep(min(args.sample, max(0.0, run.deadline - time.monotonic())))
            elapsed = time.monotonic() - started
            rss = server.rss_bytes()
            samples.append((elapsed, rss))
            if not baseline and elapsed >= warmup:
                baseline = rss
                say(f"warm-up done at {elapsed:.0f}s: rss {rss / MB:.1f} MiB")
            elif baseline:
                say(
                    f"{elapsed:6.0f}s  rss {rss / MB:7.1f} MiB  "
                    f"requests {sum(run.counts.values()):>8}  errors {len(run.errors)}"
                )
        async with asyncio.timeout(60):
            await asyncio.gather(*tasks)
        final = server.rss_bytes()  # at the end of the steady load
        await run.drain()  # a one-off read of every user's whole history
        drained = server.rss_bytes()

    baseline = baseline or (samples[0][1] if samples else final)
    growth = (final - baseline) / baseline * 100 if baseline else 0.0
    peak = max((rss for _, rss in samples), default=final)
    total = sum(run.counts.values())
    seconds = time.monotonic() - started
    say("")
    say(f"rss after warm-up: {baseline / MB:.1f} MiB")
    say(f"rss at the end:    {final / MB:.1f} MiB  (peak {peak / MB:.1f} MiB)")
    say(f"growth:            {growth:+.1f}%  (limit {args.max_growth:.0f}%)")
    say(f"rss after drain:   {drained / MB:.1f} MiB  (every user read its whole history)")
    say(f"database:          {database_bytes(server) / MB:.1f} MiB on disk")
    say(f"requests:          {total} in {seconds:.0f}s ({total / seconds:.0f}/s)")
    for kind, count in sorted(run.counts.items()):
        say(f"  {kind:<14} {count}")
    delivered = sum(len(u.seen) for u in run.users)
    say(f"messages received: {delivered}  users: {len(run.users)}  groups: {len(run.groups)}")
    say(f"errors:            {len(run.errors)}")
    if run.errors or growth >= args.max_growth:
        say("FAIL")
        return 1
    say("OK")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=5.0, help="measured time (5)")
    parser.add_argument("--warmup", type=float, default=30.0, help="seconds before (30)")
    parser.add_argument("--users", type=int, default=40, help="users at the start (40)")
    parser.add_argument("--long-pollers", type=int, default=5, help="of them, long-polling")
    parser.add_argument("--sends", type=float, default=20.0, help="messages per second (20)")
    parser.add_argument("--sample", type=float, default=5.0, help="seconds between samples")
    parser.add_argument("--max-growth", type=float, default=10.0, help="percent of rss (10)")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    if args.users < 10 or args.long_pollers >= args.users:
        parser.error("need at least 10 users, and fewer long-pollers than users")
    return asyncio.run(soak(args))


if __name__ == "__main__":
    sys.exit(main())
