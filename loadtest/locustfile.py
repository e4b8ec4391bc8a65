"""Locust workload for Parley, the same model as ``parley bench``.

Each simulated user signs up (token mode), joins a shared group of ``PARLEY_GROUP_SIZE``
users, then checks its messages once per simulated minute, always following
``nextTimestamp``, and sends about 10 messages per simulated day (private to a random known
user, or to its group, 5 : 2). Time is compressed by ``PARLEY_TIME_COMPRESSION`` (default 60:
a simulated minute lasts one second).

    pip install locust
    locust -f loadtest/locustfile.py --host http://127.0.0.1:8080 --headless -u 500 -r 50 -t 2m

Run the server with ``--rate-limits off`` (every simulated user comes from one address).
"""

from __future__ import annotations

import os
import random
import threading
import uuid
from typing import Any

from locust import HttpUser, between, task

COMPRESSION = float(os.environ.get("PARLEY_TIME_COMPRESSION", "60"))
GROUP_SIZE = int(os.environ.get("PARLEY_GROUP_SIZE", "5"))
MINUTE = 60.0 / COMPRESSION
CHECKS_PER_DAY = 24 * 60
SENDS_PER_DAY = 10

_lock = threading.Lock()
_known: list[str] = []  # ids of users signed up so far
_groups: list[tuple[str, dict[str, str]]] = []  # (group id, its creator's auth header)
_members: dict[str, int] = {}


class ParleyUser(HttpUser):
    # One check per simulated minute; sends ride along at 10 per simulated day.
    wait_time = between(MINUTE * 0.9, MINUTE * 1.1)

    def on_start(self) -> None:
        body = self.client.post("/v1/users/create", json={"username": "locust"}).json()
        self.user_id: str = body["userId"]
        self.auth = {"Authorization": f"Bearer {body['token']}"}
        self.cursor: str | None = None
        self.group_id = self._join_group()
        with _lock:
            _known.append(self.user_id)

    def _join_group(self) -> str:
        with _lock:
            open_group = next((g for g in _groups if _members[g[0]] < GROUP_SIZE), None)
            if open_group is not None:
                _members[open_group[0]] += 1
        if open_group is None:
            r = self.client.post(
                "/v1/groups/create", json={"groupName": "locust"}, headers=self.auth
            )
            group_id = r.json()["groupId"]
            with _lock:
                _groups.append((group_id, self.auth))
                _members[group_id] = 1
            return str(group_id)
        group_id, owner = open_group
        self.client.post(
            f"/v1/groups/{group_id}?op=add",
            json={"userId": self.user_id},
            headers=owner,
            name="/v1/groups/:id?op=add",
        )
        return group_id

    @task
    def minute(self) -> None:
        self.check()
        if random.random() < SENDS_PER_DAY / CHECKS_PER_DAY:
            self.send()

    def check(self) -> None:
        params = {"timestamp": self.cursor} if self.cursor else {}
        for _ in range(10):  # follow hasMore, bounded
            r = self.client.get(
                f"/v1/messages/{self.user_id}",
                params=params,
                headers=self.auth,
                name="/v1/messages/:id",
            )
            if r.status_code != 200:
                return
            page: dict[str, Any] = r.json()
            self.cursor = params["timestamp"] = page["nextTimestamp"]
            if not page["hasMore"]:
                return

    def send(self) -> None:
        headers = {**self.auth, "Idempotency-Key": uuid.uuid4().hex}
        if random.random() < 5 / 7 and _known:
            to = random.choice(_known)
            self.client.post(
                "/v1/messages/send?type=private",
                headers=headers,
                json={"senderId": self.user_id, "receiverId": to, "message": "hi"},
            )
        else:
            self.client.post(
                "/v1/messages/send?type=group",
                headers=headers,
                json={"senderId": self.user_id, "groupId": self.group_id, "message": "hi all"},
            )
