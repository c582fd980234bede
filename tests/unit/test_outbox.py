"""The outbox's transitions on the in-memory storage: who may claim, who may finish."""

from datetime import UTC, datetime, timedelta

import pytest
from mailcore.models import Direction, Mail, MailStatus
from mailcore.services.delivery import Completions, Outcome, ended
from mailcore.services.outbox import LEASE, claim, owner_guard
from mailcore.services.send import reply_subject

from tests.fakes import memory_storage
from tests.support import Clock, mail_account

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


def finish(storage, mail, owner) -> bool:
    """Records the outcome of a claimed mail as a run does; False when the claim was superseded."""
    (recorded,) = Completions(storage, events=None, dead_letters=None).record(
        [(Outcome(mail), owner_guard(owner))]
    )
    return recorded


def stored_mail(storage, status=MailStatus.QUEUED, mail_id="m1"):
    mail = Mail(
        id=mail_id,
        team="t",
        account="a",
        direction=Direction.OUT,
        status=status,
        to=["x@example.test"],
        created_at=NOW,
    )
    storage.mail.put_new(mail)
    return mail


def test_only_the_first_of_two_claims_gets_a_queued_mail(storage):
    stored_mail(storage)
    assert claim(storage, "m1", now=NOW) is not None
    assert claim(storage, "m1", now=NOW) is None


def test_a_claim_whose_lease_ran_out_can_be_taken_over(storage):
    stored_mail(storage)
    claim(storage, "m1", now=NOW)
    assert claim(storage, "m1", now=NOW + LEASE - timedelta(seconds=1)) is None
    assert claim(storage, "m1", now=NOW + LEASE + timedelta(seconds=1)) is not None


def test_a_superseded_claim_cannot_record_its_outcome(storage):
    stored_mail(storage)
    mail, stale = claim(storage, "m1", now=NOW)
    _, current = claim(storage, "m1", now=NOW + LEASE + timedelta(seconds=1))
    sent = mail.model_copy(update={"status": MailStatus.SENT})
    assert not finish(storage, sent, stale)
    assert finish(storage, sent, current)
    assert storage.mail.get("m1").status == MailStatus.SENT


def test_a_superseded_claim_neither_announces_nor_dead_letters_the_outcome_it_could_not_record():
    from tests.fakes import MemoryDeadLetters, MemoryPublisher

    storage, events, dead_letters = memory_storage(), MemoryPublisher(), MemoryDeadLetters()
    stored_mail(storage)
    mail, stale = claim(storage, "m1", now=NOW)
    claim(storage, "m1", now=NOW + LEASE + timedelta(seconds=1))
    failed = ended(mail, MailStatus.FAILED, error="421 still busy")
    completions = Completions(storage, events, dead_letters)
    assert completions.record([(Outcome(failed, dead_letter=True), owner_guard(stale))]) == [False]
    completions.flush()
    assert events.events == [] and dead_letters.bodies == []
    assert storage.mail.get("m1").status == MailStatus.SENDING  # the newer claim's to finish


def test_a_mail_sent_through_the_direct_api_is_never_claimed(storage):
    stored_mail(storage, status=MailStatus.SENDING)
    assert claim(storage, "m1", now=NOW + timedelta(days=1)) is None


def test_a_finished_mail_leaves_the_outbox_and_is_never_claimed_again(storage):
    stored_mail(storage)
    mail, owner = claim(storage, "m1", now=NOW)
    assert [queued.id for queued in storage.mail.outbox("t", "a")] == ["m1"]  # claimed, not finished
    finish(storage, mail.model_copy(update={"status": MailStatus.FAILED, "error": "550"}), owner)
    assert storage.mail.outbox("t", "a") == []
    assert claim(storage, "m1", now=NOW + LEASE * 2) is None


@pytest.mark.parametrize(
    ("subject", "expected"),
    [
        ("Offer", "Re: Offer"),
        ("Re: Offer", "Re: Offer"),
        ("RE: Offer", "RE: Offer"),
        ("re:Offer", "re:Offer"),
        ("Aw: Angebot", "Aw: Angebot"),
        ("Re[2]: Offer", "Re[2]: Offer"),
        ("Regarding the offer", "Re: Regarding the offer"),
        ("", "Re:"),
    ],
)
def test_a_reply_subject_gets_re_once(subject, expected):
    assert reply_subject(subject) == expected


def test_a_storage_failure_is_reported_per_mail_and_stops_no_other(storage):
    import ssl

    from mailcore.services.outbox import Outbox

    from tests.fakes import MemoryDeadLetters, MemoryPublisher

    stored_mail(storage, mail_id="m1")
    stored_mail(storage, mail_id="m2")

    def unavailable(*args, **kwargs):
        raise ConnectionError("DynamoDB is unavailable")

    storage.mail.transition = unavailable  # type: ignore[method-assign]
    outbox = Outbox(
        storage=storage,
        directory=None,
        events=MemoryPublisher(),
        dead_letters=MemoryDeadLetters(),
        tls_context=ssl.create_default_context(),
    )
    with outbox:
        report = outbox.send(["m1", "m2"])
    assert set(report.errors) == {"m1", "m2"} and "unavailable" in report.errors["m1"]
    assert report.sent == report.failed == []


# ----------------------------------------------------------------------------- provider limits


class _PacedOutbox:
    """An outbox whose SMTP delivery always succeeds: what is tested is the pacing around it."""

    @staticmethod
    def make(storage, *, per_minute, seconds_left, clock):
        from mailcore.limits import AccountLimiter
        from mailcore.protocols.tls import client_tls_context
        from mailcore.services import outbox as outbox_module

        from tests.fakes import MemoryDeadLetters, MemoryLimitCounters, MemoryPublisher

        account = mail_account(max_messages_per_minute=per_minute)

        class Paced(outbox_module.Outbox):
            def _config(self, mail):
                return account

            def _materialise(self, claimed):
                return b"raw"

            def _deliver(self, claimed):
                self.delivered.append(claimed.mail.id)
                return Outcome(ended(claimed.mail, MailStatus.SENT, reply="250 ok"))

        outbox = Paced(
            storage=storage,
            directory=None,
            events=MemoryPublisher(),
            dead_letters=MemoryDeadLetters(),
            tls_context=client_tls_context(),
            limiter=AccountLimiter(MemoryLimitCounters(), clock=clock),
            seconds_left=seconds_left,
            sleep=clock.sleep,
        )
        outbox.delivered = []
        return outbox


def five_mails_at_two_a_minute(storage, *, seconds_left: float):
    """Five stored mails through an outbox of an account allowed two a minute; answers its report
    and its clock."""
    for n in range(5):
        stored_mail(storage, mail_id=f"m{n}")
    clock = Clock(1_800_000_000.0)  # the start of a minute
    with _PacedOutbox.make(storage, per_minute=2, seconds_left=lambda: seconds_left, clock=clock) as outbox:
        return outbox.send([f"m{n}" for n in range(5)]), clock


def test_the_outbox_waits_for_the_next_minute_when_the_account_is_at_its_limit(storage):
    report, clock = five_mails_at_two_a_minute(storage, seconds_left=300.0)
    assert len(report.sent) == 5 and report.released == []
    assert len(clock.slept) == 2  # two minute boundaries for five mails at two a minute


def test_without_time_to_wait_the_outbox_gives_the_rest_back_queued(storage):
    report, clock = five_mails_at_two_a_minute(storage, seconds_left=20.0)
    assert [mail.id for mail in report.sent] == ["m0", "m1"]
    assert report.released == ["m2", "m3", "m4"]
    assert {storage.mail.get(f"m{n}").status for n in range(2, 5)} == {MailStatus.QUEUED}
    assert clock.slept == []
    # Given back, they are the next run's to claim.
    assert claim(storage, "m2", now=NOW) is not None


class Unreachable:
    """A bus or a dead-letter queue whose every call fails (the network is down)."""

    def publish(self, events) -> None:
        raise ConnectionError("events unreachable")

    def put(self, body) -> None:
        raise ConnectionError("queue unreachable")


def test_a_written_outcome_stands_when_its_event_and_dead_letter_cannot_be_put(storage):
    stored_mail(storage)
    stored_mail(storage, mail_id="m2")
    outcomes = []
    for mail_id in ("m1", "m2"):
        mail, owner = claim(storage, mail_id, now=NOW)
        failed = ended(mail, MailStatus.FAILED, error="421 still busy")
        outcomes.append((Outcome(failed, dead_letter=True), owner_guard(owner)))
    completions = Completions(storage, Unreachable(), Unreachable())  # type: ignore[arg-type]
    assert completions.record(outcomes) == [True, True]
    completions.flush()
    assert {storage.mail.get(mail_id).status for mail_id in ("m1", "m2")} == {MailStatus.FAILED}


def test_an_outcome_without_a_reply_keeps_none_of_an_earlier_attempt(storage):
    stored_mail(storage)
    mail, owner = claim(storage, "m1", now=NOW)
    busy = ended(mail, MailStatus.DEFERRED, error="451 busy", reply="451 busy").model_copy(
        update={"next_attempt_at": NOW + timedelta(minutes=5)}
    )
    assert Completions(storage, None, None).record([(Outcome(busy), owner_guard(owner))]) == [True]
    retried = storage.mail.get("m1").model_copy(update={"status": MailStatus.QUEUED})
    storage.mail.replace(retried)
    mail, owner = claim(storage, "m1", now=NOW + timedelta(minutes=6))
    unknown = ended(mail, MailStatus.UNKNOWN, error="the run holding it stopped", reply=None)
    assert Completions(storage, None, None).record([(Outcome(unknown), owner_guard(owner))]) == [True]
    assert storage.mail.get("m1").reply is None
