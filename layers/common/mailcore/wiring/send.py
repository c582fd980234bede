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
from mailcore.services.files import team_mail
from mailcore.services.outbox import Retried, cancel, queue_mail, retry
from mailcore.services.send import DirectSend, RequestKey
from mailcore.settings import SendSettings, read
from mailcore.teams import Caller, ResolvedAccount
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
        *,
        time_left: float | None = None,
        seconds_left: Callable[[], float] | None = None,
        once: RequestKey | None = None,
    ) -> Mail:
        """Builds, stores and sends one mail (raises MailSendFailed, MailDeferred: services/send.py)
        within the caller's `seconds_left`; `time_left`: the seconds before the function is stopped
        (the end of the mail's hold); `once`: the caller's Idempotency-Key (an earlier run's mail is
        answered, not sent again)."""
        return self.direct_send(seconds_left).send(
            target, request, transcript=transcript, time_left=time_left, once=once
        )

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

    def cancel(self, caller: Caller, mail_id: str) -> Mail:
        """Cancels a queued or deferred mail of one of the caller's teams (403, 404, 409)."""
        mail = team_mail(caller, mail_id, self.storage)
        return cancel(self.storage, mail, completions=Completions(self.storage, self.events, None))

    def retry(self, caller: Caller, mail_id: str) -> Retried:
        """Queues a failed or unknown mail of one of the caller's teams again (403, 404, 409)."""
        return retry(self.storage, team_mail(caller, mail_id, self.storage))

    def idempotency_store(self) -> DynamoDBPersistenceLayer:
        """A persistence layer for one use: Powertools keeps the first configuration a layer is given."""
        return idempotency_store(self.idempotency_table)


@process_root
def root() -> SendRoot:
    settings = read(SendSettings)
    return build_root(SendRoot, settings, idempotency_table=settings.idempotency_table)
