"""The ports: every outside service the domain uses, as a Protocol. AWS implements each with one
adapter module per service (mailcore.adapters); the tests with in-memory fakes (tests/fakes).

The mail and file storage ports (MailRepository, FileRepository, BlobStore, PullStateRepository,
RateLimits) are defined next to their value types in mailcore.storage and named here too."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

from mailcore.storage import (
    BlobStore,
    FileRepository,
    MailRepository,
    PullStateRepository,
    RateLimits,
    Storage,
)

if TYPE_CHECKING:
    from mailcore.events import Event

__all__ = [
    "AccountRevisions",
    "BlobStore",
    "CodeDecrypter",
    "DeadLetters",
    "EventPublisher",
    "FileRepository",
    "LimitCounters",
    "MailRepository",
    "PullQueue",
    "PullStateRepository",
    "RateLimits",
    "SecretReader",
    "Storage",
    "TeamSecrets",
]


class SecretReader(Protocol):
    """Secrets as JSON by name (team secrets, the system mail secret), read through a cache."""

    def cached_json(self, name: str) -> Any | None:
        """The secret's value (from the cache while it is young), None when there is no such
        secret; raises ValueError when it is not JSON."""
        ...

    def fresh_json(self, name: str) -> Any:
        """The secret's value read now, never from the cache (for a read-modify-write)."""
        ...

    def put_json(self, name: str, value: Any) -> None: ...

    def names_under(self, prefix: str) -> list[str]:
        """The full names of every existing (not deleted) secret whose name starts with `prefix`."""
        ...

    def clear_cache(self) -> None: ...


class TeamSecrets(Protocol):
    """A team's secret read fresh and written, for a change of its accounts (services/accounts.py)."""

    def read(self, team: str) -> dict[str, Any] | None: ...

    def write(self, team: str, config: dict[str, Any]) -> None: ...


class AccountRevisions(Protocol):
    """The team's writer lease and its accounts' revisions (services/team_writes.py)."""

    def acquire(self, team: str, holder: str, seconds: float) -> bool: ...

    def release(self, team: str, holder: str, *, account: str | None, revision: int | None) -> None: ...

    def revisions(self, team: str) -> dict[str, int]: ...


class EventPublisher(Protocol):
    def publish(self, events: Sequence[Event]) -> None: ...


class PullQueue(Protocol):
    def send(self, accounts: list[dict[str, str]]) -> None:
        """Enqueues one pull per {"team", "account"}; raises when some could not be enqueued."""
        ...


class DeadLetters(Protocol):
    def put(self, body: dict[str, Any]) -> None:
        """Keeps a mail that ended failed after its retries for a person (or a redrive) to see."""
        ...


class LimitCounters(Protocol):
    """The per-account sending counters (mailcore.limits)."""

    def take(self, pk: str, minute: int, limit: int, expires_at: int) -> bool:
        """Counts one message in `minute` unless `limit` are counted already."""
        ...

    def lease(self, pk: str, slot: int, holder: str, now: float, until: float) -> bool:
        """Takes connection slot `slot` for `holder` unless another holder's lease is running."""
        ...

    def release(self, pk: str, slot: int, holder: str) -> None: ...


class CodeDecrypter(Protocol):
    """Decrypts what Cognito encrypted under the stack's KMS key (custom sender triggers)."""

    def decrypt(self, ciphertext: bytes) -> bytes: ...
