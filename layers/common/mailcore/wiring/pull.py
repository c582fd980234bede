"""The pull functions (PullFunction, QueuedPullFunction, PullDispatchFunction): new mail of the
teams' accounts over POP3, and the queue of scheduled pulls."""

from __future__ import annotations

import ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from mailcore.adapters.sqs import SqsPullQueue
from mailcore.models import AccountPullReport
from mailcore.oauth2 import TokenBroker
from mailcore.ports import EventPublisher, PullQueue
from mailcore.protocols.transcript import Transcript
from mailcore.services.dispatch import dispatch_pulls, pull_queued_account, pull_status
from mailcore.services.pull import pull_account, pull_accounts
from mailcore.settings import PullSettings, read
from mailcore.storage import Storage
from mailcore.teams import Caller, ResolvedAccount, TeamDirectory
from mailcore.wiring import parts, process_root


@dataclass(frozen=True)
class PullRoot:
    storage: Storage
    directory: TeamDirectory
    events: EventPublisher
    queue: PullQueue
    tokens: TokenBroker
    tls_context: Callable[[], ssl.SSLContext]

    def _pulling(self) -> dict[str, Any]:
        return {
            "storage": self.storage,
            "tls_context": self.tls_context(),
            "events": self.events,
            "tokens": self.tokens,
        }

    def pull(
        self, target: ResolvedAccount, *, transcript: Transcript, seconds_left: Callable[[], float]
    ) -> AccountPullReport:
        """New mail of one account; raises what stops it (a pull running already: 409)."""
        return pull_account(target, transcript=transcript, seconds_left=seconds_left, **self._pulling())

    def pull_mine(
        self, caller: Caller, *, transcript: Transcript, seconds_left: Callable[[], float]
    ) -> list[AccountPullReport]:
        """New mail of every account of the caller's mail teams, each in turn; one broken account
        never stops the others."""
        targets = self.directory.accounts_of(caller.teams)
        return pull_accounts(targets, transcript=transcript, seconds_left=seconds_left, **self._pulling())

    def pull_queued(self, message: dict[str, Any], *, seconds_left: Callable[[], float]) -> None:
        """One message of the pull queue (services/dispatch.py)."""
        pull_queued_account(
            message, directory=self.directory, queue=self.queue, seconds_left=seconds_left, **self._pulling()
        )

    def status(self, caller: Caller, account: str, team: str | None) -> dict[str, Any]:
        return pull_status(caller, account, team, directory=self.directory, storage=self.storage)

    def dispatch(self) -> int:
        """Enqueues a pull of every account of every mail team; answers how many."""
        return dispatch_pulls(self.directory, self.queue)


def build(settings: PullSettings) -> PullRoot:
    return PullRoot(**parts.mail_parts(settings), queue=SqsPullQueue(settings.pull_queue_url))


@process_root
def root() -> PullRoot:
    return build(read(PullSettings))
