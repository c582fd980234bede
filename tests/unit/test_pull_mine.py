"""Pulling the caller's accounts (PullRoot.pull_mine, behind POST /api/core/mail/pull): every
account of the caller's mail teams, and no other team's."""

from __future__ import annotations

import ssl

from mailcore.oauth2 import TokenBroker
from mailcore.protocols.transcript import Transcript
from mailcore.services.pull import ALREADY_RUNNING
from mailcore.teams import Caller
from mailcore.wiring.pull import PullRoot

from tests.fakes import MemoryPublisher, MemoryPullQueue, memory_directory, memory_storage
from tests.support import account_config

TEAMS = {
    "sales": {"type": "mail", "accounts": {"desk": account_config(), "orders": account_config()}},
    "support": {"type": "mail", "accounts": {"help": account_config()}},
    "hr": {"type": "mail", "accounts": {"jobs": account_config()}},
}


def pull_root() -> PullRoot:
    storage = memory_storage()
    # Every account's pull is running already: each is reported without a connection.
    for team, config in TEAMS.items():
        for account in config["accounts"]:
            assert storage.pull_state.acquire_lease(team, account, "another pull", 60)
    return PullRoot(
        storage=storage,
        directory=memory_directory(TEAMS),
        events=MemoryPublisher(),
        queue=MemoryPullQueue(),
        tokens=TokenBroker(),
        tls_context=ssl.create_default_context,
    )


def test_every_account_of_the_callers_mail_teams_is_pulled_and_no_other_teams():
    caller = Caller(user="ann@example.test", teams=frozenset({"sales", "support", "no-such-team"}))
    reports = pull_root().pull_mine(caller, transcript=Transcript(), seconds_left=lambda: 30.0)
    assert [(report.team, report.account) for report in reports] == [
        ("sales", "desk"),
        ("sales", "orders"),
        ("support", "help"),
    ]
    assert {report.error for report in reports} == {ALREADY_RUNNING}


def test_a_caller_of_no_mail_team_pulls_nothing():
    caller = Caller(user="bob@example.test", teams=frozenset())
    assert pull_root().pull_mine(caller, transcript=Transcript(), seconds_left=lambda: 30.0) == []
