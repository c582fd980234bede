"""A direct send with an Idempotency-Key whose function is killed mid-send, against the real
Postfix and moto and the local stack's execution environments: the caller's retry with the same
key finds the first run's mail and answers it (409 earlier_attempt) instead of sending a second
one (docs/delivery.md).

Until the killed invocation's deadline, Powertools' in-progress record holds the retry (409
idempotency_key_in_progress), in another execution environment too: the records are keyed on a
fixed prefix, not on the handler's module, which the local stack names per environment
(local/gateway.py, load_handler)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import mailcore.wiring
from aws_lambda_powertools.utilities.idempotency.persistence import dynamodb as powertools_dynamodb
from mailcore.models import MailStatus
from mailcore.storage import MailQuery

from tests.integration.conftest import read_mailbox, wait_for_messages
from tests.integration.fault_proxy import DATA_END, Fault
from tests.integration.test_outbox import call, proxied_team, proxy_to_postfix, send_with_key, settled, stored
from tests.integration.test_stuck_sending import killed_mail, killed_while_sending
from tests.stack import stack_storage

KEY = "order-4711"


def move_powertools_clock(monkeypatch, by: timedelta) -> None:
    """Moves the clock Powertools' DynamoDB layer asks whether an in-progress record expired."""

    class Moved(datetime):
        @classmethod
        def now(cls, tz=None):  # type: ignore[override]
            return datetime.now(tz) + by

    monkeypatch.setattr(powertools_dynamodb, "dt", SimpleNamespace(datetime=Moved))


def test_a_keyed_send_retried_after_its_function_was_killed_mid_send_is_answered_not_sent_again(
    stack, new_team, monkeypatch
):
    with proxy_to_postfix(stack, Fault("DATA", "hold")) as proxy:
        team = proxied_team(new_team, stack, proxy)
        mail_id = killed_while_sending(stack, team, proxy, headers={"Idempotency-Key": KEY})
        # The retry reaches another execution environment (this process, not the killed worker).
        status, answer = send_with_key(stack, team, KEY, killed_mail(team))
        assert status == 409 and answer["error"]["code"] == "idempotency_key_in_progress", answer

        # After the killed invocation's deadline Powertools lets the retry run: it finds the mail.
        deadline = stack.gateway.runtime("SendFunction").spec.timeout
        move_powertools_clock(monkeypatch, timedelta(seconds=deadline + 1))
        status, answer = send_with_key(stack, team, KEY, killed_mail(team))
        assert status == 409 and answer["error"]["code"] == "earlier_attempt", answer
        assert (
            answer["error"]["field"] == "Idempotency-Key"
            and "may have been delivered" in answer["error"]["message"]
        )
        assert answer["mail"]["id"] == mail_id and answer["mail"]["status"] == "sending"
        assert proxy.seen("DATA") == 1  # no second message began
        mails, _ = stack_storage().mail.list_team(team.team, MailQuery(), after=None, limit=10)
        assert [mail.id for mail in mails] == [mail_id]

        # Once the sync recorded the dead run `unknown`, the same key answers that.
        later = stored(mail_id).lease_until + timedelta(seconds=1) - datetime.now(UTC)
        monkeypatch.setattr(mailcore.wiring, "clock", lambda: datetime.now(UTC) + later)
        stack.invoke("OutboxSyncFunction", {"source": "schedule"})
        status, answer = send_with_key(stack, team, KEY, killed_mail(team))
        assert status == 409 and answer["mail"]["status"] == "unknown"
        assert f"/api/core/mail/{mail_id}/retry" in answer["error"]["message"]
        assert (proxy.seen("DATA"), proxy.seen(DATA_END)) == (1, 0)

        # The caller, knowing it did not arrive, retries it: sent once, with its Message-ID.
        status, answer = call(
            stack, "POST", "/api/core/mail/{mail_id}/retry", team=team, params={"mail_id": mail_id}
        )
        assert status == 202
        assert settled(mail_id).status == MailStatus.SENT
        wait_for_messages(stack, team.mailbox.address, 1)
        assert proxy.seen(DATA_END) == 1
    (message,) = read_mailbox(stack, team.mailbox)
    assert message["Message-ID"] == stored(mail_id).message_id
