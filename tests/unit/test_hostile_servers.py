"""A hostile or broken server cannot hold a function past its time (protocols/deadline.py), nor
break it with answers it cannot read. The connect over every address of a host, an SMTP or POP3
session and an OAuth2 token request each end by one deadline, however slowly the server drips its
answers. Against scripted servers on loopback that answer a byte at a time, each byte well inside
the per-operation timeout."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from aws_lambda_powertools.utilities.batch.exceptions import BatchProcessingError
from mailcore.errors import DeliveryUnknown, MailServerError
from mailcore.models import Mail, MailAccount, MailStatus, OAuth2Auth, SendRequest
from mailcore.oauth2 import OAuth2Error, TokenBroker
from mailcore.protocols import pop3, reach
from mailcore.protocols.deadline import Deadline, DeadlinePassed
from mailcore.protocols.pop3 import Pop3Session
from mailcore.protocols.smtp import SmtpSession
from mailcore.protocols.tls import client_tls_context
from mailcore.protocols.transcript import Transcript
from mailcore.services import accounts, outbox, pull
from mailcore.services.delivery import Attempts
from mailcore.services.retry import IN_THE_BACKGROUND, RetryPolicy
from mailcore.services.send import ANSWER_MARGIN_SECONDS, DirectSend, MailDeferred
from mailcore.services.system import SystemMailConfig, SystemMailer
from mailcore.storage import MailQuery
from mailcore.teams import SYSTEM_TEAM, ResolvedAccount
from mailcore.templates import MailTemplates
from mailcore.wiring import system_mail

from tests.fakes import MemoryDeadLetters, MemoryPublisher
from tests.fakes.storage import MemoryRateLimits
from tests.stack import function_environment
from tests.support import ROOT, LambdaContext, accepted, load_function, mail_account, outgoing_mail
from tests.unit.test_idempotency_keys import REQUEST, idempotency_records, sqs_event  # noqa: F401 (a fixture)
from tests.unit.test_reach import resolving

# Each byte comes within this; the per-operation timeout is longer, so only a deadline ends it.
DRIP_EVERY = 0.2
PER_OPERATION = 1.0
DEADLINE = 1.5
# What a test may take past its deadline (a loaded machine); a server drips for DRIPPING at most,
# so the same test without the deadline takes that long and fails.
MARGIN = 1.5
TLS = client_tls_context()
DRIPPING = 6.0

Script = Callable[[socket.socket, list[str]], None]


class ScriptedServer:
    """A server on 127.0.0.1 playing `script` to every connection; the client's lines go to `heard`."""

    def __init__(self, script: Script) -> None:
        self.script, self.heard = script, list[str]()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        for connection in accepted(self._listener):
            threading.Thread(target=self._play, args=(connection,), daemon=True).start()

    def _play(self, connection: socket.socket) -> None:
        with contextlib.suppress(OSError), connection:
            self.script(connection, self.heard)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)  # wakes the accept()
        self._listener.close()


@pytest.fixture
def serve() -> Iterator[Callable[[Script], ScriptedServer]]:
    servers: list[ScriptedServer] = []

    def start(script: Script) -> ScriptedServer:
        servers.append(ScriptedServer(script))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


def drip(connection: socket.socket, data: bytes = b"x") -> None:
    """`data` over and over, a byte per DRIP_EVERY, for DRIPPING seconds at most."""
    until = time.monotonic() + DRIPPING
    while time.monotonic() < until:
        for byte in data:
            connection.sendall(bytes([byte]))
            time.sleep(DRIP_EVERY)


def lines(connection: socket.socket, heard: list[str]) -> Iterator[str]:
    """The client's lines, each noted in `heard`."""
    for raw in connection.makefile("rb"):
        heard.append(raw.decode().rstrip("\r\n"))
        yield heard[-1]


class Timed:
    def __enter__(self) -> Timed:
        self.started = time.monotonic()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.monotonic() - self.started


# --- the connect: one deadline over every address of a host -------------------------------------


@pytest.fixture
def syn_dropping() -> Iterator[Callable[[int], tuple[list[str], int]]]:
    """n loopback addresses sharing a port whose listeners' queues are full: the kernel drops
    further SYNs, so a connect to any of them waits its whole timeout."""
    held: list[socket.socket] = []

    def make(count: int) -> tuple[list[str], int]:
        addresses, port = [f"127.0.0.{n}" for n in range(2, 2 + count)], 0
        for address in addresses:
            listener = socket.socket()
            listener.bind((address, port))
            listener.listen(0)
            port = listener.getsockname()[1]
            held.append(listener)
            for _ in range(3):
                filler = socket.socket()
                filler.setblocking(False)
                with contextlib.suppress(BlockingIOError):
                    filler.connect((address, port))
                held.append(filler)
        return addresses, port

    yield make
    for sock in held:
        sock.close()


def test_a_host_whose_addresses_all_drop_syns_fails_within_one_timeout_naming_the_host(
    monkeypatch, syn_dropping
):
    addresses, port = syn_dropping(4)
    resolving(monkeypatch, {"mx.example.test": addresses})
    with Timed() as took, pytest.raises(DeadlinePassed) as caught:
        reach.connect("mx.example.test", port, PER_OPERATION)
    assert took.seconds < PER_OPERATION + MARGIN  # each address its full timeout: 4 s
    assert "mx.example.test" in str(caught.value) and "4 of 4 addresses" in str(caught.value)


def test_a_dead_first_address_leaves_time_for_the_next_one(monkeypatch, syn_dropping):
    (dead,), port = syn_dropping(1)
    resolving(monkeypatch, {"mx.example.test": [dead, "127.0.0.1"]})
    with socket.create_server(("127.0.0.1", port)), Timed() as took:
        reach.connect("mx.example.test", port, 2 * PER_OPERATION).close()
    assert took.seconds < PER_OPERATION + MARGIN  # half the timeout each, the live one answers at once


def test_a_connect_ends_by_the_callers_deadline_when_that_comes_before_its_timeout(monkeypatch, syn_dropping):
    addresses, port = syn_dropping(1)
    resolving(monkeypatch, {"mx.example.test": addresses})
    with Timed() as took, pytest.raises(DeadlinePassed, match=r"mx\.example\.test"):
        reach.connect("mx.example.test", port, 30.0, deadline=Deadline.after(DEADLINE))
    assert took.seconds < DEADLINE + MARGIN


# --- SMTP: a reply dripped a byte at a time -------------------------------------------------------


def smtp_server(drip_at: str, slow_at: str = "", slow: float = 0.0) -> Script:
    """An SMTP server that logs anyone in and drips its reply to `drip_at` ("greeting", "EHLO",
    or "." for the message's end); it takes `slow` seconds to answer `slow_at` (in time)."""

    def play(connection: socket.socket, heard: list[str]) -> None:
        if drip_at == "greeting":
            connection.sendall(b"220-")
            drip(connection)
        connection.sendall(b"220 slow.example.test ESMTP\r\n")
        in_data = False
        for line in lines(connection, heard):
            verb = line.split(" ")[0].upper()
            if in_data:
                if line != ".":
                    continue
                in_data, verb = False, "."
            if verb == slow_at:
                time.sleep(slow)
            if verb == drip_at:
                connection.sendall(b"250-")
                drip(connection)
            elif verb == "EHLO":
                connection.sendall(b"250-slow.example.test\r\n250 AUTH PLAIN\r\n")
            elif verb == "AUTH":
                connection.sendall(b"235 ok\r\n")
            elif verb == "DATA":
                connection.sendall(b"354 go on\r\n")
                in_data = True
            elif verb == "QUIT":
                connection.sendall(b"221 bye\r\n")
                return
            else:
                connection.sendall(b"250 ok\r\n")

    return play


def smtp_session(port: int, deadline: Deadline) -> SmtpSession:
    account = mail_account(
        smtp={"host": "127.0.0.1", "port": port, "security": "none"}, timeout_seconds=PER_OPERATION
    )
    return SmtpSession(account, transcript=Transcript(), tls_context=TLS, deadline=deadline)


@pytest.mark.parametrize("drip_at", ["greeting", "EHLO"])
def test_an_smtp_server_dripping_a_reply_is_cut_off_at_the_sessions_deadline(serve, drip_at):
    server = serve(smtp_server(drip_at))
    session = smtp_session(server.port, Deadline.after(DEADLINE))
    with Timed() as took, pytest.raises(MailServerError) as caught:
        session.open()
    assert took.seconds < DEADLINE + MARGIN
    assert caught.value.problem == "timeout" and "did not finish within the 1.5 s" in caught.value.message
    assert caught.value.temporary


def test_an_smtp_server_dripping_its_answer_to_the_message_leaves_the_mails_fate_unknown_in_time(serve):
    server = serve(smtp_server("."))
    session = smtp_session(server.port, Deadline.after(DEADLINE))
    with Timed() as took, pytest.raises(DeliveryUnknown, match="did not finish"):
        session.send(b"Subject: hi\r\n\r\nbody\r\n", ["to@example.test"])
    assert took.seconds < DEADLINE + MARGIN


def test_a_password_an_smtp_server_drips_back_stays_masked_when_the_deadline_cuts_it(serve):
    def echo(connection: socket.socket, heard: list[str]) -> None:
        connection.sendall(b"220-")
        drip(connection, b"pw-of-the-desk ")

    server = serve(echo)
    account = mail_account(
        smtp={"host": "127.0.0.1", "port": server.port, "security": "none"},
        timeout_seconds=PER_OPERATION,
        mail_password="pw-of-the-desk",
    )
    transcript = Transcript()
    session = SmtpSession(account, transcript=transcript, tls_context=TLS, deadline=Deadline.after(DEADLINE))
    with pytest.raises(MailServerError) as caught:
        session.open()
    shown = " ".join([str(caught.value), caught.value.message, *transcript.lines])
    assert "pw-of-the-desk" not in shown


# --- POP3: a message or a listing that never ends -----------------------------------------------

MESSAGE = b"Subject: one\r\nFrom: a@example.test\r\n\r\nfirst\r\n"


def pop3_server(drip_at: str = "", answers: dict[str, bytes] | None = None) -> Script:
    """A POP3 mailbox of two messages (or answering `answers`, by verb) that drips its answer to
    the command starting with `drip_at` ("RETR 2", "UIDL", "USER")."""
    answers = answers or {
        "UIDL": b"+OK\r\n1 uid-1\r\n2 uid-2\r\n.\r\n",
        "RETR": b"+OK\r\n" + MESSAGE + b".\r\n",
        "QUIT": b"+OK bye\r\n",
    }

    def play(connection: socket.socket, heard: list[str]) -> None:
        connection.sendall(b"+OK ready\r\n")
        for line in lines(connection, heard):
            if drip_at and line.startswith(drip_at):
                connection.sendall(b"+OK\r\n")
                drip(connection, b"1 uid-x\r\n" if line == "UIDL" else b"x")
                return
            connection.sendall(answers.get(line.split(" ")[0], b"+OK\r\n"))
            if line == "QUIT":
                return

    return play


def pop3_account(port: int) -> Any:
    return mail_account(
        pop3={"host": "127.0.0.1", "port": port, "security": "none"},
        timeout_seconds=PER_OPERATION,
        leave_on_server=False,
    )


@pytest.mark.parametrize("drip_at", ["RETR 2", "UIDL"])
def test_a_pop3_server_dripping_an_answer_is_cut_off_at_the_sessions_deadline(serve, drip_at):
    server = serve(pop3_server(drip_at))
    session = Pop3Session(
        pop3_account(server.port),
        transcript=Transcript(),
        tls_context=TLS,
        deadline=Deadline.after(DEADLINE),
    )
    with Timed() as took, pytest.raises(MailServerError) as caught, session:
        session.listing()
        session.retrieve(2)
    assert took.seconds < DEADLINE + MARGIN
    assert caught.value.problem == "timeout" and "did not finish" in caught.value.message


def test_a_pull_cut_off_in_a_dripping_message_keeps_what_it_stored_and_deletes_nothing_unstored(
    serve, storage, monkeypatch
):
    """Exactly once: the first message is stored, the dripped one is not, the session never
    QUITs (so no DELE takes effect), and the pull reports in time."""
    monkeypatch.setattr(pull, "TIME_MARGIN_SECONDS", 0.5)
    monkeypatch.setattr(pull, "WRITE_MARGIN_SECONDS", 0.5)
    server = serve(pop3_server("RETR 2"))
    target = ResolvedAccount("acme", "main", pop3_account(server.port))
    ends = time.monotonic() + DEADLINE + 0.5
    with Timed() as took:
        report = pull.pull_account(
            target,
            storage=storage,
            transcript=Transcript(),
            tls_context=TLS,
            seconds_left=lambda: ends - time.monotonic(),
        )
    assert took.seconds < DEADLINE + MARGIN
    assert report.fetched == 1 and report.error is not None and "did not finish" in report.error
    assert [storage.mail.get(mail_id).subject for mail_id in report.mail_ids] == ["one"]
    assert "DELE 2" not in server.heard and "QUIT" not in server.heard


# --- the OAuth2 token request: headers and body under one deadline -------------------------------


def token_endpoint(drip_at: str) -> Script:
    """A token endpoint that drips its answer's headers or its body."""

    def play(connection: socket.socket, heard: list[str]) -> None:
        for line in lines(connection, heard):
            if not line:
                break  # the form follows; it is never read
        if drip_at == "headers":
            connection.sendall(b"HTTP/1.1 200 OK\r\nX-Slow: ")
            drip(connection)
        connection.sendall(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n"
        )
        drip(connection, b'{"access_token": "')

    return play


def endpoint_auth(port: int) -> OAuth2Auth:
    return OAuth2Auth.model_validate(
        {
            "mode": "oauth2",
            "provider": "generic",
            "client_id": "cid",
            "client_secret": "s3cr3t-of-the-app",
            "refresh_token": "rt-of-the-user",
            "token_url": f"http://127.0.0.1:{port}/token",
            "scope": "mail",
        }
    )


@pytest.mark.parametrize("drip_at", ["headers", "body"])
def test_a_token_endpoint_dripping_its_answer_is_cut_off_at_the_callers_deadline(serve, drip_at):
    server = serve(token_endpoint(drip_at))
    with Timed() as took, pytest.raises(OAuth2Error) as caught:
        TokenBroker().access_token("t", "a", endpoint_auth(server.port), deadline=Deadline.after(DEADLINE))
    assert took.seconds < DEADLINE + MARGIN
    assert caught.value.temporary and "did not answer within the 1.5 s" in caught.value.message
    assert "s3cr3t" not in str(caught.value) and "rt-of-the-user" not in str(caught.value)


# --- the callers: each gives its sessions the time it has ----------------------------------------


def smtp_target(port: int) -> ResolvedAccount:
    config = mail_account(
        smtp={"host": "127.0.0.1", "port": port, "security": "none"}, timeout_seconds=PER_OPERATION
    )
    return ResolvedAccount("acme", "main", config)


def test_a_direct_send_to_a_dripping_server_is_deferred_before_the_callers_time_runs_out(serve, storage):
    server = serve(smtp_server("MAIL"))
    direct = DirectSend(
        storage=storage, tls_context=TLS, seconds_left=lambda: ANSWER_MARGIN_SECONDS + DEADLINE
    )
    with Timed() as took, pytest.raises(MailDeferred) as deferred:
        direct.send(
            smtp_target(server.port), SendRequest(to="x@example.test", body_text="x"), transcript=Transcript()
        )
    assert took.seconds < DEADLINE + MARGIN
    assert deferred.value.status == 202 and "did not finish" in deferred.value.message
    assert storage.mail.get(deferred.value.mail.id).status == MailStatus.DEFERRED


def test_an_account_check_against_dripping_servers_answers_within_its_time(serve, monkeypatch):
    monkeypatch.setattr(accounts, "CHECK_SECONDS", 2 * DEADLINE)
    pop3, smtp = serve(pop3_server("USER")), serve(smtp_server("greeting"))
    config = mail_account(
        pop3={"host": "127.0.0.1", "port": pop3.port, "security": "none"},
        smtp={"host": "127.0.0.1", "port": smtp.port, "security": "none"},
    )
    with Timed() as took:
        result = accounts.check_account("acme", "main", config, tls_context=TLS)
    assert took.seconds < 2 * DEADLINE + MARGIN
    assert not result["ok"]
    assert [result[protocol]["problem"] for protocol in ("pop3", "smtp")] == ["timeout", "timeout"]


# --- answers that are not POP3's: an account error, never a crash of the function ----------------


def test_a_stat_answer_without_its_numbers_is_an_account_error_of_the_check(serve):
    server = serve(pop3_server(answers={"STAT": b"+OK\r\n"}))
    config = mail_account(pop3={"host": "127.0.0.1", "port": server.port, "security": "none"})
    result = accounts.check_account("acme", "main", config, tls_context=TLS)
    assert result["pop3"]["ok"] is False and result["pop3"]["problem"] == "unexpected"


def test_a_listing_with_a_message_number_that_is_none_is_reported_by_the_pull(serve, storage):
    server = serve(pop3_server(answers={"UIDL": b"+OK\r\nseven uid-7\r\n.\r\n"}))
    report = pull.pull_account(
        ResolvedAccount("acme", "main", pop3_account(server.port)),
        storage=storage,
        transcript=Transcript(),
        tls_context=TLS,
    )
    assert report.fetched == 0 and report.error is not None and "ValueError" in report.error


def outbox_run(port: int, storage: Any, mail_ids: list[str]) -> outbox.Outbox:
    """An outbox run of DEADLINE seconds (after its margin) to the server on `port`, with
    `mail_ids` queued (the run's sleeps are instant: what passes is the servers' time)."""
    account = smtp_target(port).config
    for mail_id in mail_ids:
        queued = outgoing_mail(id=mail_id, status=MailStatus.QUEUED, to=["x@example.test"])
        storage.mail.put_new(queued.model_copy(update={"created_at": datetime.now(UTC)}))

    class ToTheServer(outbox.Outbox):
        def _config(self, mail: Mail) -> MailAccount:
            return account

        def _materialise(self, claimed: Any) -> bytes:
            return b"Subject: x\r\n\r\nx\r\n"

    return ToTheServer(
        storage=storage,
        directory=None,
        events=MemoryPublisher(),
        dead_letters=MemoryDeadLetters(),
        tls_context=TLS,
        seconds_left=lambda: outbox.SMTP_MARGIN_SECONDS + DEADLINE,
        sleep=lambda _: None,
    )


def test_an_outbox_run_against_a_dripping_server_defers_the_mail_before_its_time_runs_out(serve, storage):
    # The try had more than an answer's time (PER_OPERATION): the server's slowness counts, so
    # that it cannot hold the mail, and the account's outbox behind it, for ever.
    server = serve(smtp_server("MAIL"))
    with Timed() as took, outbox_run(server.port, storage, ["m1"]) as run:
        report = run.send(["m1"])
    assert took.seconds < DEADLINE + MARGIN
    (deferred,) = report.deferred
    assert deferred.status == MailStatus.DEFERRED and "did not finish" in deferred.attempt_log[0]["error"]
    assert deferred.attempts == 1


def test_an_outbox_run_whose_time_runs_out_leaves_the_rest_queued_with_their_attempts_untouched(
    serve, storage
):
    # Four mails take longer than the run's DEADLINE.
    server = serve(smtp_server("", slow_at="MAIL", slow=0.4))
    ids = [f"m{n}" for n in range(6)]
    with Timed() as took, outbox_run(server.port, storage, ids) as run:
        report = run.send(ids)
    assert took.seconds < DEADLINE + MARGIN
    assert report.deferred == report.failed == report.unknown == [] and report.released
    assert len(report.sent) + len(report.released) == len(ids)
    for mail_id in report.released:
        kept = storage.mail.get(mail_id)
        assert (kept.status, kept.attempts, kept.deferrals) == (MailStatus.QUEUED, 0, 0)
    # Given back, they are the next run's to claim.
    assert outbox.claim(storage, report.released[0], now=datetime.now(UTC)) is not None


def tries_of_the_run(
    deadline: Deadline, answers: list[Callable[[Deadline], None]]
) -> tuple[Any, list[float]]:
    """One mail through a run's Attempts whose sends fail as `answers` say, in turn (with a
    fake send: what is tested is the counting); answers its outcome and the pauses slept."""
    slept: list[float] = []

    def sleep(pause: float) -> None:
        slept.append(pause)
        time.sleep(min(pause, deadline.left() + 0.05))

    def send(raw: bytes, recipients: list[str]) -> Any:
        answers.pop(0)(deadline)

    attempts = Attempts(
        RetryPolicy(), IN_THE_BACKGROUND, lambda: datetime.now(UTC), sleep, Transcript(), deadline
    )
    mail = outgoing_mail(created_at=datetime.now(UTC))
    return attempts.deliver(mail, b"x", ["x@example.test"], send, mail_account()), slept


def busy(deadline: Deadline) -> None:
    raise MailServerError("451 try later", reply_code=451, reply="try later", temporary=True)


def cut_off(deadline: Deadline) -> None:
    time.sleep(max(deadline.left(), 0.0))
    raise MailServerError("the session did not finish", temporary=True, problem="timeout")


def test_a_short_retry_whose_pause_outlasts_the_runs_time_is_not_started():
    outcome, slept = tries_of_the_run(Deadline.after(DEADLINE), [busy, busy, busy])
    assert slept == [0.5]
    assert outcome.mail.status == MailStatus.DEFERRED and outcome.mail.attempts == 2


def test_a_retry_cut_off_by_the_runs_deadline_defers_the_mail_on_the_failure_before_it():
    outcome, slept = tries_of_the_run(Deadline.after(1.0), [busy, cut_off, cut_off])
    assert slept == [0.5]
    assert outcome.mail.status == MailStatus.DEFERRED and outcome.mail.attempts == 1
    assert outcome.mail.reply == "451 try later" and outcome.mail.deferrals == 1


def test_a_listing_larger_than_any_mailbox_is_refused_before_it_fills_the_memory(serve, monkeypatch):
    monkeypatch.setattr(pop3, "MAX_LISTING_BYTES", 1024 * 1024)
    endless = b"+OK\r\n" + b"".join(b"%d uid-%d\r\n" % (n, n) for n in range(1, 400_000)) + b".\r\n"  # 6 MB
    server = serve(pop3_server(answers={"UIDL": endless}))
    session = Pop3Session(pop3_account(server.port), transcript=Transcript(), tls_context=TLS)
    with pytest.raises(MailServerError, match="UIDL answer ran over 1 MB") as caught, session:
        session.listing()
    assert caught.value.problem == "server_reply" and not caught.value.temporary


# --- system mail: each trigger gives the session its function's time left -----------------------


class EndingSoon(LambdaContext):
    """A context with `seconds` left of the function's Timeout."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def get_remaining_time_in_millis(self) -> int:
        return int(self.seconds * 1000)


@pytest.fixture
def system_mail_app(serve, storage, monkeypatch) -> Any:
    """functions/system_mail/app.py whose system account is a server dripping its reply to MAIL."""
    server = serve(smtp_server("MAIL"))
    config = SystemMailConfig(
        host="127.0.0.1",
        port=server.port,
        security="none",
        from_address="noreply@example.test",
        timeout_seconds=PER_OPERATION,
    )
    mailer = SystemMailer(
        config=lambda: config,
        templates=MailTemplates(ROOT / "functions" / "system_mail" / "templates", blobs=storage.blobs),
        storage=storage,
        rate_limits=MemoryRateLimits(),
        tls_context=lambda: TLS,
    )
    root = system_mail.SystemMailRoot(mailer=mailer, decrypter=None, idempotency_table="idempotency")  # type: ignore[arg-type]
    with function_environment("SystemMailQueueFunction"):
        app = load_function("system_mail")
    reach.allow_networks(reach.parse_networks("127.0.0.0/8"))  # the app's init set the stack's networks
    monkeypatch.setattr(system_mail, "root", lambda templates: root)
    return app


def system_mails(storage: Any) -> list[Mail]:
    return storage.mail.list_team(SYSTEM_TEAM, MailQuery(), after=None, limit=10)[0]


@pytest.mark.usefixtures("idempotency_records")
def test_a_queued_system_mail_to_a_dripping_server_fails_its_message_before_the_function_times_out(
    system_mail_app, storage
):
    context = EndingSoon(ANSWER_MARGIN_SECONDS + system_mail_app.QUEUE_MARGIN_SECONDS + DEADLINE)
    # Its only record failed: the processor raises, and SQS delivers the message again.
    with Timed() as took, pytest.raises(BatchProcessingError, match="did not finish"):
        system_mail_app.on_queue(sqs_event("message-1"), context)
    assert took.seconds < DEADLINE + MARGIN
    (mail,) = system_mails(storage)
    assert mail.status == MailStatus.FAILED and "did not finish" in mail.attempt_log[-1]["error"]


def test_a_directly_invoked_system_mail_to_a_dripping_server_answers_failed_before_the_function_times_out(
    system_mail_app, storage
):
    context = EndingSoon(ANSWER_MARGIN_SECONDS + system_mail_app.DIRECT_MARGIN_SECONDS + DEADLINE)
    with Timed() as took:
        answer = system_mail_app.lambda_handler(REQUEST, context)
    assert took.seconds < DEADLINE + MARGIN
    (mail,) = system_mails(storage)
    assert answer["status"] == "failed" and "did not finish" in answer["error"]
    assert answer["mail_id"] == mail.id and mail.status == MailStatus.FAILED
