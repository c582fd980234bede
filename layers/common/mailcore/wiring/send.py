"""SendFunction: the send API (send now, queue, cancel, retry, sync an account's outbox)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from mailcore.adapters.dynamodb import idempotency_store
from mailcore.models import Mail, SendRequest
from mailcore.protocols.transcript import Transcript
from mailcore.services.delivery import Completions
from mailcore.services.outbox import cancel, queue_mail, retry
from mailcore.services.send import DirectSend
from mailcore.settings import SendSettings, read
from mailcore.teams import ResolvedAccount
from mailcore.wiring import process_root
from mailcore.wiring.outbox import OutboxRoot, build_root

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.idempotency import DynamoDBPersistenceLayer


@dataclass(frozen=True)
class SendRoot(OutboxRoot):
    idempotency_table: str = ""

    def send_now(
        self,
        target: ResolvedAccount,
        request: SendRequest,
        transcript: Transcript,
        seconds_left: Callable[[], float] | None = None,
    ) -> Mail:
        """Builds, stores and sends one mail (raises MailSendFailed, MailDeferred: services/send.py)
        within the caller's `seconds_left`."""
        return self.direct_send(seconds_left).send(target, request, transcript=transcript)

    def direct_send(self, seconds_left: Callable[[], float] | None = None) -> DirectSend:
        """Sending one mail now: the outbox's delivery without a claim (services/send.py)."""
        return DirectSend(
            seconds_left=seconds_left,
            storage=self.storage,
            tls_context=self.tls_context(),
            tokens=self.tokens,
            limiter=self.limiter,
            events=self.events,
            dead_letters=self.dead_letters,
            clock=self.clock,
        )

    def queue(
        self,
        target: ResolvedAccount,
        request: SendRequest,
        *,
        send_at: datetime | None,
        retry_max_age: timedelta | None,
    ) -> Mail:
        return queue_mail(
            target,
            request,
            storage=self.storage,
            now=self.clock(),
            send_at=send_at,
            retry_max_age=retry_max_age,
        )

    def cancel(self, mail: Mail) -> Mail:
        return cancel(self.storage, mail, completions=Completions(self.storage, self.events, None))

    def retry(self, mail: Mail) -> Mail:
        return retry(self.storage, mail)

    def idempotency_store(self) -> DynamoDBPersistenceLayer:
        """A persistence layer for one use: Powertools keeps the first configuration a layer is given."""
        return idempotency_store(self.idempotency_table)


@process_root
def root() -> SendRoot:
    settings = read(SendSettings)
    return build_root(SendRoot, settings, idempotency_table=settings.idempotency_table)
