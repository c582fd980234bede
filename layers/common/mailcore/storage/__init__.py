"""Storage ports: small protocols the services depend on, with AWS and in-memory adapters."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from mailcore.models import Mail, MailStatus, StoredFile


@dataclass(frozen=True)
class Clause:
    """Conditions that must all hold on a stored item: attribute equals, is absent, or (ISO time
    strings, which compare in time order) is before / not after a value."""

    equals: Mapping[str, str] = field(default_factory=dict)
    missing: tuple[str, ...] = ()
    before: Mapping[str, str] = field(default_factory=dict)
    not_after: Mapping[str, str] = field(default_factory=dict)


# A transition applies when any one of its clauses holds (the adapters translate this to a
# DynamoDB ConditionExpression, or evaluate it in memory). Every status write of a mail is one;
# the guards, and the races they close, are in mailcore.services.outbox and services.delivery.
Guard = tuple[Clause, ...]


@dataclass(frozen=True)
class Transition:
    mail_id: str
    guard: Guard
    assign: Mapping[str, Any]
    remove: tuple[str, ...] = ()


class MailRepository(Protocol):
    def put_new(self, mail: Mail) -> bool:
        """Stores a mail whose id is not stored yet; False (and nothing written) when it is."""
        ...

    def get(self, mail_id: str) -> Mail | None: ...

    def replace(self, mail: Mail) -> bool:
        """Writes the whole item of a mail that is stored; False (nothing written) when it is not."""
        ...

    def existing_ids(self, mail_ids: Iterable[str]) -> set[str]: ...

    def get_many(self, mail_ids: Iterable[str]) -> dict[str, Mail]:
        """The stored mails of these ids (read consistently, in one round trip per 100 ids)."""
        ...

    def list_team(
        self, team: str, query: MailQuery, *, after: str | None, limit: int
    ) -> tuple[list[Mail], bool]:
        """The team's mail matching `query`, newest first, starting after the created_key
        `after`; and whether more may follow the last one returned."""
        ...

    def transition(
        self, mail_id: str, guard: Guard, *, assign: Mapping[str, Any], remove: Iterable[str] = ()
    ) -> Mail | None:
        """Sets `assign` and removes `remove` when the item exists and `guard` holds, atomically;
        answers the mail as it is now (read back with the write), or None (and nothing written)
        when the guard failed. For a caller that uses the mail after the write: one that needs
        only to know the write won calls `apply` (nothing read back)."""
        ...

    def apply(self, transitions: Sequence[Transition]) -> list[bool]:
        """Applies each transition whose guard holds, each atomically on its own, as `transition`
        does; answers whether each was written, and reads nothing back."""
        ...

    def outbox(self, team: str, account: str, *, limit: int = 1000) -> list[Mail]:
        """Mail of the account still queued, oldest first (the sparse Outbox index)."""
        ...

    def due(self, team: str, account: str, now: str, *, limit: int = 1000) -> list[Mail]:
        """Waiting mail of the account (scheduled, deferred, or claimed from either) whose
        `due_at` is not after `now`, earliest first (the sparse Waiting index)."""
        ...

    def outbox_ids(self, team: str, account: str, *, limit: int = 1000) -> list[str]:
        """The ids of `outbox`, read without the mails (a sync claims each one, reading it then)."""
        ...

    def due_ids(self, team: str, account: str, now: str, *, limit: int = 1000) -> list[str]:
        """The ids of `due`, read without the mails."""
        ...


class FileRepository(Protocol):
    def put(self, stored: StoredFile) -> None: ...

    def get(self, file_id: str) -> StoredFile | None: ...


class BlobStore(Protocol):
    def put(self, key: str, data: bytes, content_type: str) -> None: ...

    def get(self, key: str) -> bytes: ...

    def get_at_most(self, key: str, limit: int) -> bytes | None:
        """The object's bytes, or None (nothing read) when it holds more than `limit` bytes."""
        ...

    def exists(self, key: str) -> bool: ...

    def download_url(self, key: str, *, filename: str, content_type: str) -> str: ...

    def upload_url(self, key: str, *, content_type: str) -> str: ...


@dataclass(frozen=True)
class MailQuery:
    """Filters of a mail listing; None means any."""

    account: str | None = None
    direction: str | None = None
    status: str | None = None
    # created_key prefix to start at: "YYYY-MM-DDTHH:MM:SS" (keys of that second sort after it).
    since: str | None = None

    def matches(self, mail: Mail) -> bool:
        return (
            (self.account is None or mail.account == self.account)
            and (self.direction is None or mail.direction == self.direction)
            and (self.status is None or mail.status == self.status)
        )


def created_key(mail: Mail) -> str:
    """The ByTeam sort key: creation time, then id (unique, and newest first when reversed)."""
    return f"{mail.model_dump(mode='json', include={'created_at'})['created_at']}#{mail.id}"


@dataclass(frozen=True)
class PullLease:
    """An account's pull lease, taken. `after_deaths`: how many pulls in a row before this one
    never gave their lease back (killed, or overran their time, with messages in hand); 0 when
    the one before gave it back."""

    holder: str
    after_deaths: int


class PullStateRepository(Protocol):
    def acquire_lease(self, team: str, account: str, holder: str, seconds: float) -> PullLease | None:
        """Takes the account's pull lease for `seconds`; None when another live pull holds it."""
        ...

    def release_lease(self, team: str, account: str, holder: str) -> None:
        """Gives the lease back, only if `holder` still holds it."""
        ...

    def lease_held(self, team: str, account: str) -> bool: ...

    def begin_attempt(self, team: str, account: str, mail_id: str, holder: str) -> int:
        """Records that pull `holder` prepares received message `mail_id`; answers how many
        earlier pulls recorded the same and never finished (the function died preparing it)."""
        ...

    def end_attempt(self, team: str, account: str, mail_id: str, holder: str) -> None:
        """Clears the marker of `begin_attempt`, only if `holder` still holds it."""
        ...

    def record(self, team: str, account: str, state: dict[str, Any]) -> None:
        """Keeps the outcome of an account's latest pull (time, counts, error) for status queries."""
        ...

    def get(self, team: str, account: str) -> dict[str, Any] | None: ...


class RateLimits(Protocol):
    def take(self, key: str, window: str, *, limit: int, expires_at: int) -> bool:
        """Counts one use of `key` in `window`; False, and nothing counted, when `limit` uses were
        counted already. The count disappears after `expires_at` (epoch seconds)."""
        ...


@dataclass
class Storage:
    mail: MailRepository
    files: FileRepository
    blobs: BlobStore
    pull_state: PullStateRepository


def outbox_key(team: str, account: str) -> str:
    """The Outbox index key: only queued mail carries it, so the index holds the queue alone."""
    return f"{team}#{account}"


def index_attributes(mail: Mail) -> dict[str, str]:
    """The sparse index keys a new item carries. Mail to send now is in the Outbox index; mail
    that waits (scheduled, or deferred after a temporary failure) is in the Waiting index, keyed
    by when it is due, so a sync reads only the mail that is due, never the days-long tail of
    deferred mail (and a direct send's mail only once its hold is over). The outbox's transitions move a mail between them (services/outbox.py)."""
    key = outbox_key(mail.team, mail.account)
    if mail.status == MailStatus.SENDING and mail.lease_until is not None:
        # A direct send's hold (services/delivery.py): due when it ends, so a sync reads the mail
        # only then, and takes it over if its sender died.
        return {"waiting": key, "due_at": iso_time(mail.lease_until)}
    waiting_since = mail.send_at if mail.status == MailStatus.QUEUED else mail.next_attempt_at
    if mail.status not in (MailStatus.QUEUED, MailStatus.DEFERRED):
        return {}
    if waiting_since is None:
        return {"outbox": key} if mail.status == MailStatus.QUEUED else {}
    return {"waiting": key, "due_at": iso_time(waiting_since)}


def iso_time(moment: Any) -> str:
    """Times as stored and compared in guards and index keys: ISO 8601 in UTC."""
    from datetime import UTC

    return str(moment.astimezone(UTC).isoformat())


def raw_key(team: str, account: str, mail_id: str) -> str:
    return f"raw/{team}/{account}/{mail_id}.eml"


def file_key(team: str, file_id: str) -> str:
    return f"files/{team}/{file_id}"


def body_key(team: str, mail_id: str) -> str:
    return f"bodies/{team}/{mail_id}.json"
