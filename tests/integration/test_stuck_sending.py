"""A direct send whose function is killed mid-send, against the real Postfix and moto and the local
stack's execution environments: its mail stays `sending`, held until the function's deadline and
a margin; after that the scheduled outbox sync records it `unknown` (never sends it), and a
person's retry sends it once, with the same Message-ID (docs/delivery.md)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import mailcore.wiring
from mailcore.models import MailStatus
from mailcore.services.delivery import HOLD_MARGIN
from mailcore.storage import MailQuery

from tests.integration.conftest import read_mailbox, wait_for_messages
from tests.integration.fault_proxy import DATA_END, Fault, FaultProxy
from tests.integration.test_outbox import call, proxied_team, proxy_to_postfix, settled, stored
from tests.stack import stack_storage


def killed_mail(team) -> dict[str, str]:
    """The request body killed_while_sending sends."""
    return {"to": team.mailbox.address, "subject": "Killed mid-send", "body_text": "hello"}


def killed_mid_send(stack, proxy: FaultProxy, function_id: str, run: Callable[[], Any]) -> None:
    """Runs `run`, which invokes `function_id`, in a worker process and kills the process while
    the server waits for the message (its DATA command held by the proxy)."""
    failures: list[BaseException] = []

    def invocation() -> None:
        try:
            run()
        except BaseException as error:  # the killed environment's report
            failures.append(error)

    with stack.gateway.isolated():
        sending = threading.Thread(target=invocation, daemon=True)
        sending.start()
        assert proxy.held.wait(30), "the send never reached DATA"
        stack.gateway.runtime(function_id).close()  # SIGKILL: the function dies mid-send
        sending.join(30)
    assert failures and type(failures[0]).__name__ == "EnvironmentExited", failures
    proxy.release()  # the dead client's DATA reaches Postfix, then its hang-up: nothing delivered


def killed_while_sending(stack, team, proxy: FaultProxy, headers: dict[str, str] | None = None) -> str:
    """Sends a mail through the direct API and kills its function mid-send (killed_mid_send);
    answers the mail's id."""

    def send() -> None:
        call(
            stack,
            "POST",
            "/api/core/mail/send/{account}",
            team=team,
            params={"account": team.account},
            body=killed_mail(team),
            headers=headers,
        )

    killed_mid_send(stack, proxy, "SendFunction", send)
    mails, _ = stack_storage().mail.list_team(team.team, MailQuery(), after=None, limit=10)
    (mail,) = mails
    return mail.id


def test_a_direct_send_killed_mid_send_is_unknown_after_its_hold_and_a_retry_sends_it_once(
    stack, new_team, monkeypatch
):
    with proxy_to_postfix(stack, Fault("DATA", "hold")) as proxy:
        team = proxied_team(new_team, stack, proxy)
        mail_id = killed_while_sending(stack, team, proxy)
        held = stored(mail_id)
        assert held.status == MailStatus.SENDING and held.lease_until is not None
        # Held for what the function had left (its Timeout in template.yaml, less the moments
        # before the mail was stored) and the margin.
        hold, timeout = held.lease_until - held.created_at, stack.gateway.runtime("SendFunction").spec.timeout
        assert timedelta(seconds=timeout - 5) + HOLD_MARGIN < hold <= timedelta(seconds=timeout) + HOLD_MARGIN

        # While the hold lasts the schedule's sync leaves it to its sender.
        stack.invoke("OutboxSyncFunction", {"source": "schedule"})
        assert stored(mail_id).status == MailStatus.SENDING

        later = held.lease_until + timedelta(seconds=1) - datetime.now(UTC)
        monkeypatch.setattr(mailcore.wiring, "clock", lambda: datetime.now(UTC) + later)
        counts = stack.invoke("OutboxSyncFunction", {"source": "schedule"})
        unknown = stored(mail_id)
        assert counts["unknown"] >= 1 and unknown.status == MailStatus.UNKNOWN
        assert "may have been delivered" in unknown.error and "not sent again by itself" in unknown.error
        assert (proxy.seen("DATA"), proxy.seen(DATA_END)) == (1, 0)  # the sync sent nothing

        status, answer = call(
            stack, "POST", "/api/core/mail/{mail_id}/retry", team=team, params={"mail_id": mail_id}
        )
        assert status == 202 and "twice" in answer["warning"]
        assert settled(mail_id).status == MailStatus.SENT
        wait_for_messages(stack, team.mailbox.address, 1)
        assert proxy.seen(DATA_END) == 1  # one whole message ever reached the server
    (message,) = read_mailbox(stack, team.mailbox)
    assert message["Message-ID"] == held.message_id and message["Subject"] == "Killed mid-send"
