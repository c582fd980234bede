"""In-memory adapters of the storage ports, for unit tests and the pipeline benchmark."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from mailcore.models import Mail, StoredFile
from mailcore.storage import (
    Guard,
    MailQuery,
    PullLease,
    Storage,
    Transition,
    created_key,
    index_attributes,
    outbox_key,
)


class MemoryMail:
    def __init__(self) -> None:
        self.items: dict[str, Mail] = {}
        # Attributes an item has beside the Mail's fields (outbox key, lease), as DynamoDB keeps them.
        self.extra: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()

    def put_new(self, mail: Mail) -> bool:
        with self._lock:
            if mail.id in self.items:
                return False
            self.items[mail.id] = mail.model_copy(deep=True)
            self.extra[mail.id] = index_attributes(mail)
            return True

    def replace(self, mail: Mail) -> bool:
        with self._lock:
            if mail.id not in self.items:
                return False
            self.items[mail.id] = mail.model_copy(deep=True)
            return True

    def _attributes(self, mail_id: str) -> dict[str, Any]:
        plain = self.items[mail_id].model_dump(mode="json")
        return {**{k: v for k, v in plain.items() if v is not None}, **self.extra.get(mail_id, {})}

    def transition(
        self, mail_id: str, guard: Guard, *, assign: Mapping[str, Any], remove: Iterable[str] = ()
    ) -> Mail | None:
        with self._lock:
            if mail_id not in self.items:
                return None
            item = self._attributes(mail_id)

            def holds(clause: Any) -> bool:
                return (
                    all(item.get(key) == wanted for key, wanted in clause.equals.items())
                    and all(key not in item for key in clause.missing)
                    and all(key in item and item[key] < limit for key, limit in clause.before.items())
                    and all(key in item and item[key] <= limit for key, limit in clause.not_after.items())
                )

            if not any(holds(clause) for clause in guard):
                return None
            for key in remove:
                item.pop(key, None)
            item.update({key: value for key, value in assign.items() if value is not None})
            mail = Mail.model_validate(item)
            self.items[mail_id] = mail
            self.extra[mail_id] = {key: value for key, value in item.items() if key not in Mail.model_fields}
            return mail.model_copy(deep=True)

    def apply(self, transitions: Sequence[Transition]) -> list[bool]:
        return [
            self.transition(t.mail_id, t.guard, assign=t.assign, remove=t.remove) is not None
            for t in transitions
        ]

    def outbox(self, team: str, account: str, *, limit: int = 1000) -> list[Mail]:
        key = outbox_key(team, account)
        queued = [self.items[i] for i, extra in self.extra.items() if extra.get("outbox") == key]
        return [mail.model_copy(deep=True) for mail in sorted(queued, key=lambda m: (m.created_at, m.id))][
            :limit
        ]

    def due(self, team: str, account: str, now: str, *, limit: int = 1000) -> list[Mail]:
        key = outbox_key(team, account)
        with self._lock:
            waiting = [
                (extra["due_at"], self.items[i])
                for i, extra in self.extra.items()
                if extra.get("waiting") == key and extra.get("due_at", "~") <= now
            ]
        return [mail.model_copy(deep=True) for _, mail in sorted(waiting, key=lambda pair: pair[0])][:limit]

    def outbox_ids(self, team: str, account: str, *, limit: int = 1000) -> list[str]:
        return [mail.id for mail in self.outbox(team, account, limit=limit)]

    def due_ids(self, team: str, account: str, now: str, *, limit: int = 1000) -> list[str]:
        return [mail.id for mail in self.due(team, account, now, limit=limit)]

    def get(self, mail_id: str) -> Mail | None:
        mail = self.items.get(mail_id)
        return mail.model_copy(deep=True) if mail else None

    def existing_ids(self, mail_ids: Iterable[str]) -> set[str]:
        return {mail_id for mail_id in mail_ids if mail_id in self.items}

    def get_many(self, mail_ids: Iterable[str]) -> dict[str, Mail]:
        return {
            mail_id: mail.model_copy(deep=True)
            for mail_id in mail_ids
            if (mail := self.items.get(mail_id)) is not None
        }

    def list_team(
        self, team: str, query: MailQuery, *, after: str | None, limit: int
    ) -> tuple[list[Mail], bool]:
        keyed = sorted(
            ((created_key(mail), mail) for mail in list(self.items.values()) if mail.team == team),
            key=lambda pair: pair[0],
            reverse=True,
        )
        found = [
            mail.model_copy(deep=True)
            for key, mail in keyed
            if (after is None or key < after)
            and (query.since is None or key >= query.since)
            and query.matches(mail)
        ]
        return found[:limit], len(found) > limit


class MemoryRateLimits:
    def __init__(self) -> None:
        self.counts: dict[tuple[str, str], int] = {}
        self._lock = threading.Lock()

    def take(self, key: str, window: str, *, limit: int, expires_at: int) -> bool:
        with self._lock:
            used = self.counts.get((key, window), 0)
            if used >= limit:
                return False
            self.counts[(key, window)] = used + 1
            return True


class MemoryFiles:
    def __init__(self) -> None:
        self.items: dict[str, StoredFile] = {}

    def put(self, stored: StoredFile) -> None:
        self.items[stored.id] = stored.model_copy()

    def get(self, file_id: str) -> StoredFile | None:
        return self.items.get(file_id)


class MemoryBlobs:
    def __init__(self) -> None:
        self.objects: dict[str, tuple[bytes, str]] = {}

    def put(self, key: str, data: bytes, content_type: str) -> None:
        self.objects[key] = (bytes(data), content_type)

    def get(self, key: str) -> bytes:
        return self.objects[key][0]

    def get_at_most(self, key: str, limit: int) -> bytes | None:
        data = self.objects[key][0]
        return None if len(data) > limit else data

    def exists(self, key: str) -> bool:
        return key in self.objects

    def download_url(self, key: str, *, filename: str, content_type: str) -> str:
        return f"memory://{key}?filename={filename}"

    def upload_url(self, key: str, *, content_type: str) -> str:
        return f"memory://{key}?upload"


class MemoryPullState:
    """Same transitions as mailcore.adapters.dynamodb.DynamoPullState, under a lock instead of conditions."""

    def __init__(self) -> None:
        self.states: dict[tuple[str, str], dict[str, Any]] = {}
        self.leases: dict[tuple[str, str], tuple[str, float]] = {}
        self.attempts: dict[tuple[str, str, str], tuple[str, int]] = {}  # -> (holder, attempts)
        self.left_behind: dict[tuple[str, str], int] = {}  # leases left in a row before the current
        self._lock = threading.Lock()

    def begin_attempt(self, team: str, account: str, mail_id: str, holder: str) -> int:
        with self._lock:
            last, attempts = self.attempts.get((team, account, mail_id), ("", 0))
            if last == holder:
                return attempts - 1
            self.attempts[(team, account, mail_id)] = (holder, attempts + 1)
            return attempts

    def end_attempt(self, team: str, account: str, mail_id: str, holder: str) -> None:
        with self._lock:
            if self.attempts.get((team, account, mail_id), ("", 0))[0] == holder:
                del self.attempts[(team, account, mail_id)]

    def acquire_lease(self, team: str, account: str, holder: str, seconds: float) -> PullLease | None:
        with self._lock:
            current = self.leases.get((team, account))
            if current is not None and current[1] >= time.time():
                return None
            self.leases[(team, account)] = (holder, time.time() + seconds)
            after_deaths = self.left_behind.get((team, account), 0) + (current is not None)
            self.left_behind[(team, account)] = after_deaths
            return PullLease(holder, after_deaths=after_deaths)

    def release_lease(self, team: str, account: str, holder: str) -> None:
        with self._lock:
            if self.leases.get((team, account), ("", 0.0))[0] == holder:
                del self.leases[(team, account)]
                self.left_behind.pop((team, account), None)

    def lease_held(self, team: str, account: str) -> bool:
        current = self.leases.get((team, account))
        return current is not None and current[1] >= time.time()

    def record(self, team: str, account: str, state: dict[str, Any]) -> None:
        self.states[(team, account)] = dict(state)

    def get(self, team: str, account: str) -> dict[str, Any] | None:
        return self.states.get((team, account))


def memory_storage() -> Storage:
    return Storage(mail=MemoryMail(), files=MemoryFiles(), blobs=MemoryBlobs(), pull_state=MemoryPullState())
