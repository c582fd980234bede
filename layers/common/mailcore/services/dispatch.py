"""Scheduled pulls at scale: the dispatcher puts one queue message per account, and the pull
function takes them a few at a time (its maximum concurrency bounds the connections a mail
server sees). A broken account costs only its own message."""

from __future__ import annotations

import ssl
from collections.abc import Callable
from typing import Any

from aws_lambda_powertools import Logger

from mailcore.errors import PullRunning, TeamConfigInvalid
from mailcore.models import AccountPullReport
from mailcore.oauth2 import TokenBroker
from mailcore.ports import EventPublisher, PullQueue
from mailcore.protocols.transcript import Transcript
from mailcore.services.pull import TIME_MARGIN_SECONDS, pull_account
from mailcore.storage import Storage
from mailcore.teams import Caller, ResolvedAccount, TeamDirectory

logger = Logger(child=True)

# SendMessageBatch takes at most 10 entries a call.
_BATCH = 10


def dispatch_pulls(directory: TeamDirectory, queue: PullQueue) -> int:
    """Enqueues a pull of every account of every mail team; answers how many."""
    accounts: list[dict[str, str]] = []

    def not_pulled(team: str, error: TeamConfigInvalid) -> None:
        logger.error("not pulling a team", extra={"team": team, "reason": error.message})

    for resolved in directory.accounts_team_by_team(not_pulled):
        accounts.extend({"team": found.team, "account": found.name} for found in resolved)
    queue.send(accounts)
    return len(accounts)


def pull_queued_account(
    message: dict[str, Any],
    *,
    directory: TeamDirectory,
    storage: Storage,
    queue: PullQueue,
    tls_context: ssl.SSLContext,
    seconds_left: Callable[[], float],
    events: EventPublisher | None = None,
    tokens: TokenBroker | None = None,
) -> AccountPullReport | None:
    """Pulls the account a queue message names. A mail-server failure is recorded on the
    account's pull state and is not raised: retrying a wrong password every minute would only
    get the mailbox locked. Storage failures raise, so the message comes back later."""
    team, account = str(message.get("team", "")), str(message.get("account", ""))
    config = directory.team(team)
    if config is None or account not in config.accounts:
        logger.warning("queued pull: no such account any more", extra={"team": team, "account": account})
        return None
    if seconds_left() < TIME_MARGIN_SECONDS:
        queue.send([{"team": team, "account": account}])
        return None
    target = ResolvedAccount(team, account, config.accounts[account])
    try:
        report = pull_account(
            target,
            storage=storage,
            transcript=Transcript(),
            tls_context=tls_context,
            seconds_left=seconds_left,
            events=events,
            tokens=tokens,
        )
    except PullRunning:
        return None  # the pull already running covers this account
    if report.error:
        logger.warning("pull failed", extra={"team": team, "account": account, "reason": report.error})
    if report.remaining:
        # Out of time with mail left: the next invocation goes on where this one stopped.
        queue.send([{"team": team, "account": account}])
    return report


def pull_status(
    caller: Caller, account: str, team: str | None, *, directory: TeamDirectory, storage: Storage
) -> dict[str, Any]:
    """The outcome of the account's latest pull and whether one is running; members only."""
    target = directory.resolve_account(caller, account, team)
    state = storage.pull_state.get(target.team, target.name) or {}
    return {
        "team": target.team,
        "account": target.name,
        "last_pull_at": state.get("last_pull_at"),
        "last_error": state.get("last_error"),
        "fetched": state.get("fetched", 0),
        "remaining": state.get("remaining", 0),
        "running": storage.pull_state.lease_held(target.team, target.name),
        # OAuth2 accounts whose grant was refused are not tried again until their secret changes.
        "broken_reason": state.get("broken_reason"),
        # Messages stored raw and unparsed (over their budget, or refused by storage), ever, and
        # the latest: {"mail_id", "reason", "at"}. Many of them: an attack or a broken sender.
        "set_aside": state.get("set_aside", 0),
        "latest_set_aside": state.get("latest_set_aside"),
    }
