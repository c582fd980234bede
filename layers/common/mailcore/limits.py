"""Per-account sending limits shared by every process: messages a minute and concurrent SMTP
connections (Exchange Online allows 30 and 3 per mailbox; see MailAccount.message_rate_limit).

The counters live in the pull state table next to the account's STATE item (pk `team#account`):
`RATE#<epoch minute>` counts the messages of one minute (expiring by TTL), `CONN#<n>` are the
connection slots, each a lease with an expiry so a crashed process frees its slot by itself.
All conditions are in this module.

The API both send paths use (services/send.py's DirectSend and the outbox's runs):

    limiter.take_message(target)          # raises RateLimited (429, retry_after) when over
    with limiter.connection(target): ...  # raises RateLimited when every slot is taken
"""

from __future__ import annotations

import contextlib
import math
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Protocol

from mailcore.errors import MailServiceError
from mailcore.storage.aws import AwsAdapter, count_below
from mailcore.teams import ResolvedAccount

if TYPE_CHECKING:
    from botocore.client import BaseClient

# A connection lease outlives any SMTP session of a Lambda (15 min at most); a crashed holder's
# slot frees itself after this.
CONNECTION_LEASE_SECONDS = 900.0
RATE_ITEM_LIFETIME_SECONDS = 3600


class RateLimited(MailServiceError):
    """The account is at its provider's limit; try again after `retry_after` seconds."""

    status = 429
    code = "rate_limited"

    def __init__(self, message: str, *, retry_after: float) -> None:
        super().__init__(message, field="account")
        self.retry_after = retry_after


class LimitCounters(Protocol):
    def take(self, pk: str, minute: int, limit: int, expires_at: int) -> bool:
        """Counts one message in `minute` unless `limit` are counted already."""
        ...

    def lease(self, pk: str, slot: int, holder: str, now: float, until: float) -> bool:
        """Takes connection slot `slot` for `holder` unless another holder's lease is running."""
        ...

    def release(self, pk: str, slot: int, holder: str) -> None: ...


class DynamoLimitCounters(AwsAdapter):
    service = "dynamodb"

    def __init__(self, table: str, client: BaseClient | None = None) -> None:
        self.table = table
        super().__init__(client)

    def take(self, pk: str, minute: int, limit: int, expires_at: int) -> bool:
        key = {"pk": {"S": pk}, "sk": {"S": f"RATE#{minute}"}}
        return count_below(self.client, self.table, key, limit=limit, expires_at=expires_at)

    def lease(self, pk: str, slot: int, holder: str, now: float, until: float) -> bool:
        client = self.client
        try:
            # Closes the race of two processes taking the same free slot: only one put finds it
            # free (absent, or its lease run out because the holder crashed).
            client.put_item(
                TableName=self.table,
                Item={
                    "pk": {"S": pk},
                    "sk": {"S": f"CONN#{slot}"},
                    "holder": {"S": holder},
                    "lease_until": {"N": f"{until:.3f}"},
                    "expires_at": {"N": str(math.ceil(until) + RATE_ITEM_LIFETIME_SECONDS)},
                },
                ConditionExpression="attribute_not_exists(pk) OR lease_until < :now",
                ExpressionAttributeValues={":now": {"N": f"{now:.3f}"}},
            )
        except client.exceptions.ConditionalCheckFailedException:
            return False
        return True

    def release(self, pk: str, slot: int, holder: str) -> None:
        client = self.client
        # A holder whose lease ran out and was taken over must not free the new holder's slot.
        with contextlib.suppress(client.exceptions.ConditionalCheckFailedException):
            client.delete_item(
                TableName=self.table,
                Key={"pk": {"S": pk}, "sk": {"S": f"CONN#{slot}"}},
                ConditionExpression="holder = :holder",
                ExpressionAttributeValues={":holder": {"S": holder}},
            )


class MemoryLimitCounters:
    def __init__(self) -> None:
        self.items: dict[tuple[str, str], dict[str, Any]] = {}
        self._lock = threading.Lock()

    def take(self, pk: str, minute: int, limit: int, expires_at: int) -> bool:
        with self._lock:
            item = self.items.setdefault((pk, f"RATE#{minute}"), {"count": 0})
            if item["count"] >= limit:
                return False
            item["count"] += 1
            return True

    def lease(self, pk: str, slot: int, holder: str, now: float, until: float) -> bool:
        with self._lock:
            item = self.items.get((pk, f"CONN#{slot}"))
            if item is not None and item["lease_until"] >= now:
                return False
            self.items[(pk, f"CONN#{slot}")] = {"holder": holder, "lease_until": until}
            return True

    def release(self, pk: str, slot: int, holder: str) -> None:
        with self._lock:
            item = self.items.get((pk, f"CONN#{slot}"))
            if item is not None and item["holder"] == holder:
                del self.items[(pk, f"CONN#{slot}")]


class AccountLimiter:
    def __init__(self, counters: LimitCounters, *, clock: Callable[[], float] = time.time) -> None:
        self.counters = counters
        self.clock = clock

    @staticmethod
    def _pk(target: ResolvedAccount) -> str:
        return f"{target.team}#{target.name}"

    def take_message(self, target: ResolvedAccount) -> None:
        """Counts one message against the account's per-minute limit; RateLimited when it is used up."""
        limit = target.account.message_rate_limit
        if limit is None:
            return
        now = self.clock()
        minute = int(now // 60)
        if not self.counters.take(
            self._pk(target), minute, limit, (minute + 1) * 60 + RATE_ITEM_LIFETIME_SECONDS
        ):
            retry_after = (minute + 1) * 60 - now
            raise RateLimited(
                f"account {target.name!r} has sent its {limit} messages this minute (its provider's "
                f"limit); retry in {math.ceil(retry_after)} s",
                retry_after=retry_after,
            )

    @contextmanager
    def connection(self, target: ResolvedAccount) -> Iterator[None]:
        """Holds one of the account's SMTP connection slots for the block; RateLimited when none is free."""
        limit = target.account.connection_limit
        if limit is None:
            yield
            return
        pk, holder = self._pk(target), uuid.uuid4().hex
        now = self.clock()
        slot = next(
            (
                n
                for n in range(limit)
                if self.counters.lease(pk, n, holder, now, now + CONNECTION_LEASE_SECONDS)
            ),
            None,
        )
        if slot is None:
            raise RateLimited(
                f"account {target.name!r} already has {limit} SMTP connections open (its provider's limit); "
                "retry in a few seconds",
                retry_after=5.0,
            )
        try:
            yield
        finally:
            self.counters.release(pk, slot, holder)
