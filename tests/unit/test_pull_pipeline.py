"""The pull pipeline with fakes: a POP3 mailbox in memory and the in-memory storage adapters."""

from __future__ import annotations

import contextlib
import json
import random
import threading
import time
from collections.abc import Iterator

import pytest
from mailcore.errors import PullRunning
from mailcore.ids import incoming_mail_id
from mailcore.models import Direction, Mail, MailStatus
from mailcore.protocols.transcript import Transcript
from mailcore.services.dispatch import dispatch_pulls
from mailcore.services.pull import ALREADY_RUNNING, mailbox_identity, pull_account, pull_accounts
from mailcore.teams import ResolvedAccount

from tests.fakes import MemoryPublisher, MemoryPullQueue, memory_directory, memory_storage
from tests.support import account_config, mail_account

ACCOUNT = mail_account(leave_on_server=False)
TARGET = ResolvedAccount("acme", "main", ACCOUNT)


def raw_message(number: int) -> bytes:
    return f"Subject: message {number}\r\nFrom: a@example.test\r\n\r\nbody {number}\r\n".encode()


class FakeMailbox:
    """A POP3 mailbox: numbered messages with UIDLs; records what the pull asked for."""

    def __init__(self, count: int, log: list[tuple[str, int]] | None = None) -> None:
        self.messages = {number: (f"uid{number:08d}", raw_message(number)) for number in range(1, count + 1)}
        self.log = log if log is not None else []
        self.retrieved: list[int] = []
        self.deleted: list[int] = []

    @contextlib.contextmanager
    def open(self, target: ResolvedAccount) -> Iterator[FakeMailbox]:
        yield self

    def listing(self) -> list[tuple[int, str]]:
        return [(number, uidl) for number, (uidl, _) in self.messages.items()]

    def retrieve(self, number: int) -> bytes:
        self.retrieved.append(number)
        return self.messages[number][1]

    def delete(self, number: int) -> None:
        self.deleted.append(number)
        self.log.append(("DELE", number))


def mail_id_of(mailbox: FakeMailbox, number: int) -> str:
    return incoming_mail_id("acme", "main", mailbox_identity(TARGET), mailbox.messages[number][0])


def pull(mailbox: FakeMailbox, storage, **options):
    return pull_account(
        TARGET,
        storage=storage,
        transcript=Transcript(),
        tls_context=None,
        open_session=mailbox.open,
        **options,
    )


def test_a_first_pull_of_ten_thousand_messages_retrieves_only_the_new_uidls_and_keeps_no_uidl_list(storage):
    mailbox = FakeMailbox(10_000)
    already = set(range(1, 10_001, 3))  # a third was stored by an earlier, interrupted pull
    for number in already:
        storage.mail.put_new(
            Mail(
                id=mail_id_of(mailbox, number),
                team="acme",
                account="main",
                direction=Direction.IN,
                status=MailStatus.RECEIVED,
                created_at="2026-01-01T00:00:00Z",
            )
        )

    report = pull(mailbox, storage)

    assert sorted(mailbox.retrieved) == sorted(set(range(1, 10_001)) - already)
    assert (report.fetched, report.skipped, report.remaining) == (10_000 - len(already), len(already), 0)
    assert len(storage.mail.items) == 10_000
    state = storage.pull_state.get("acme", "main")
    assert set(state) == {"last_pull_at", "last_error", "fetched", "remaining"}
    assert len(json.dumps(state)) < 200  # the UIDLs live one per mail item, never in one big item


def test_a_message_is_deleted_only_after_its_own_writes_completed(storage):
    log: list[tuple[str, int]] = []
    mailbox = FakeMailbox(40, log)
    numbers = {mail_id_of(mailbox, number): number for number in mailbox.messages}
    put_new = storage.mail.put_new
    lock = threading.Lock()

    def slow_put(mail: Mail) -> bool:
        time.sleep(random.uniform(0, 0.005))  # writes finish out of order
        stored = put_new(mail)
        with lock:
            log.append(("stored", numbers[mail.id]))
        return stored

    storage.mail.put_new = slow_put  # type: ignore[method-assign]
    report = pull(mailbox, storage)

    assert report.fetched == 40 and sorted(mailbox.deleted) == list(range(1, 41))
    for number in range(1, 41):
        assert log.index(("stored", number)) < log.index(("DELE", number))


def test_a_failed_write_deletes_nothing_after_it_raises_and_frees_the_lease(storage):
    mailbox = FakeMailbox(10)
    failing = mail_id_of(mailbox, 4)
    put_new = storage.mail.put_new

    def put_or_fail(mail: Mail) -> bool:
        if mail.id == failing:
            raise ConnectionError("storage down")
        return put_new(mail)

    storage.mail.put_new = put_or_fail  # type: ignore[method-assign]
    with pytest.raises(ConnectionError):
        pull(mailbox, storage)
    assert 4 not in mailbox.deleted and all(number < 4 for number in mailbox.deleted)
    assert storage.pull_state.get("acme", "main")["last_error"]
    assert not storage.pull_state.lease_held("acme", "main")


def test_a_pull_that_runs_out_of_time_reports_how_many_remain():
    mailbox = FakeMailbox(20)
    readings = iter([300.0] + [300.0] * 5 + [1.0] * 100)
    report = pull(mailbox, memory_storage(), seconds_left=lambda: next(readings))
    assert (report.fetched, report.remaining) == (5, 15)


def test_stored_mail_is_announced_in_batches_of_ten_naming_it_only():
    batches: list[int] = []

    class CountingPublisher(MemoryPublisher):
        def publish(self, events):
            batches.append(len(events))
            super().publish(events)

    publisher = CountingPublisher()
    report = pull(FakeMailbox(25), memory_storage(), events=publisher)
    assert batches == [10, 10, 5]
    assert [event.mail_id for event in publisher.events] == report.mail_ids
    assert {event.detail_type for event in publisher.events} == {"MailReceived"}


def test_a_second_pull_is_refused_while_the_lease_is_held_and_reported_in_a_multi_account_pull(storage):
    assert storage.pull_state.acquire_lease("acme", "main", "other pull", 60)
    with pytest.raises(PullRunning):
        pull(FakeMailbox(1), storage)
    (report,) = pull_accounts([TARGET], storage=storage, transcript=Transcript(), tls_context=None)  # type: ignore[arg-type]
    assert report.error == ALREADY_RUNNING


def test_an_expired_lease_can_be_taken_and_only_its_holder_releases_it():
    state = memory_storage().pull_state
    assert state.acquire_lease("acme", "main", "crashed", -1)
    assert state.acquire_lease("acme", "main", "next", 60)
    state.release_lease("acme", "main", "crashed")
    assert state.lease_held("acme", "main")
    state.release_lease("acme", "main", "next")
    assert not state.lease_held("acme", "main")


def test_the_dispatcher_enqueues_every_account_once_and_skips_a_team_with_a_broken_secret():
    queue = MemoryPullQueue()
    config = account_config()
    directory = memory_directory(
        {
            "a": {"type": "mail", "accounts": {"main": config, "sales": config}},
            "b": "{not json",
            "c": {"type": "mail", "accounts": {"main": config}},
            "d": {"type": "mail", "accounts": {}},
        }
    )
    assert dispatch_pulls(directory, queue) == 3
    assert queue.sent == [
        {"team": "a", "account": "main"},
        {"team": "a", "account": "sales"},
        {"team": "c", "account": "main"},
    ]


def test_a_large_base64_attachment_decodes_to_the_same_bytes_as_the_email_package():
    import email
    import os
    from email.message import EmailMessage

    from mailcore.mime import parse_message

    message = EmailMessage()
    message["Subject"] = "scan"
    message.set_content("attached")
    message.add_attachment(
        os.urandom(3 * 1024 * 1024 + 7), maintype="application", subtype="pdf", filename="a.pdf"
    )
    raw = message.as_bytes()
    expected = list(email.message_from_bytes(raw).walk())[-1].get_payload(decode=True)
    (attachment,) = parse_message(raw).attachments
    assert attachment.data == expected
