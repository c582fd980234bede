"""A direct send with an Idempotency-Key whose function is killed mid-send, against the real
Postfix and moto and the local stack's execution environments: the caller's retry with the same
key finds the first run's mail and answers it (409 earlier_attempt) instead of sending a second
one (docs/delivery.md).

On AWS, Powertools' in-progress record of the killed invocation answers such a retry 409
(idempotency_key_in_progress) until that invocation's deadline, then lets it run: the case here.
Locally the record does not hold the retry at all: the stack loads each execution environment's
handler under a module name of its own (local/gateway.py, load_handler), and Powertools keys its
records on the function's module, so the retry in a new environment has another key."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import mailcore.wiring
from mailcore.models import MailStatus
from mailcore.storage import MailQuery

from tests.integration.conftest import read_mailbox, wait_for_messages
from tests.integration.fault_proxy import DATA_END, Fault
from tests.integration.test_outbox import call, proxied_team, proxy_to_postfix, send_with_key, settled, stored
from tests.integration.test_stuck_sending import killed_mail, killed_while_sending
from tests.stack import stack_storage

KEY = "order-4711"


def test_a_keyed_send_retried_after_its_function_was_killed_mid_send_is_answered_not_sent_again(
    stack, new_team, monkeypatch
):
    with proxy_to_postfix(stack, Fault("DATA", "hold")) as proxy:
        team = proxied_team(new_team, stack, proxy)
        mail_id = killed_while_sending(stack, team, proxy, headers={"Idempotency-Key": KEY})
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
