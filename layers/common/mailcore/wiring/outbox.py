"""The outbox's functions (OutboxPushFunction, OutboxSyncFunction): queued mail sent over SMTP."""

from __future__ import annotations

import ssl
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from mailcore import wiring
from mailcore.adapters.sqs import SqsDeadLetters
from mailcore.limits import AccountLimiter
from mailcore.oauth2 import TokenBroker
from mailcore.ports import DeadLetters, EventPublisher
from mailcore.protocols.transcript import Transcript
from mailcore.services.outbox import Outbox, OutboxReport
from mailcore.services.outbox_sync import sync_every_team
from mailcore.settings import OutboxSettings, read
from mailcore.storage import Storage
from mailcore.teams import ResolvedAccount, TeamDirectory
from mailcore.wiring import parts, process_root


def _now() -> datetime:
    return wiring.clock()


@dataclass(frozen=True)
class OutboxRoot:
    storage: Storage
    directory: TeamDirectory
    events: EventPublisher
    dead_letters: DeadLetters
    tokens: TokenBroker
    limiter: AccountLimiter
    tls_context: Callable[[], ssl.SSLContext]
    clock: Callable[[], datetime] = _now

    def outbox(
        self, *, seconds_left: Callable[[], float] | None = None, transcript: Transcript | None = None
    ) -> Outbox:
        """A sender of queued mail for one invocation (it holds that run's SMTP connections)."""
        return Outbox(
            storage=self.storage,
            directory=self.directory,
            events=self.events,
            dead_letters=self.dead_letters,
            tls_context=self.tls_context(),
            transcript=transcript,
            tokens=self.tokens,
            limiter=self.limiter,
            seconds_left=seconds_left,
            clock=self.clock,
        )

    def send(self, mail_ids: Iterable[str], *, seconds_left: Callable[[], float]) -> OutboxReport:
        """Claims and sends these mails (push: the MailTable stream's new or re-queued mail)."""
        with self.outbox(seconds_left=seconds_left) as outbox:
            return outbox.send(mail_ids)

    def sync(self, target: ResolvedAccount, *, seconds_left: Callable[[], float]) -> OutboxReport:
        """Sends everything still in one account's outbox and its waiting mail that is due."""
        with self.outbox(seconds_left=seconds_left) as outbox:
            return outbox.sync(target)

    def sync_every_team(self, *, seconds_left: Callable[[], float]) -> dict[str, int]:
        """The schedule's sync of every account of every mail team; answers how many mails of
        each kind (services/outbox_sync.py). A team with a broken secret is skipped."""
        with self.outbox(seconds_left=seconds_left) as outbox:
            return sync_every_team(outbox, self.directory)


def build_root[RootT: OutboxRoot](kind: type[RootT], settings: OutboxSettings, **extra: Any) -> RootT:
    return kind(
        **parts.mail_parts(settings),
        dead_letters=SqsDeadLetters(settings.outbox_dlq_url),
        limiter=parts.account_limiter(settings),
        **extra,
    )


@process_root
def root() -> OutboxRoot:
    return build_root(OutboxRoot, read(OutboxSettings))
