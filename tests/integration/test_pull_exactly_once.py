"""Exactly once into storage, nothing lost: faults on the line, two pulls at once, a pull out
of time. Real Dovecot (through a fault proxy where a fault is injected) and moto."""

from __future__ import annotations

import itertools
import json
import threading
from email.message import EmailMessage

import pytest
from mailcore.adapters.sqs import SqsPullQueue
from mailcore.errors import PullRunning
from mailcore.protocols.transcript import Transcript
from mailcore.services.dispatch import pull_queued_account
from mailcore.services.pull import pull_account
from mailcore.storage import MailQuery

from local.maildir import deliver_files
from tests.integration.conftest import queued_messages
from tests.integration.fault_proxy import Fault, FaultProxy
from tests.integration.test_pull import pull as pull_through_the_api
from tests.stack import stack_directory, stack_storage, stack_tls_context


def messages(prefix: str, count: int) -> dict[str, bytes]:
    made = {}
    for number in range(count):
        message = EmailMessage()
        message["From"] = "Sender <sender@example.test>"
        message["To"] = "box@example.test"
        message["Subject"] = f"{prefix} {number}"
        message.set_content(f"message {number}\n" * 20)
        made[message["Subject"]] = message.as_bytes()
    return made


def stored_subjects(team: str) -> list[str]:
    mails, more = stack_storage().mail.list_team(team, MailQuery(), after=None, limit=100)
    assert not more
    return [mail.subject for mail in mails]


def counts(sent: dict[str, bytes], team: str) -> dict[str, int]:
    subjects = stored_subjects(team)
    return {
        "sent": len(sent),
        "stored": len(subjects),
        "duplicated": len(subjects) - len(set(subjects)),
        "lost": len(set(sent) - set(subjects)),
    }


def proxied_team(stack, new_team, proxy: FaultProxy):
    return new_team(pop3={"host": "127.0.0.1", "port": proxy.port, "security": "none"}, leave_on_server=False)


def pull(stack, team):
    return pull_through_the_api(stack, team, account=team.account)


@pytest.mark.parametrize(
    ("cut_at", "cut_on"),
    [("DELE", 1), ("DELE", 4), ("QUIT", 1), ("RETR", 3)],
    ids=["before-the-first-DELE", "between-RETR-and-the-fourth-DELE", "before-QUIT", "before-the-third-RETR"],
)
def test_a_cut_connection_and_a_retry_store_every_message_exactly_once(stack, new_team, cut_at, cut_on):
    upstream = (stack.mail_servers.host, stack.mail_servers.ports.pop3)
    cut = Fault(cut_at, "cut", nth=cut_on)
    with FaultProxy(upstream, cut) as proxy:
        team = proxied_team(stack, new_team, proxy)
        sent = messages(f"cut at {cut_at}", 8)
        deliver_files(stack.mail_servers, team.mailbox.address, sent.values())

        status, first = pull(stack, team)
        assert status == 200 and cut.used == 1
        assert first["accounts"][0]["error"]  # the pull saw the line break and said so
        assert stack.mail_servers.message_count(team.mailbox.address) == 8  # no QUIT: nothing deleted
        stored_before_retry = len(stored_subjects(team.team))
        status, retry = pull(stack, team)
        assert status == 200 and retry["accounts"][0]["error"] is None

    outcome = counts(sent, team.team)
    print(f"fault {cut_at}#{cut_on}: stored before the retry {stored_before_retry}, in the end {outcome}")
    assert outcome == {"sent": 8, "stored": 8, "duplicated": 0, "lost": 0}
    assert stack.mail_servers.message_count(team.mailbox.address) == 0  # deleted once stored


def test_two_pulls_of_one_mailbox_at_once_run_one_and_tell_the_other_promptly(stack, new_team):
    upstream = (stack.mail_servers.host, stack.mail_servers.ports.pop3)
    with FaultProxy(upstream, Fault("UIDL", "hold")) as proxy:
        team = proxied_team(stack, new_team, proxy)
        sent = messages("concurrent", 12)
        deliver_files(stack.mail_servers, team.mailbox.address, sent.values())
        results: list[tuple[int, dict]] = []
        first = threading.Thread(target=lambda: results.append(pull(stack, team)))
        first.start()
        assert proxy.held.wait(10)  # the first pull holds the lease and is mid-conversation

        status, second = pull(stack, team)
        assert status == 409 and second["error"]["code"] == "pull_running"

        proxy.release()
        first.join(30)
    ((status, answer),) = results
    assert status == 200 and answer["accounts"][0]["fetched"] == 12
    assert counts(sent, team.team) == {"sent": 12, "stored": 12, "duplicated": 0, "lost": 0}


def test_a_lease_left_by_a_crashed_pull_stops_counting_once_it_expires(stack, new_team):
    team = new_team()
    deliver_files(stack.mail_servers, team.mailbox.address, messages("after a crash", 2).values())
    pull_state = stack_storage().pull_state
    assert pull_state.acquire_lease(team.team, team.account, "crashed-pull", 60)
    assert pull(stack, team)[0] == 409
    # The crashed pull's lease ran out (written as DynamoDB would hold it, expiry in the past).
    pull_state.client.put_item(
        TableName=pull_state.table,
        Item={
            "pk": {"S": f"{team.team}#{team.account}"},
            "sk": {"S": "LEASE"},
            "holder": {"S": "crashed-pull"},
            "lease_until": {"N": "1"},
        },
    )
    status, answer = pull(stack, team)
    assert status == 200 and answer["accounts"][0]["fetched"] == 2
    assert not pull_state.lease_held(team.team, team.account)  # released at the end


def test_a_pull_that_runs_out_of_time_stops_reports_what_remains_and_the_next_invocation_goes_on(
    stack, new_team
):
    team = new_team(leave_on_server=False)
    sent = messages("out of time", 10)
    deliver_files(stack.mail_servers, team.mailbox.address, sent.values())
    # Readings: the consumer's check, the lease's budget, four before messages; then too little.
    clock = itertools.chain([100.0] * 6, itertools.repeat(5.0))
    # A queue of this test's own in the pull queue's place (the stack's is consumed by its driver).
    sqs = stack.session.client("sqs")
    url = sqs.create_queue(QueueName=f"out-of-time-{team.team}")["QueueUrl"]
    message = {"team": team.team, "account": team.account}
    common = {
        "directory": stack_directory(),
        "storage": stack_storage(),
        "queue": SqsPullQueue(url, client=sqs),
        "tls_context": stack_tls_context(),
    }

    report = pull_queued_account(message, seconds_left=lambda: next(clock), **common)
    assert report is not None and (report.fetched, report.remaining) == (4, 6)
    assert stack_storage().pull_state.get(team.team, team.account)["remaining"] == 6
    (put_back,) = [json.loads(queued["Body"]) for queued in queued_messages(stack, url)]
    assert put_back == message  # for the next invocation

    resumed = pull_queued_account(put_back, seconds_left=lambda: 300.0, **common)
    assert resumed is not None and (resumed.fetched, resumed.remaining) == (6, 0)
    assert queued_messages(stack, url) == []
    assert counts(sent, team.team) == {"sent": 10, "stored": 10, "duplicated": 0, "lost": 0}
    assert stack.mail_servers.message_count(team.mailbox.address) == 0


def test_the_service_refuses_a_second_pull_while_the_lease_is_held(stack, new_team):
    team = new_team()
    (target,) = stack_directory().accounts_of([team.team])
    assert stack_storage().pull_state.acquire_lease(team.team, team.account, "other", 60)
    with pytest.raises(PullRunning):
        pull_account(
            target, storage=stack_storage(), transcript=Transcript(), tls_context=stack_tls_context()
        )
