"""Writes of a team secret: one writer at a time per team (the writer lease, see
adapters/dynamodb.py for the conditions), for account changes and rotated refresh tokens.

Kept apart from services/accounts.py so that the pull and send functions, which write rotated
refresh tokens, do not import the accounts use cases and the check tool at cold start.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from aws_lambda_powertools import Logger

from mailcore.errors import Conflict
from mailcore.ports import AccountRevisions

# The writer lease outlives the accounts function's Timeout (60 s), and a rotated token's write
# (one read and one write of the secret) takes seconds: a holder is done long before its lease
# lapses, and a crashed holder's lease simply expires. A writer waits this long for another.
LEASE_SECONDS = 90.0
WAIT_SECONDS = 10.0

logger = Logger(child=True)


class Writer:
    account: str | None = None
    revision: int | None = None

    def changed(self, account: str, revision: int) -> None:
        self.account, self.revision = account, revision


@contextmanager
def writer_lease(revisions: AccountRevisions, team: str, *, wait: float = WAIT_SECONDS) -> Iterator[Writer]:
    """Holds the team's writer lease: whoever writes the team secret reads it only inside."""
    holder = uuid.uuid4().hex
    deadline = time.monotonic() + wait
    while not revisions.acquire(team, holder, LEASE_SECONDS):
        if time.monotonic() > deadline:
            raise Conflict(
                f"another change of team {team!r}'s accounts is being saved; try again", field="team"
            )
        time.sleep(0.05)
    writer = Writer()
    try:
        yield writer
    finally:
        revisions.release(team, holder, account=writer.account, revision=writer.revision)


def keep_rotated_refresh_token(
    revisions: AccountRevisions,
    store: Callable[[str, str, str], None],
    team: str,
    account: str,
    refresh_token: str,
    *,
    wait: float = WAIT_SECONDS,
) -> None:
    """Writes a provider's rotated refresh token into the team secret under the writer lease, so
    that it and an account change at the same moment both survive. Without the lease in time it
    is written anyway: a lost rotated token breaks the account, a lost change can be made again."""
    try:
        with writer_lease(revisions, team, wait=wait):
            store(team, account, refresh_token)
            return
    except Conflict:
        logger.warning(
            "refresh token written without the writer lease", extra={"team": team, "account": account}
        )
    store(team, account, refresh_token)
