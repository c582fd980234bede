"""The schedule's sync of every mail team (services/outbox_sync.py): every account's queued mail
goes, a team with a broken secret is skipped, the answer counts each kind of outcome; system mail
whose sender died is recorded `unknown`, never sent."""

from __future__ import annotations

import logging
import ssl
from datetime import UTC, datetime, timedelta

import pytest
from mailcore.models import MailStatus, SendRequest
from mailcore.protocols.smtp import SmtpDelivery
from mailcore.services.outbox import Outbox, queue_mail
from mailcore.services.outbox_sync import SYNC_COUNTS, sync_every_team
from mailcore.teams import SYSTEM_ACCOUNT, SYSTEM_TEAM, ResolvedAccount

from tests.fakes import MemoryDeadLetters, MemoryPublisher, memory_directory, memory_storage
from tests.support import account_config, mail_account, outgoing_mail

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


class AcceptingServer:
    """An SMTP session that takes every message (what is tested is which mail reaches it)."""

    def __init__(self) -> None:
        self.delivered: list[bytes] = []

    def send(self, raw: bytes, recipients: list[str]) -> SmtpDelivery:
        self.delivered.append(raw)
        return SmtpDelivery(reply="250 2.0.0 Ok: queued")

    def close(self) -> None:
        pass


class Synced:
    """Teams `alpha` and `beta` with one account each, a team whose secret is not JSON, and a
    team of another kind; one queued mail in each mail team's outbox."""

    def __init__(self) -> None:
        self.storage = memory_storage()
        self.server = AcceptingServer()
        self.events = MemoryPublisher()
        self.directory = memory_directory(
            {
                "alpha": {"type": "mail", "accounts": {"desk": account_config()}},
                "b-broken": "{not json",
                "beta": {"type": "mail", "accounts": {"desk": account_config()}},
                "crm": {"type": "crm"},
            }
        )
        request = SendRequest(to="x@example.test", body_text="hello")
        self.queued = {
            team: queue_mail(
                ResolvedAccount(team, "desk", mail_account()), request, storage=self.storage, now=NOW
            ).id
            for team in ("alpha", "beta")
        }

    def run(self) -> dict[str, int]:
        server = self.server

        class Accepting(Outbox):
            def _session(self, mail, config):  # type: ignore[no-untyped-def]
                return server

        outbox = Accepting(
            storage=self.storage,
            directory=self.directory,
            events=self.events,
            dead_letters=MemoryDeadLetters(),
            tls_context=ssl.create_default_context(),
            clock=lambda: NOW,
        )
        with outbox:
            return sync_every_team(outbox, self.directory)


def test_every_mail_teams_queued_mail_is_sent_and_counted():
    synced = Synced()
    counts = synced.run()
    assert counts == {kind: 0 for kind in SYNC_COUNTS} | {"sent": 2}
    statuses = {synced.storage.mail.get(mail_id).status for mail_id in synced.queued.values()}
    assert statuses == {MailStatus.SENT}
    assert len(synced.server.delivered) == 2


def test_the_counts_name_every_kind_the_sync_reported_before():
    assert set(SYNC_COUNTS) == {"sent", "failed", "unknown", "skipped", "errors", "deferred", "released"}


def test_a_team_with_a_broken_secret_is_logged_and_skipped_and_the_next_teams_mail_still_goes(
    caplog: pytest.LogCaptureFixture,
):
    synced = Synced()
    with caplog.at_level(logging.WARNING):
        counts = synced.run()
    assert counts["sent"] == 2  # beta comes after b-broken in the listing, and its mail went
    skipped = [record for record in caplog.records if record.getMessage() == "outbox sync skipped a team"]
    assert [getattr(record, "team", None) for record in skipped] == ["b-broken"]


def test_a_second_sync_finds_nothing_left_to_send():
    synced = Synced()
    synced.run()
    assert synced.run() == {kind: 0 for kind in SYNC_COUNTS}


def test_a_system_mail_whose_function_died_is_recorded_unknown_after_its_hold_and_never_sent():
    synced = Synced()  # its directory has no `system` team, and the sync no system secret
    held = outgoing_mail(
        id="s1",
        team=SYSTEM_TEAM,
        account=SYSTEM_ACCOUNT,
        to=["x@example.test"],
        lease_until=NOW - timedelta(seconds=1),
        attempt_started_at=NOW - timedelta(minutes=15),
    )
    assert synced.storage.mail.put_new(held)
    counts = synced.run()
    assert counts == {kind: 0 for kind in SYNC_COUNTS} | {"sent": 2, "unknown": 1}
    stored = synced.storage.mail.get("s1")
    assert stored.status == MailStatus.UNKNOWN and "not sent again by itself" in (stored.error or "")
    assert len(synced.server.delivered) == 2  # the teams' queued mails alone
    failed = [(event.team, event.extra["status"]) for event in synced.events.events if event.mail_id == "s1"]
    assert failed == [(SYSTEM_TEAM, "unknown")]
