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

import math
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from mailcore.errors import MailServiceError
from mailcore.ports import LimitCounters
from mailcore.teams import ResolvedAccount

if TYPE_CHECKING:
    pass

# A connection lease outlives any SMTP session of a Lambda (15 min at most); a crashed holder's
# slot frees itself after this.
CONNECTION_LEASE_SECONDS = 900.0
RATE_ITEM_LIFETIME_SECONDS = 3600


class RateLimited(MailServiceError, status=429, code="rate_limited"):
    """The account is at its provider's limit; try again after `retry_after` seconds."""

    def __init__(self, message: str, *, retry_after: float) -> None:
        super().__init__(message, field="account")
        self.retry_after = retry_after


class AccountLimiter:
    def __init__(self, counters: LimitCounters, *, clock: Callable[[], float] = time.time) -> None:
        self.counters = counters
        self.clock = clock

    @staticmethod
    def _pk(target: ResolvedAccount) -> str:
        return f"{target.team}#{target.name}"

    def take_message(self, target: ResolvedAccount) -> None:
        """Counts one message against the account's per-minute limit; RateLimited when it is used up."""
        limit = target.config.message_rate_limit
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
        limit = target.config.connection_limit
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
