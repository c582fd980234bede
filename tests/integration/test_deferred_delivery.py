"""Temporary failures over hours against the real Postfix: its recipient access map answers 450
for the mailbox for a while (the test changes it while running), then accepts. Time is the
service's clock (`mailcore.wiring.clock`), moved by the test: no sleeping for minutes."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from mailcore import wiring
from mailcore.models import MailStatus

from tests.integration.conftest import postfix_holds_no_mail
from tests.integration.test_outbox import (
    call,
    completion_of,
    queue,
    reaching,
    stored,
    sync,
    wait_for_messages,
)
from tests.stack import stack_storage
from tests.support import Clock

BUSY = "450 4.2.1 Mailbox busy, try again later"


@pytest.fixture
def clock(monkeypatch) -> Clock:
    moved = Clock(datetime.now(UTC))
    monkeypatch.setattr(wiring, "clock", moved)
    return moved


@pytest.fixture
def busy_team(stack, new_team) -> Iterator:
    """A team whose mailbox Postfix answers 450 at RCPT until the test says otherwise."""
    team = new_team()
    stack.mail_servers.answer_rcpt(team.mailbox.address, BUSY)
    yield team
    stack.mail_servers.answer_rcpt(team.mailbox.address, None)


def test_a_mailbox_answering_450_for_a_while_gets_the_mail_once_after_deferrals(stack, busy_team, clock):
    mail = queue(stack, busy_team, subject="Busy for a while")
    first = reaching(mail["id"], "deferred")  # pushed at once: three tries in the run, then deferred
    assert first.next_attempt_at is not None and first.attempts == 3
    assert first.next_attempt_at - clock() >= timedelta(minutes=1)

    sync(stack, busy_team)  # not due yet: left alone
    assert stored(mail["id"]).attempts == 3

    clock.now = first.next_attempt_at
    sync(stack, busy_team)  # due, still busy: deferred again, further out
    second = reaching(mail["id"], "deferred")
    assert second.attempts == 6 and second.next_attempt_at - clock() >= timedelta(minutes=5)

    stack.mail_servers.answer_rcpt(busy_team.mailbox.address, None)
    clock.now = second.next_attempt_at
    sync(stack, busy_team)
    sent = reaching(mail["id"], "sent")
    wait_for_messages(stack, busy_team.mailbox.address, 1)
    assert sync(stack, busy_team)["sent"] == []  # this sync ran, and sent it not again
    postfix_holds_no_mail(stack)  # so a second copy it had taken would be in the mailbox by now
    delivered = stack.mail_servers.message_count(busy_team.mailbox.address)
    print(
        f"450 for two rounds: queued 1, delivered {delivered}, duplicated {delivered - 1}, attempts {sent.attempts}"
    )
    assert delivered == 1 and sent.attempts == 7 and sent.next_attempt_at is None
    assert [entry["reply"][:3] for entry in sent.attempt_log] == ["450"] * 6 + ["250"]
    assert all(entry["recipients"] == [busy_team.mailbox.address] for entry in sent.attempt_log)


def test_a_direct_send_meeting_a_450_answers_202_with_the_mail_deferred(stack, busy_team, clock):
    status, answer = call(
        stack,
        "POST",
        "/api/core/mail/send/{account}",
        team=busy_team,
        params={"account": busy_team.account},
        body={"to": busy_team.mailbox.address, "body_text": "now, or later"},
    )
    assert status == 202 and answer["mail"]["status"] == "deferred", answer
    assert answer["mail"]["attempt_log"][0]["reply"].startswith("450")
    stack.mail_servers.answer_rcpt(busy_team.mailbox.address, None)
    clock.advance(minutes=2)
    sync(stack, busy_team)
    assert reaching(answer["mail"]["id"], "sent").attempts == 2
    wait_for_messages(stack, busy_team.mailbox.address, 1)


def test_a_scheduled_mail_is_sent_by_the_first_sync_at_its_send_at(stack, new_team, clock):
    team = new_team()
    send_at = clock() + timedelta(hours=3)
    mail = queue(stack, team, send_at=send_at.isoformat())
    assert mail["status"] == "queued" and mail["send_at"] is not None
    clock.advance(hours=2, minutes=59)
    sync(stack, team)
    assert stored(mail["id"]).status == "queued"
    clock.now = send_at
    sync(stack, team)
    reaching(mail["id"], "sent")
    wait_for_messages(stack, team.mailbox.address, 1)


def test_a_send_at_too_far_ahead_is_refused_naming_the_field(stack, new_team, clock):
    team = new_team()
    body = {"account": team.account, "to": team.mailbox.address, "body_text": "x"}
    body["send_at"] = (clock() + timedelta(days=31)).isoformat()
    status, answer = call(stack, "POST", "/api/core/mail", team=team, body=body)
    assert status == 400 and "send_at" in str(answer), answer


def control(stack, team, mail_id: str, action: str):
    return call(
        stack,
        "POST",
        f"/api/core/mail/{{mail_id}}/{action}",
        team=team,
        params={"mail_id": mail_id},
    )


def test_a_deferred_mail_cancelled_through_the_api_is_never_sent(stack, busy_team, clock):
    mail = queue(stack, busy_team)
    reaching(mail["id"], "deferred")
    status, answer = control(stack, busy_team, mail["id"], "cancel")
    assert status == 200 and answer["mail"]["status"] == "cancelled", answer
    stack.mail_servers.answer_rcpt(busy_team.mailbox.address, None)
    clock.advance(hours=1)
    sync(stack, busy_team)
    assert stored(mail["id"]).status == "cancelled"
    postfix_holds_no_mail(stack)
    assert stack.mail_servers.message_count(busy_team.mailbox.address) == 0


def test_a_mail_cancelled_through_the_api_puts_mail_cancelled_on_the_bus(stack, new_team, bus_queue):
    team = new_team()
    mail = queue(stack, team, send_at=(datetime.now(UTC) + timedelta(days=1)).isoformat())
    status, answer = control(stack, team, mail["id"], "cancel")
    assert status == 200, answer
    event = completion_of(stack, bus_queue, mail["id"])
    assert event["detail-type"] == "MailCancelled" and event["detail"]["status"] == "cancelled"


def test_cancelling_a_sent_mail_is_a_409_naming_its_status(stack, new_team):
    team = new_team()
    mail = queue(stack, team)
    reaching(mail["id"], "sent")
    status, answer = control(stack, team, mail["id"], "cancel")
    assert status == 409 and "sent" in answer["error"]["message"], answer


def test_only_members_of_the_mails_team_may_cancel_or_retry_it(stack, new_team):
    team, stranger = new_team(), new_team()
    mail = queue(stack, team)
    for action in ("cancel", "retry"):
        status, answer = control(stack, stranger, mail["id"], action)
        assert status == 403, answer


def test_retrying_an_unknown_mail_sends_it_again_with_the_same_message_id_and_a_warning(stack, new_team):
    team = new_team()
    mail = queue(stack, team, to="nobody-here@example.test")
    failed = reaching(mail["id"], "failed")
    stack_storage().mail.replace(failed.model_copy(update={"status": MailStatus.UNKNOWN}))
    status, answer = control(stack, team, mail["id"], "retry")
    assert status == 202 and "may have been delivered" in answer["warning"], answer
    assert answer["mail"]["status"] == "queued" and answer["mail"]["message_id"] == failed.message_id
    reaching(mail["id"], "failed")  # pushed at once; the recipient is still unknown to Postfix
    status, answer = control(stack, team, mail["id"], "retry")
    assert status == 202 and "warning" not in answer
