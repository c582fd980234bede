"""The integration tests run against the local stack itself: moto in server mode with the
resources of template.yaml, the real Dovecot and Postfix, and the gateway, started once."""

from __future__ import annotations

import itertools
import json
import os
import poplib
import secrets
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest

from local.mailservers import Mailbox
from local.stack import LocalStack, StackPorts
from tests.support import call_api, claims, rest_event, wait_until

__all__ = ["claims", "rest_event"]

# Secrets are cached for a second only here, so a test can see a changed secret take effect.
SECRETS_MAX_AGE = "1"
MAILBOX_POOL = 200
WHOLE_SUITE = pytest.StashKey[bool]()


@dataclass(frozen=True)
class TeamAccount:
    team: str
    account: str
    mailbox: Mailbox


# The stack ends with this package: its drivers poll moto's queues, and the unit tests after it
# reset moto's process-wide state (mock_aws), which they would then find gone.
@pytest.fixture(scope="package")
def stack() -> Iterator[LocalStack]:
    root = Path(tempfile.mkdtemp(prefix="mst-", dir="/tmp"))
    root.chmod(0o755)
    stack = LocalStack(
        root,
        ports=StackPorts.free(),
        parameter_overrides={"SecretsMaxAge": SECRETS_MAX_AGE},
        run_schedules=False,
        # In-process: many tests patch what the functions use (runtime.clock, a failing store,
        # a smaller parser budget). Tests of the execution environments themselves (memory,
        # crashes) and the smoke test switch to worker processes with `stack.gateway.isolated()`.
        isolation="thread",
    )
    try:
        stack.start()
        assert stack.mail_servers is not None
        pool = [Mailbox(f"box{n}@example.test", secrets.token_urlsafe(12)) for n in range(MAILBOX_POOL)]
        stack.mail_servers.add_mailboxes(pool)
        stack.mailbox_pool = iter(pool)  # type: ignore[attr-defined]
        yield stack
    finally:
        stack.stop()
        shutil.rmtree(root, ignore_errors=True)


_team_numbers = itertools.count()


@pytest.fixture
def new_team(stack: LocalStack):
    """Makes a fresh mail team with one account on its own empty mailbox: tests never share mail."""

    def make(account: str = "main", **changes: Any) -> TeamAccount:
        mailbox = next(stack.mailbox_pool)  # type: ignore[attr-defined]
        team = f"team{next(_team_numbers)}-{uuid.uuid4().hex[:6]}"
        stack.put_team_secret(
            team, {"type": "mail", "accounts": {account: stack.account_config(mailbox, **changes)}}
        )
        return TeamAccount(team, account, mailbox)

    return make


def call_function(
    stack: LocalStack, function_id: str, method: str, resource: str, **request: Any
) -> tuple[int, Any]:
    """call_api against a function of the local stack (as its API Gateway route would invoke it)."""
    return call_api(lambda event: stack.invoke(function_id, event), method, resource, **request)


def wait_for_messages(stack: LocalStack, address: str, count: int, timeout: float = 15.0) -> None:
    """Postfix hands mail to Dovecot a moment after it accepted it: wait until it is there."""
    servers = stack.mail_servers
    assert servers is not None
    wait_until(
        lambda: servers.message_count(address) >= count,
        timeout=timeout,
        failure=lambda: (
            f"{address} has {servers.message_count(address)} messages, expected {count}\n"
            + servers.log_tail(30)
        ),
    )


def postfix_holds_no_mail(stack: LocalStack, timeout: float = 15.0) -> None:
    """Every mail Postfix accepted so far has left its queue (delivered, or bounced at once): a
    count of delivered mail taken after this is final, not a count of what had arrived yet.
    (A deferred mail waits minutes in `deferred`, which this does not wait for.)"""
    servers = stack.mail_servers
    assert servers is not None
    queues = [servers.postfix_spool / name for name in ("maildrop", "incoming", "active")]

    def held() -> list[str]:
        return [str(path) for queue in queues for path in queue.rglob("*") if path.is_file()]

    wait_until(lambda: not held(), timeout=timeout, failure=lambda: f"Postfix still holds {held()}")


def bus_to_queue(stack: LocalStack, name: str, pattern: dict[str, Any]) -> str:
    """The URL of a new queue that gets the mail bus's events matching `pattern` (a rule of the bus)."""
    sqs, events = stack.session.client("sqs"), stack.session.client("events")
    bus = stack.info["environment"]["MAIL_EVENT_BUS"]
    queue_url = sqs.create_queue(QueueName=name)["QueueUrl"]
    attributes = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]
    events.put_rule(Name=name, EventBusName=bus, EventPattern=json.dumps(pattern))
    events.put_targets(Rule=name, EventBusName=bus, Targets=[{"Id": "queue", "Arn": attributes["QueueArn"]}])
    return str(queue_url)


@pytest.fixture
def bus_queue(stack: LocalStack) -> Iterator[str]:
    """The URL of an SQS queue behind a rule on the mail bus for the outbox's completion events
    (MailSent, MailFailed, MailCancelled), as a consumer of the events would set it up."""
    name = f"bus-{uuid.uuid4().hex[:8]}"
    pattern = {"source": ["mail-service"], "detail-type": ["MailSent", "MailFailed", "MailCancelled"]}
    url = bus_to_queue(stack, name, pattern)
    yield url
    events = stack.session.client("events")
    bus = stack.info["environment"]["MAIL_EVENT_BUS"]
    events.remove_targets(Rule=name, EventBusName=bus, Ids=["queue"])
    events.delete_rule(Name=name, EventBusName=bus)
    stack.session.client("sqs").delete_queue(QueueUrl=url)


def drain(stack: LocalStack, queue_url: str, wanted: int, timeout: float = 10.0) -> list[dict[str, Any]]:
    """The JSON bodies of the queue's messages, taken off it, once `wanted` came (or `timeout` passed)."""
    sqs = stack.session.client("sqs")
    bodies: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    while len(bodies) < wanted and time.monotonic() < deadline:
        answer = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1)
        for message in answer.get("Messages", []):
            bodies.append(json.loads(message["Body"]))
            sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
    return bodies


def queued_messages(stack: LocalStack, url: str) -> list[dict[str, Any]]:
    """Every message on the queue now (moto's SQS holds a message once SendMessage answered),
    taken off it."""
    sqs = stack.session.client("sqs")
    received: list[dict[str, Any]] = []
    while batch := sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", []):
        received.extend(batch)
        sqs.delete_message_batch(
            QueueUrl=url,
            Entries=[{"Id": str(n), "ReceiptHandle": m["ReceiptHandle"]} for n, m in enumerate(batch)],
        )
    return received


def read_mailbox(stack: LocalStack, mailbox: Mailbox) -> list[EmailMessage]:
    """Every message in the mailbox, read over POP3 (TLS, verified) without deleting anything."""
    assert stack.mail_servers is not None
    servers = stack.mail_servers
    pop = poplib.POP3_SSL(servers.host, servers.ports.pop3s, context=servers.ssl_context(), timeout=10)
    try:
        pop.user(mailbox.address)
        pop.pass_(mailbox.password)
        count, _ = pop.stat()
        messages = []
        for number in range(1, count + 1):
            _, lines, _ = pop.retr(number)
            raw = b"\r\n".join(lines) + b"\r\n"
            messages.append(message_from_bytes(raw, _class=EmailMessage, policy=policy.default))
        return messages
    finally:
        pop.quit()


@pytest.fixture(autouse=True)
def _environment_of_the_stack(stack: LocalStack) -> Iterator[None]:
    """Some unit tests change the environment; give every integration test the stack's."""
    saved = dict(os.environ)
    os.environ.update(stack.info.get("environment", {}))
    os.environ["AWS_ENDPOINT_URL"] = stack.info["aws_endpoint"]
    yield
    os.environ.clear()
    os.environ.update(saved)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.integration)
    # A check of what the whole suite did runs last, and only when the whole suite runs: last of
    # this package (whose stack it reads), not after the tests of other packages.
    collected = {Path(str(item.fspath)) for item in items}
    config.stash[WHOLE_SUITE] = all(module in collected for module in here.glob("test_*.py"))
    last = [item for item in items if item.get_closest_marker("after_the_suite") is not None]
    rest = [item for item in items if item not in last]
    ours = [n for n, item in enumerate(rest) if here in Path(str(item.fspath)).parents]
    end = ours[-1] + 1 if ours else len(rest)
    items[:] = [*rest[:end], *last, *rest[end:]]


@pytest.fixture
def whole_suite(request: pytest.FixtureRequest) -> bool:
    """True when this session runs every integration test (and so every code path they reach)."""
    return request.config.stash.get(WHOLE_SUITE, False)
