"""A mail server that drips its answers a byte at a time (each byte well inside any socket
timeout) cannot hold an API call past the time its caller has: the function answers in time with
the account's error, never API Gateway's 504. Real Dovecot and Postfix behind the fault proxy;
the request reaches the function with little of API Gateway's 29 s left."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from mailcore.api import API_INTEGRATION_SECONDS

from local.maildir import deliver_files
from tests.integration.fault_proxy import Fault, FaultProxy
from tests.integration.test_outbox import queue, stored
from tests.integration.test_pull_exactly_once import messages, stored_subjects
from tests.support import claims, rest_event

# What is left of API Gateway's 29 s when the request reaches the function: more than the margins
# the functions keep for storing and answering (pull: 5 s, send: 4 s), less than any dripping.
LEFT_FOR_THE_CALLER = 7.0


def late_call(
    stack: Any, function_id: str, resource: str, team: Any, body: Any = None
) -> tuple[int, Any, float]:
    """POSTs to the team account's `resource` as API Gateway would, with a request it received long
    enough ago that LEFT_FOR_THE_CALLER seconds remain: (status, body, seconds the function took)."""
    params = {"account": team.account}
    event = rest_event(
        "POST",
        resource.format_map(params),
        resource=resource,
        path_parameters=params,
        caller=claims(team.team),
        body=None if body is None else json.dumps(body),
    )
    received = time.time() - (API_INTEGRATION_SECONDS - LEFT_FOR_THE_CALLER)
    event["requestContext"]["requestTimeEpoch"] = int(received * 1000)
    started = time.monotonic()
    answer = stack.invoke(function_id, event)
    return answer["statusCode"], json.loads(answer["body"]), time.monotonic() - started


def test_a_pull_from_a_server_dripping_its_listing_answers_in_time_with_the_accounts_error(stack, new_team):
    upstream = (stack.mail_servers.host, stack.mail_servers.ports.pop3)
    with FaultProxy(upstream, Fault("UIDL", "drip")) as proxy:
        team = new_team(pop3={"host": "127.0.0.1", "port": proxy.port, "security": "none"})
        deliver_files(stack.mail_servers, team.mailbox.address, messages("dripped", 2).values())
        status, answer, took = late_call(stack, "PullFunction", "/api/core/mail/pull/{account}", team)
    print(f"pull from a dripping server: answered in {took:.1f} s of {LEFT_FOR_THE_CALLER} s")
    assert took < LEFT_FOR_THE_CALLER
    (report,) = answer["accounts"]
    assert status == 200 and report["problem"] == "timeout" and "did not finish" in report["error"]
    assert stored_subjects(team.team) == []
    assert stack.mail_servers.message_count(team.mailbox.address) == 2  # nothing deleted


def test_a_send_to_a_server_dripping_its_replies_answers_in_time_with_the_mail_deferred(stack, new_team):
    with FaultProxy(("127.0.0.1", stack.mail_servers.ports.smtp), Fault("MAIL", "drip")) as proxy:
        team = new_team(smtp={"host": "127.0.0.1", "port": proxy.port, "security": "none"})
        mail = {"to": team.mailbox.address, "subject": "Dripped", "body_text": "x"}
        status, answer, took = late_call(stack, "SendFunction", "/api/core/mail/send/{account}", team, mail)
    print(f"send to a dripping server: answered in {took:.1f} s of {LEFT_FOR_THE_CALLER} s")
    assert took < LEFT_FOR_THE_CALLER
    assert status == 202 and answer["error"]["code"] == "mail_deferred"
    assert "did not finish" in answer["error"]["message"]


def test_an_outbox_sync_whose_time_runs_out_gives_its_mails_back_with_no_attempt_counted(stack, new_team):
    # Scheduled a moment ahead, so that the push of their INSERT leaves them to this sync.
    send_at = datetime.now(UTC) + timedelta(seconds=2)
    with FaultProxy(("127.0.0.1", stack.mail_servers.ports.smtp), Fault("MAIL", "drip")) as proxy:
        team = new_team(smtp={"host": "127.0.0.1", "port": proxy.port, "security": "none"})
        ids = {queue(stack, team, subject=f"late {n}", send_at=send_at.isoformat())["id"] for n in range(3)}
        time.sleep(max((send_at - datetime.now(UTC)).total_seconds(), 0.0))
        status, answer, took = late_call(stack, "SendFunction", "/api/core/mail/sync/{account}", team)
    print(f"outbox sync against a dripping server: answered in {took:.1f} s of {LEFT_FOR_THE_CALLER} s")
    assert took < LEFT_FOR_THE_CALLER
    assert status == 200 and set(answer["released"]) == ids
    assert answer["deferred"] == answer["failed"] == answer["unknown"] == []
    # Given back `queued` (a push of that change may have taken one again since), none counted.
    kept = [stored(mail_id) for mail_id in ids]
    assert {mail.attempts for mail in kept} == {0} and {mail.status for mail in kept} <= {"queued", "sending"}
