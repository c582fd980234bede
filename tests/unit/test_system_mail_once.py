"""System mail is sent at most once per delivery of its request (an SQS message, an EventBridge
event, a Lambda invocation), also when the function died mid-send and its trigger retries after
Powertools' in-progress record expired (services/system.py, send_once): attempt n of a delivery
has a mail id derived from (delivery, n), so a retry reads what the attempts before it stored.
A mail with a one-time code or link is sent again after a death instead (a second copy is
harmless, a lost one locks the user out); a failed attempt is always tried again.

Real DirectSend on memory storage and a scripted SMTP server (tests/unit/test_idempotent_send.py)."""

from __future__ import annotations

from collections import Counter

import pytest
from mailcore.errors import DeliveryUnknown
from mailcore.models import Mail, MailStatus
from mailcore.services.send import MailSendFailed
from mailcore.services.system import send_once
from mailcore.storage import MailQuery

from tests.unit.test_deferred_delivery import REFUSED, Harness, ScriptedServer
from tests.unit.test_idempotent_send import Killed, keyed_send

DELIVERY = "sqs:message-1"


def deliver(harness: Harness, *, carries_a_code: bool = False, during=None) -> Mail:
    return send_once(
        DELIVERY, "notification", carries_a_code, lambda once: keyed_send(harness, once, during=during)
    )


def died_on_the_wire(harness: Harness, **options) -> None:
    def die() -> None:
        raise Killed

    with pytest.raises(Killed):
        deliver(harness, during=die, **options)


def stored(harness: Harness) -> list[Mail]:
    return harness.storage.mail.list_team("t", MailQuery(), after=None, limit=10)[0]


def by_status(harness: Harness) -> dict[MailStatus, int]:
    return dict(Counter(mail.status for mail in stored(harness)))


def connection_dropped_after_the_message(harness: Harness) -> None:
    harness.server.failures.append(DeliveryUnknown("the connection dropped after DATA"))
    with pytest.raises(MailSendFailed):  # raised: SQS or Lambda tries the delivery again
        deliver(harness)


@pytest.mark.parametrize(
    ("first_attempt", "left"),
    [(died_on_the_wire, MailStatus.SENDING), (connection_dropped_after_the_message, MailStatus.UNKNOWN)],
)
def test_a_notification_retried_after_an_attempt_that_may_have_been_delivered_is_not_sent_again(
    first_attempt, left
):
    harness = Harness(ScriptedServer())
    first_attempt(harness)
    answer = deliver(harness)
    (first,) = stored(harness)
    assert answer.id == first.id and answer.status == left
    assert harness.server.delivered == []


def test_a_mail_with_a_code_retried_after_its_function_died_is_sent_again_once():
    harness = Harness(ScriptedServer())
    died_on_the_wire(harness, carries_a_code=True)
    answer = deliver(harness, carries_a_code=True)
    assert by_status(harness) == {MailStatus.SENDING: 1, MailStatus.SENT: 1}
    assert answer.status == MailStatus.SENT and len(harness.server.delivered) == 1
    # A retry after that finds the sent one: the code goes out twice at most, not once per retry.
    assert deliver(harness, carries_a_code=True).id == answer.id and len(harness.server.delivered) == 1


def test_a_delivery_retried_after_a_failed_attempt_sends_once():
    harness = Harness(ScriptedServer(REFUSED))
    with pytest.raises(MailSendFailed):
        deliver(harness)
    answer = deliver(harness)
    assert by_status(harness) == {MailStatus.FAILED: 1, MailStatus.SENT: 1}
    assert answer.status == MailStatus.SENT and len(harness.server.delivered) == 1


def test_a_delivery_retried_after_its_mail_was_sent_answers_it_and_sends_nothing():
    harness = Harness(ScriptedServer())
    first = deliver(harness)
    assert deliver(harness).id == first.id and len(harness.server.delivered) == 1


def test_without_a_delivery_every_request_is_a_new_mail():
    harness = Harness(ScriptedServer())
    send = lambda once: keyed_send(harness, once)  # noqa: E731
    assert send_once(None, "notification", False, send).id != send_once(None, "notification", False, send).id
    assert len(harness.server.delivered) == 2
