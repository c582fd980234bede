"""A direct send whose function died: its mail is held `sending` until the function's deadline
and a margin, then the outbox's sync records it `unknown` (never sends it), and exactly one of
the late send's outcome and the sync's takeover is written and announced (services/delivery.py).

The outbox and the direct send run on the in-memory storage with a clock the test moves and a
scripted SMTP session (tests/unit/test_deferred_delivery.py); the real-server version is in
tests/integration/test_stuck_sending.py."""

from __future__ import annotations

import ssl
import time
from collections.abc import Callable
from datetime import timedelta

from mailcore.events import MAIL_FAILED, MAIL_SENT
from mailcore.limits import AccountLimiter
from mailcore.models import Mail, MailStatus, SendRequest
from mailcore.protocols.smtp import SmtpDelivery
from mailcore.protocols.transcript import Transcript
from mailcore.services.delivery import DIRECT_HOLD, HOLD_MARGIN, LEASE, Completions, Outcome, ended
from mailcore.services.outbox import claim, owner_guard, retry
from mailcore.services.send import DirectSend

from tests.fakes import MemoryLimitCounters
from tests.support import outgoing_mail
from tests.unit.test_deferred_delivery import RACE_MAILS, START, Harness, ScriptedServer, race

FUNCTION_TIME_LEFT = 29.0  # the send API's Timeout, as its function starts
HOLD = timedelta(seconds=FUNCTION_TIME_LEFT) + HOLD_MARGIN


class Direct(DirectSend):
    """The direct send of the harness's account over its scripted server; `during` runs while
    the message is on the wire (before the server's answer)."""

    during: Callable[[], None] | None = None

    def _sender(self, target, transcript):
        server: ScriptedServer = self.server  # type: ignore[attr-defined]

        def send(raw: bytes, recipients: list[str]) -> SmtpDelivery:
            if self.during is not None:
                self.during()
            return server.send(raw, recipients)

        return send


def direct_send(harness: Harness, *, during: Callable[[], None] | None = None) -> Mail:
    direct = Direct(
        storage=harness.storage,
        tls_context=ssl.create_default_context(),
        events=harness.events,
        dead_letters=harness.dead_letters,
        clock=harness.clock,
        sleep=lambda _: None,
    )
    object.__setattr__(direct, "server", harness.server)
    object.__setattr__(direct, "during", during)
    request = SendRequest(to="x@example.test", body_text="now")
    return direct.send(harness.target, request, transcript=Transcript(), time_left=FUNCTION_TIME_LEFT)


def died_mid_send(harness: Harness, mail_id: str = "m1") -> Mail:
    """A direct send's mail as its function left it when it was killed: stored `sending`, held
    until its deadline and the margin, its attempt begun."""
    mail = outgoing_mail(
        id=mail_id,
        team=harness.target.team,
        account=harness.target.name,
        message_id=f"<{mail_id}@example.test>",
        to=["x@example.test"],
        lease_until=START + HOLD,
        attempt_started_at=START,
    )
    assert harness.storage.mail.put_new(mail)
    return mail


def announced(harness: Harness) -> list[tuple[str, str]]:
    return [(event.detail_type, event.extra["status"]) for event in harness.events.events]


def test_a_direct_send_stores_its_mail_held_until_its_functions_deadline_and_the_margin():
    harness = Harness(ScriptedServer())
    seen: list[Mail] = []
    direct_send(harness, during=lambda: seen.extend(harness.storage.mail.due("t", "desk", "9999")))
    (held,) = seen
    assert held.status == MailStatus.SENDING
    assert held.lease_until == START + HOLD and held.attempt_started_at == START


def test_a_direct_send_without_a_known_deadline_is_held_a_whole_lease():
    harness = Harness(ScriptedServer())
    seen: list[Mail] = []
    direct = Direct(storage=harness.storage, tls_context=ssl.create_default_context(), clock=harness.clock)
    object.__setattr__(direct, "server", harness.server)
    object.__setattr__(direct, "during", lambda: seen.extend(harness.storage.mail.due("t", "desk", "9999")))
    direct.send(harness.target, SendRequest(to="x@example.test", body_text="now"), transcript=Transcript())
    assert seen[0].lease_until == START + LEASE


def test_a_finished_direct_send_leaves_nothing_for_the_sync():
    harness = Harness(ScriptedServer())
    mail = direct_send(harness)
    harness.clock.advance(minutes=16)
    report = harness.sync()
    assert report.public()["skipped"] == [] and report.unknown == []
    stored = harness.mail(mail.id)
    assert stored.status == MailStatus.SENT and stored.lease_until is None
    assert stored.attempt_started_at is None
    assert len(harness.server.delivered) == 1


def test_the_sync_leaves_a_direct_send_alone_while_its_hold_lasts():
    harness = Harness(ScriptedServer())
    mail = died_mid_send(harness)
    harness.clock.advance(seconds=HOLD.total_seconds() - 1)
    report = harness.sync()
    assert report.unknown == [] and harness.mail(mail.id).status == MailStatus.SENDING
    assert claim(harness.storage, mail.id, now=harness.clock()) is None


def test_after_its_hold_the_sync_records_a_dead_direct_send_unknown_and_never_sends_it():
    harness = Harness(ScriptedServer())
    mail = died_mid_send(harness)
    harness.clock.advance(seconds=HOLD.total_seconds() + 1)
    report = harness.sync()
    assert [unknown.id for unknown in report.unknown] == [mail.id]
    stored = harness.mail(mail.id)
    assert stored.status == MailStatus.UNKNOWN and harness.server.delivered == []
    assert "may have been delivered" in (stored.error or "")
    assert "not sent again by itself" in (stored.error or "")
    assert announced(harness) == [(MAIL_FAILED, "unknown")]
    assert harness.events.events[0].extra["message_id"] == mail.message_id
    assert harness.dead_letters.bodies == []  # as any unknown outcome: a person decides
    assert harness.sync().unknown == []  # recorded once, out of every index


def test_a_dead_direct_send_recorded_unknown_is_retried_with_its_message_id_and_sent_once():
    harness = Harness(ScriptedServer())
    mail = died_mid_send(harness)
    harness.clock.advance(minutes=2)
    harness.sync()
    retry(harness.storage, harness.mail(mail.id))
    report = harness.sync()
    assert [sent.id for sent in report.sent] == [mail.id]
    assert harness.mail(mail.id).message_id == mail.message_id
    assert len(harness.server.delivered) == 1


def test_a_slow_send_whose_outcome_comes_first_wins_and_the_sync_finds_nothing():
    harness = Harness(ScriptedServer())
    mail = died_mid_send(harness)
    harness.clock.advance(seconds=HOLD.total_seconds() + 1)
    sent = ended(mail, MailStatus.SENT, reply="250 2.0.0 Ok")
    completions = Completions(harness.storage, harness.events, harness.dead_letters)
    assert completions.record([(Outcome(sent), DIRECT_HOLD)]) == [True]
    completions.flush()
    report = harness.sync()
    assert report.unknown == [] and harness.mail(mail.id).status == MailStatus.SENT
    assert announced(harness) == [(MAIL_SENT, "sent")]


def test_a_takeover_that_comes_first_wins_and_the_slow_sends_outcome_is_neither_written_nor_announced():
    harness = Harness(ScriptedServer())

    def hold_runs_out_and_the_sync_takes_over() -> None:
        harness.clock.advance(seconds=HOLD.total_seconds() + 1)
        assert len(harness.sync().unknown) == 1  # while this send is still on the wire

    mail = direct_send(harness, during=hold_runs_out_and_the_sync_takes_over)
    assert mail.status == MailStatus.SENT  # what this send saw; its write lost
    assert harness.mail(mail.id).status == MailStatus.UNKNOWN
    assert announced(harness) == [(MAIL_FAILED, "unknown")]


def test_a_late_outcome_between_the_syncs_claim_and_its_record_loses_to_the_claim():
    harness = Harness(ScriptedServer())
    mail = died_mid_send(harness)
    harness.clock.advance(seconds=HOLD.total_seconds() + 1)
    taken = claim(harness.storage, mail.id, now=harness.clock())
    assert taken is not None
    completions = Completions(harness.storage, harness.events, harness.dead_letters)
    sent = ended(mail, MailStatus.SENT, reply="250 ok")
    assert completions.record([(Outcome(sent), DIRECT_HOLD)]) == [False]
    unknown = ended(taken[0], MailStatus.UNKNOWN, error="died")
    assert completions.record([(Outcome(unknown), owner_guard(taken[1]))]) == [True]
    completions.flush()
    assert announced(harness) == [(MAIL_FAILED, "unknown")]


def test_a_late_outcome_and_the_sync_at_the_same_moment_write_and_announce_exactly_one():
    harness = Harness(ScriptedServer())
    mails = [died_mid_send(harness, f"m{n}") for n in range(RACE_MAILS)]
    harness.clock.advance(seconds=HOLD.total_seconds() + 1)
    completions = Completions(harness.storage, harness.events, harness.dead_letters)
    sent = [(Outcome(ended(mail, MailStatus.SENT, reply="250 ok")), DIRECT_HOLD) for mail in mails]
    written: list[bool] = []

    def late_outcomes() -> None:
        # One write each, from the last mail on and spread over the sync's run (which claims from
        # the first on), so the two meet somewhere; the assertions hold wherever that is.
        for one in reversed(sent):
            written.append(completions.record([one])[0])
            time.sleep(0.002)
        written.reverse()

    race(late_outcomes, harness.sync)
    completions.flush()
    statuses = [harness.mail(mail.id).status for mail in mails]
    won = sum(written)
    print(f"late outcome vs sync: {RACE_MAILS} mails, the outcome won {won}, the sync {RACE_MAILS - won}")
    assert set(statuses) <= {MailStatus.SENT, MailStatus.UNKNOWN}
    assert written == [status == MailStatus.SENT for status in statuses]
    per_mail = sorted(event.mail_id for event in harness.events.events)
    assert per_mail == sorted(mail.id for mail in mails)  # one completion each, from the winner
    for event in harness.events.events:
        assert event.extra["status"] == harness.mail(event.mail_id).status.value


def test_a_dead_send_is_recorded_unknown_even_when_the_account_is_at_its_limit():
    """The sync gives its claims back when the account is at its provider's limit and it has no
    time to wait: a mail taken over from a sender that died is recorded, never queued again."""
    harness = Harness(ScriptedServer(), max_messages_per_minute=1)
    first, second = harness.queue(), harness.queue()
    dead = died_mid_send(harness, "dead")
    harness.clock.advance(minutes=2)
    outbox = harness.outbox()
    outbox.limiter = AccountLimiter(MemoryLimitCounters(), clock=lambda: 1_800_000_000.0)
    outbox.seconds_left = lambda: 5.0
    with outbox:
        report = outbox.send([first.id, second.id, dead.id])
    assert [mail.id for mail in report.sent] == [first.id] and report.released == [second.id]
    assert [mail.id for mail in report.unknown] == [dead.id]
    assert harness.mail(dead.id).status == MailStatus.UNKNOWN and len(harness.server.delivered) == 1
