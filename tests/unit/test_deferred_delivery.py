"""Temporary failures over hours: the retry policy, deferred mail in the outbox, scheduled mail.

The outbox runs on the in-memory storage with a clock the test moves and an SMTP session that
answers a script (a 4xx for a while, then 250); the real-server version is in
tests/integration/test_deferred_delivery.py.
"""

from __future__ import annotations

import random
import ssl
import statistics
import threading
from datetime import UTC, datetime, timedelta

import pytest
from mailcore.errors import Conflict, DeliveryUnknown, InvalidInput, MailServerError
from mailcore.models import Mail, MailStatus, SendRequest
from mailcore.protocols.smtp import SmtpDelivery
from mailcore.services import outbox as outbox_module
from mailcore.services.outbox import claim, queue_mail
from mailcore.services.retry import DEFERRAL_STEPS, HOURLY, RetryPolicy
from mailcore.teams import ResolvedAccount

from tests.fakes import MemoryDeadLetters, MemoryPublisher, memory_storage
from tests.support import Clock, mail_account, outgoing_mail

START = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
BUSY = MailServerError("the server said 451", reply_code=451, reply="4.7.1 Try again later", temporary=True)
REFUSED = MailServerError("the server said 550", reply_code=550, reply="5.1.1 User unknown")


class ScriptedServer:
    """Answers each message with the next scripted failure, then accepts; counts deliveries."""

    def __init__(self, *failures: MailServerError) -> None:
        self.failures = list(failures)
        self.delivered: list[bytes] = []
        self.lock = threading.Lock()

    def send(self, raw: bytes, recipients: list[str]) -> SmtpDelivery:
        with self.lock:
            if self.failures:
                raise self.failures.pop(0)
            self.delivered.append(raw)
        return SmtpDelivery(reply="250 2.0.0 Ok: queued")

    def close(self) -> None:
        pass


class Harness:
    """The outbox of one account against a ScriptedServer, on memory storage and a test clock."""

    def __init__(self, server: ScriptedServer, **account_changes) -> None:
        self.storage = memory_storage()
        self.clock = Clock(START)
        self.server = server
        self.events = MemoryPublisher()
        self.dead_letters = MemoryDeadLetters()
        self.target = ResolvedAccount("t", "desk", mail_account(**account_changes))

    def queue(self, **options) -> Mail:
        request = SendRequest(to="x@example.test", body_text="hello")
        return queue_mail(self.target, request, storage=self.storage, now=self.clock(), **options)

    def outbox(self) -> outbox_module.Outbox:
        harness = self

        class Scripted(outbox_module.Outbox):
            def _config(self, mail):
                return harness.target.config

            def _session(self, mail, config):
                return harness.server

        return Scripted(
            storage=self.storage,
            directory=None,
            events=self.events,
            dead_letters=self.dead_letters,
            tls_context=ssl.create_default_context(),
            clock=self.clock,
            sleep=lambda _: None,
            policy=RetryPolicy(uniform=lambda low, high: low),
        )

    def sync(self) -> outbox_module.OutboxReport:
        with self.outbox() as outbox:
            return outbox.sync(self.target)

    def mail(self, mail_id: str) -> Mail:
        found = self.storage.mail.get(mail_id)
        assert found is not None
        return found


# ----------------------------------------------------------------------------- the policy


def stored(created: datetime = START, **fields) -> Mail:
    return outgoing_mail(created_at=created, **fields)


def test_the_pause_grows_1_5_15_30_minutes_then_hourly_with_jitter_below_two_hours():
    policy = RetryPolicy(uniform=lambda low, high: low)
    assert [policy.pause(n) for n in range(1, 5)] == list(DEFERRAL_STEPS)
    late = RetryPolicy().pause(9)
    assert HOURLY[0] <= late <= HOURLY[1]


def test_jitter_spreads_mails_deferred_together():
    pauses = {RetryPolicy().pause(2) for _ in range(20)}
    assert len(pauses) > 1 and all(timedelta(minutes=5) <= p <= timedelta(minutes=6) for p in pauses)


def test_a_mail_past_its_default_two_days_gets_no_next_attempt():
    policy = RetryPolicy(uniform=lambda low, high: low)
    assert policy.next_attempt(stored(), START + timedelta(hours=47), None) is not None
    assert policy.next_attempt(stored(), START + timedelta(hours=48), None) is None


def test_the_accounts_max_age_and_the_mails_own_limit_replace_the_default():
    policy = RetryPolicy(uniform=lambda low, high: low)
    assert policy.next_attempt(stored(), START + timedelta(hours=3), timedelta(hours=3)) is None
    own = stored(retry_until=START + timedelta(days=4))
    assert policy.next_attempt(own, START + timedelta(days=3), timedelta(hours=3)) is not None


# ----------------------------------------------------------------------------- deferred mail


def test_a_4xx_after_the_runs_own_retries_defers_the_mail_with_its_next_attempt_and_log():
    harness = Harness(ScriptedServer(BUSY, BUSY, BUSY))
    mail = harness.queue()
    report = harness.sync()
    item = harness.mail(mail.id)
    assert [m.id for m in report.deferred] == [mail.id]
    assert item.status == MailStatus.DEFERRED and item.attempts == 3
    assert item.next_attempt_at == START + timedelta(minutes=1)
    assert [entry["reply"] for entry in item.attempt_log] == ["451 4.7.1 Try again later"] * 3
    assert item.attempt_log[0]["recipients"] == ["x@example.test"]
    assert [event.detail_type for event in harness.events.events] == ["MailDeferred"]
    assert harness.dead_letters.bodies == []


def test_a_deferred_mail_is_left_alone_until_its_next_attempt_is_due():
    harness = Harness(ScriptedServer(BUSY, BUSY, BUSY))
    mail = harness.queue()
    harness.sync()
    harness.clock.advance(seconds=59)
    assert harness.sync().public()["skipped"] == [] and harness.server.delivered == []
    assert claim(harness.storage, mail.id, now=harness.clock()) is None


def test_a_deferred_mail_is_sent_exactly_once_when_due_with_every_attempt_recorded():
    harness = Harness(ScriptedServer(BUSY, BUSY, BUSY))
    mail = harness.queue()
    harness.sync()
    harness.clock.advance(minutes=1, seconds=1)
    report = harness.sync()
    harness.clock.advance(hours=3)
    harness.sync()
    item = harness.mail(mail.id)
    assert [m.id for m in report.sent] == [mail.id] and len(harness.server.delivered) == 1
    assert item.status == MailStatus.SENT and item.attempts == 4 and item.next_attempt_at is None
    assert [entry["outcome"] for entry in item.attempt_log] == ["failed"] * 3 + ["sent"]
    assert harness.storage.mail.due("t", "desk", "9999") == []


def test_the_schedule_grows_across_deferrals():
    harness = Harness(ScriptedServer(*[BUSY] * 12))
    mail = harness.queue()
    waits = []
    for _ in range(4):
        harness.sync()
        item = harness.mail(mail.id)
        assert item.next_attempt_at is not None
        waits.append(item.next_attempt_at - harness.clock())
        harness.clock.now = item.next_attempt_at
    assert waits == list(DEFERRAL_STEPS)


def test_a_mail_still_refused_at_its_max_age_fails_with_the_last_reply_and_is_dead_lettered():
    harness = Harness(ScriptedServer(*[BUSY] * 1000), retry_max_age_hours=1)
    mail = harness.queue()
    for _ in range(20):
        harness.sync()
        item = harness.mail(mail.id)
        if item.status != MailStatus.DEFERRED:
            break
        assert item.next_attempt_at is not None
        harness.clock.now = item.next_attempt_at
    assert item.status == MailStatus.FAILED and item.reply == "451 4.7.1 Try again later"
    assert harness.clock() <= START + timedelta(hours=1)
    assert [body["mail_id"] for body in harness.dead_letters.bodies] == [mail.id]
    assert harness.storage.mail.due("t", "desk", "9999") == []


def test_a_5xx_fails_at_once_without_deferral():
    harness = Harness(ScriptedServer(REFUSED))
    mail = harness.queue()
    harness.sync()
    item = harness.mail(mail.id)
    assert item.status == MailStatus.FAILED and item.attempts == 1 and item.next_attempt_at is None


def test_the_requests_max_age_is_kept_on_the_mail():
    harness = Harness(ScriptedServer(*[BUSY] * 6))
    mail = harness.queue(retry_max_age=timedelta(minutes=3))
    harness.sync()
    harness.clock.advance(minutes=2)
    harness.sync()
    assert harness.mail(mail.id).status == MailStatus.FAILED


def test_two_runs_on_one_due_deferred_mail_send_it_once():
    harness = Harness(ScriptedServer(BUSY, BUSY, BUSY))
    mail = harness.queue()
    harness.sync()
    harness.clock.advance(minutes=2)
    # Both runs read it from the Waiting index as due; the first claims it and is still trying.
    assert [m.id for m in harness.storage.mail.due("t", "desk", "9999")] == [mail.id]
    assert claim(harness.storage, mail.id, now=harness.clock()) is not None
    with harness.outbox() as second:
        report = second.send([mail.id])
    assert report.skipped == [mail.id] and harness.server.delivered == []
    # While claimed, it is not due: later syncs do not even read it until the lease is over.
    assert harness.storage.mail.due("t", "desk", harness.clock().isoformat()) == []


def test_a_deferred_mail_whose_sender_died_mid_attempt_is_taken_over_after_the_lease():
    harness = Harness(ScriptedServer(BUSY, BUSY, BUSY))
    mail = harness.queue()
    harness.sync()
    harness.clock.advance(minutes=2)
    assert claim(harness.storage, mail.id, now=harness.clock()) is not None  # then the process dies
    harness.sync()
    assert harness.server.delivered == [] and harness.mail(mail.id).status == MailStatus.SENDING
    harness.clock.advance(minutes=16)
    report = harness.sync()
    assert [m.id for m in report.sent] == [mail.id] and len(harness.server.delivered) == 1


def test_an_unknown_fate_is_never_deferred():
    harness = Harness(ScriptedServer(DeliveryUnknown("the connection dropped after DATA")))
    mail = harness.queue()
    harness.sync()
    harness.clock.advance(days=1)
    harness.sync()
    assert harness.mail(mail.id).status == MailStatus.UNKNOWN and harness.server.delivered == []


# ----------------------------------------------------------------------------- scheduled mail


def test_a_scheduled_mail_waits_for_its_send_at():
    harness = Harness(ScriptedServer())
    mail = harness.queue(send_at=START + timedelta(hours=2))
    assert claim(harness.storage, mail.id, now=START) is None  # the push of its INSERT
    harness.clock.advance(hours=1, minutes=59)
    harness.sync()
    assert harness.server.delivered == []
    harness.clock.advance(minutes=1)
    assert [m.id for m in harness.sync().sent] == [mail.id]
    harness.sync()
    assert len(harness.server.delivered) == 1


def test_a_send_at_in_the_past_means_now():
    harness = Harness(ScriptedServer())
    mail = harness.queue(send_at=START - timedelta(days=1))
    assert mail.send_at is None
    assert [m.id for m in harness.sync().sent] == [mail.id]


def test_a_send_at_beyond_the_limit_is_refused_naming_the_field():
    harness = Harness(ScriptedServer())
    with pytest.raises(InvalidInput) as refused:
        harness.queue(send_at=START + outbox_module.SEND_AT_LIMIT + timedelta(minutes=1))
    assert refused.value.field == "send_at"


def test_a_send_at_without_an_offset_is_utc():
    harness = Harness(ScriptedServer())
    mail = harness.queue(send_at=datetime(2026, 11, 24, 14, 0))
    assert mail.send_at == START + timedelta(hours=2)


# ----------------------------------------------------------------------------- cancel and retry


def test_a_queued_or_deferred_mail_can_be_cancelled_and_is_never_sent():
    harness = Harness(ScriptedServer(BUSY, BUSY, BUSY))
    queued, deferred = harness.queue(), harness.queue(send_at=START + timedelta(minutes=5))
    harness.sync()
    outbox_module.cancel(harness.storage, harness.mail(queued.id))  # deferred by the sync
    outbox_module.cancel(harness.storage, harness.mail(deferred.id))  # scheduled, queued
    harness.clock.advance(days=1)
    harness.sync()
    assert {harness.mail(m.id).status for m in (queued, deferred)} == {MailStatus.CANCELLED}
    assert harness.server.delivered == [] and harness.storage.mail.due("t", "desk", "9999") == []


@pytest.mark.parametrize("status", [MailStatus.SENDING, MailStatus.SENT, MailStatus.FAILED])
def test_cancelling_a_mail_in_another_status_is_a_conflict_naming_it(status):
    harness = Harness(ScriptedServer())
    mail = harness.queue()
    harness.storage.mail.replace(mail.model_copy(update={"status": status}))
    with pytest.raises(Conflict) as refused:
        outbox_module.cancel(harness.storage, mail)
    assert status.value in refused.value.message and harness.mail(mail.id).status == status


def test_a_failed_mail_retried_is_sent_again_with_the_same_message_id():
    harness = Harness(ScriptedServer(REFUSED))
    mail = harness.queue()
    harness.sync()
    assert harness.mail(mail.id).status == MailStatus.FAILED
    outbox_module.retry(harness.storage, harness.mail(mail.id))
    harness.sync()
    item = harness.mail(mail.id)
    assert item.status == MailStatus.SENT and item.attempts == 2 and item.message_id == mail.message_id
    assert mail.message_id.encode() in harness.server.delivered[0]


@pytest.mark.parametrize(
    ("status", "may_be_delivered"), [(MailStatus.UNKNOWN, True), (MailStatus.FAILED, False)]
)
def test_a_retry_answers_whether_the_first_attempt_may_have_been_delivered(status, may_be_delivered):
    harness = Harness(ScriptedServer())
    mail = harness.queue()
    harness.storage.mail.replace(mail.model_copy(update={"status": status}))
    retried = outbox_module.retry(harness.storage, harness.mail(mail.id))
    assert retried.first_may_be_delivered is may_be_delivered
    assert retried.mail.status == MailStatus.QUEUED == harness.mail(mail.id).status


@pytest.mark.parametrize(
    "status", [MailStatus.QUEUED, MailStatus.DEFERRED, MailStatus.SENDING, MailStatus.SENT]
)
def test_retrying_a_mail_that_is_not_failed_or_unknown_is_a_conflict(status):
    harness = Harness(ScriptedServer())
    mail = harness.queue()
    harness.storage.mail.replace(mail.model_copy(update={"status": status}))
    with pytest.raises(Conflict):
        outbox_module.retry(harness.storage, mail)


# ----------------------------------------------------------------------------- races, counted

RACE_MAILS = 50


def race(*actions) -> None:
    """Runs the actions at the same moment on their own threads."""
    start = threading.Barrier(len(actions))

    def run(action) -> None:
        start.wait()
        action()

    threads = [threading.Thread(target=run, args=(action,)) for action in actions]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def counts(harness: Harness, mails: list[Mail]) -> tuple[int, int, int]:
    """(sent, duplicated, lost): lost is a mail neither delivered nor cancelled nor waiting."""
    delivered = [raw for raw in harness.server.delivered]
    ids = [mail.message_id for mail in mails]
    per_mail = {mid: sum(1 for raw in delivered if mid.encode() in raw) for mid in ids}
    sent = sum(1 for n in per_mail.values() if n)
    duplicated = sum(n - 1 for n in per_mail.values() if n > 1)
    statuses = {mail.id: harness.mail(mail.id).status for mail in mails}
    lost = sum(
        1
        for mail in mails
        if not per_mail[mail.message_id]
        and statuses[mail.id] not in (MailStatus.CANCELLED, MailStatus.DEFERRED)
    )
    return sent, duplicated, lost


def test_a_cancel_and_a_run_at_the_same_moment_end_either_sent_or_cancelled_never_both():
    harness = Harness(ScriptedServer())
    mails = [harness.queue() for _ in range(RACE_MAILS)]
    cancelled: list[str] = []
    with harness.outbox() as outbox:
        for mail in mails:  # one race per mail: a cancel and a run started together

            def cancel_one(mail: Mail = mail) -> None:
                try:
                    outbox_module.cancel(harness.storage, mail)
                    cancelled.append(mail.id)
                except Conflict:
                    pass

            race(cancel_one, lambda mail=mail: outbox.send([mail.id]))
    sent, duplicated, lost = counts(harness, mails)
    print(
        f"cancel vs run: {RACE_MAILS} mails, sent {sent}, cancelled {len(cancelled)}, duplicated {duplicated}, lost {lost}"
    )
    assert sent + len(cancelled) == RACE_MAILS and (duplicated, lost) == (0, 0)
    assert all(harness.mail(mail_id).status == MailStatus.CANCELLED for mail_id in cancelled)


def test_two_runs_picking_the_same_deferred_mails_send_each_once():
    harness = Harness(ScriptedServer(*[BUSY] * (3 * RACE_MAILS)))
    mails = [harness.queue() for _ in range(RACE_MAILS)]
    harness.sync()
    assert {harness.mail(m.id).status for m in mails} == {MailStatus.DEFERRED}
    harness.clock.advance(minutes=2)
    due = [mail.id for mail in harness.storage.mail.due("t", "desk", harness.clock().isoformat())]

    def run() -> None:
        with harness.outbox() as outbox:
            outbox.send(due)

    race(run, run)
    sent, duplicated, lost = counts(harness, mails)
    print(f"two runs on deferred mail: {RACE_MAILS} mails, sent {sent}, duplicated {duplicated}, lost {lost}")
    assert (sent, duplicated, lost) == (RACE_MAILS, 0, 0)


def test_a_run_killed_between_the_attempt_and_its_result_write_never_sends_twice():
    """The process dies after the server took each mail and before its outcome was written.
    The claims' leases run out and the next sync takes the mails over: each carries the mark
    of an attempt begun, so it is recorded `unknown` (a person decides), not sent again."""
    harness = Harness(ScriptedServer())
    mails = [harness.queue() for _ in range(RACE_MAILS)]

    class Killed(Exception):
        pass

    dying = harness.outbox()

    def killed(outcomes) -> None:
        raise Killed

    dying.completions.record = killed  # type: ignore[method-assign]
    dying.send([mail.id for mail in mails])
    dying._pool.shutdown(wait=True)
    assert {harness.mail(m.id).status for m in mails} == {MailStatus.SENDING}
    harness.clock.advance(minutes=16)
    report = harness.sync()
    sent, duplicated, lost = counts(harness, mails)
    print(
        f"killed before the result write: {RACE_MAILS} mails, sent {sent}, duplicated {duplicated}, lost {lost}"
    )
    assert (sent, duplicated, lost) == (RACE_MAILS, 0, 0)
    assert len(report.unknown) == RACE_MAILS
    assert all("may have been delivered" in (harness.mail(m.id).error or "") for m in mails)


def test_a_mail_whose_attempt_cannot_be_marked_is_not_sent_and_stays_claimed():
    harness = Harness(ScriptedServer())
    mail = harness.queue()
    transition = harness.storage.mail.transition

    def unmarkable(mail_id, guard, *, assign, remove=()):
        if "attempt_started_at" in assign:
            raise ConnectionError("DynamoDB is unavailable")
        return transition(mail_id, guard, assign=assign, remove=remove)

    harness.storage.mail.transition = unmarkable  # type: ignore[method-assign]
    report = harness.sync()
    assert mail.id in report.errors and harness.server.delivered == []
    assert harness.mail(mail.id).status == MailStatus.SENDING


def test_a_run_killed_before_its_attempt_leaves_the_mail_to_be_sent_once_after_the_lease():
    harness = Harness(ScriptedServer())
    mail = harness.queue()
    assert claim(harness.storage, mail.id, now=harness.clock()) is not None  # then it dies
    harness.clock.advance(minutes=16)
    harness.sync()
    assert harness.mail(mail.id).status == MailStatus.SENT and len(harness.server.delivered) == 1


def test_50_scheduled_mails_go_out_within_a_minute_of_their_send_at_with_a_sync_each_minute():
    """The schedule runs every minute (template.yaml); on the test clock, the delay of each
    mail is when the first sync at or after its send_at sent it."""
    rng = random.Random(13)
    harness = Harness(ScriptedServer())
    send_ats = [START + timedelta(seconds=rng.uniform(1, 3600)) for _ in range(RACE_MAILS)]
    mails = [harness.queue(send_at=send_at) for send_at in send_ats]
    for _ in range(62):
        harness.clock.advance(minutes=1)
        harness.sync()
    delays = []
    for mail, send_at in zip(mails, send_ats, strict=True):
        item = harness.mail(mail.id)
        (entry,) = item.attempt_log
        delays.append((datetime.fromisoformat(entry["time"]) - send_at).total_seconds())
    print(
        f"scheduled: {len(delays)} mails, delay after send_at median {statistics.median(delays):.1f} s, worst {max(delays):.1f} s"
    )
    assert len(harness.server.delivered) == RACE_MAILS and min(delays) >= 0 and max(delays) < 60
