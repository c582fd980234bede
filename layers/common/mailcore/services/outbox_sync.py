"""The scheduled outbox sync of every mail team (OutboxSyncFunction), the safety net behind push:
mail still queued, claimed by a sender that died, or waiting and due, of every account; and
system mail whose sender died (recorded, never sent)."""

from __future__ import annotations

from dataclasses import fields

from aws_lambda_powertools import Logger

from mailcore.errors import TeamConfigInvalid
from mailcore.services.outbox import Outbox, OutboxReport
from mailcore.teams import SYSTEM_ACCOUNT, SYSTEM_TEAM, TeamDirectory

logger = Logger(child=True)

# What the sync answers: how many mails of each of the report's kinds, summed over the accounts.
SYNC_COUNTS = tuple(kind.name for kind in fields(OutboxReport))


def sync_every_team(outbox: Outbox, directory: TeamDirectory) -> dict[str, int]:
    """Syncs the outbox of every account of every mail team, and takes over system mail whose
    sender died; answers the counts of SYNC_COUNTS. A team whose secret is broken is logged and
    skipped: its operators' problem must not hold back the other teams' mail."""
    counts = dict.fromkeys(SYNC_COUNTS, 0)

    def add(report: OutboxReport) -> None:
        for kind in SYNC_COUNTS:
            counts[kind] += len(getattr(report, kind))

    def skipped(team: str, error: TeamConfigInvalid) -> None:
        logger.warning("outbox sync skipped a team", extra={"team": team, "reason": error.message})

    # System mail is in no team of the directory and only ever sent directly: its held sends are
    # taken over (without the system secret), first, so a long run of the teams cannot starve it.
    add(outbox.take_over(SYSTEM_TEAM, SYSTEM_ACCOUNT))
    for targets in directory.accounts_team_by_team(skipped):
        for target in targets:
            add(outbox.sync(target))
    return counts
