"""Microsoft 365 and Gmail failures in words a person can act on, and the retry of a busy server."""

from __future__ import annotations

import smtplib
import socket
import threading
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from mailcore.limits import AccountLimiter, RateLimited
from mailcore.models import Direction, Mail, MailAccount, MailStatus, SendRequest, ServerEndpoint
from mailcore.protocols.diagnose import from_rewritten_warning, smtp_failure
from mailcore.protocols.transcript import Transcript
from mailcore.services.send import DirectSend, MailDeferred, MailSendFailed
from mailcore.teams import ResolvedAccount

from tests.fakes import MemoryLimitCounters, MemoryPublisher, memory_storage
from tests.support import accepted

ENDPOINT = ServerEndpoint(host="smtp.office365.com", port=587, security="starttls")


def failure(code: int, reply: str, **kwargs):
    return smtp_failure(smtplib.SMTPResponseException(code, reply.encode()), ENDPOINT, **kwargs)


def test_smtp_auth_disabled_for_the_tenant_or_mailbox_says_how_to_enable_it():
    error = failure(
        535,
        "5.7.139 Authentication unsuccessful, SmtpClientAuthentication is disabled for the Tenant.",
        oauth2=True,
    )
    assert "SMTP AUTH is disabled for the tenant or for this mailbox" in error.message
    assert "SmtpClientAuthenticationDisabled" in error.message and not error.temporary


def test_basic_auth_blocked_tells_to_switch_to_oauth2():
    error = failure(
        550,
        "5.7.30 Basic authentication is not supported for Client Submission.",
        username="desk@contoso.com",
    )
    assert "switch the account to auth mode oauth2" in error.message


def test_send_as_denied_is_permanent_and_names_the_login_and_mail_from():
    error = failure(
        554,
        "5.2.252 SendAsDenied; agent@contoso.com not allowed to send as desk@contoso.com",
        username="agent@contoso.com",
        mail_from="Desk <desk@contoso.com>",
    )
    assert error.temporary is False
    assert "'agent@contoso.com' may not send as 'Desk <desk@contoso.com>'" in error.message
    assert "Send As" in error.message


@pytest.mark.parametrize(
    ("code", "reply"),
    [(432, "4.3.2 STOREDRV.ClientSubmit; sender thread limit exceeded"), (421, "4.7.0 Try later")],
)
def test_a_busy_server_is_a_temporary_failure(code, reply):
    error = failure(code, reply)
    assert error.temporary and "retry later" in error.message


def test_a_refused_xoauth2_login_shows_the_servers_decoded_status_not_the_token():
    error = smtp_failure(
        smtplib.SMTPAuthenticationError(535, b"5.7.8 Username and Password not accepted"),
        ENDPOINT,
        username="desk@gmail.com",
        oauth2=True,
        sasl_error="status 400, schemes Bearer, scope https://mail.google.com/",
    )
    assert "OAuth2 (XOAUTH2) login of 'desk@gmail.com' was refused" in error.message
    assert "status 400" in error.message


def gmail_account(mail_from: str) -> MailAccount:
    return MailAccount.model_validate(
        {
            "mail_from": mail_from,
            "mail_username": "agent@gmail.com",
            "smtp": {"host": "smtp.gmail.com", "port": 465, "security": "ssl"},
            "pop3": {
                "host": "pop.gmail.com",
                "port": 995,
                "security": "ssl",
                "username": "recent:agent@gmail.com",
            },
            "auth": {
                "mode": "oauth2",
                "provider": "google",
                "client_id": "c",
                "client_secret": "s",
                "refresh_token": "r",
            },
        }
    )


def copy(from_: str, message_id: str) -> Mail:
    now = datetime.now(UTC)
    return Mail(
        id="m",
        team="t",
        account="a",
        direction=Direction.IN,
        status=MailStatus.RECEIVED,
        created_at=now,
        message_id=message_id,
        **{"from": from_},
    )


def test_gmail_rewriting_from_to_the_login_is_detected_on_the_sent_copy():
    warning = from_rewritten_warning(
        gmail_account("Desk <desk@example.com>"), copy("Agent <agent@gmail.com>", "<abc@example.com>")
    )
    assert warning is not None and "verified 'Send mail as' alias" in warning


def test_a_sent_copy_with_the_intended_from_gives_no_warning():
    account = gmail_account("Desk <desk@example.com>")
    assert from_rewritten_warning(account, copy("Desk <desk@example.com>", "<abc@example.com>")) is None


def test_mail_from_others_to_the_login_gives_no_warning():
    account = gmail_account("Desk <desk@example.com>")
    assert from_rewritten_warning(account, copy("Agent <agent@gmail.com>", "<x@mail.gmail.com>")) is None


class BusyOnceSmtpServer:
    """A fault injector, not a mail server: the first connections get `421` as their banner, later
    ones a minimal SMTP dialogue that accepts one message."""

    def __init__(
        self,
        busy_connections: int,
        banner: bytes = b"421 4.3.2 Service not available\r\n",
        *,
        drop_after_data: bool = False,
    ) -> None:
        self.busy_left = busy_connections
        # Drops the connection after the message's final dot, before any reply.
        self.drop_after_data = drop_after_data
        self.banner = banner
        self.connections = 0
        self.accepted = 0
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        for conn in accepted(self.sock):
            with conn:
                self.connections += 1
                if self.busy_left > 0:
                    self.busy_left -= 1
                    conn.sendall(self.banner)
                    continue
                self._dialogue(conn)

    def _dialogue(self, conn: socket.socket) -> None:
        reader = conn.makefile("rb")
        conn.sendall(b"220 fake ESMTP\r\n")
        while line := reader.readline():
            verb = line[:4].upper()
            if verb == b"DATA":
                conn.sendall(b"354 go\r\n")
                while reader.readline() not in (b".\r\n", b""):
                    pass
                self.accepted += 1
                if self.drop_after_data:
                    return
                conn.sendall(b"250 queued\r\n")
            elif verb == b"QUIT":
                conn.sendall(b"221 bye\r\n")
                return
            else:
                conn.sendall(b"250 ok\r\n")

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def busy_server() -> Iterator[BusyOnceSmtpServer]:
    server = BusyOnceSmtpServer(busy_connections=1)
    yield server
    server.close()


def target_on(port: int) -> ResolvedAccount:
    account = MailAccount.model_validate(
        {
            "mail_from": "desk@example.test",
            "mail_username": "desk@example.test",
            "mail_password": "",
            "smtp": {"host": "127.0.0.1", "port": port, "security": "none"},
            "pop3": {"host": "127.0.0.1", "port": 1, "security": "none"},
        }
    )
    return ResolvedAccount("team", "desk", account)


def test_a_busy_server_is_tried_again_after_a_pause_and_the_mail_goes_out(busy_server):
    pauses: list[float] = []
    direct = DirectSend(storage=memory_storage(), tls_context=None, sleep=pauses.append)  # type: ignore[arg-type]
    mail = direct.send(
        target_on(busy_server.port), SendRequest(to="x@example.test", body_text="x"), transcript=Transcript()
    )
    assert mail.status == MailStatus.SENT
    assert busy_server.accepted == 1 and pauses == [1.0]


def test_a_server_busy_on_every_try_hands_the_mail_to_the_outbox_deferred(storage):
    server = BusyOnceSmtpServer(busy_connections=10)
    try:
        with pytest.raises(MailDeferred) as deferred:
            DirectSend(storage=storage, tls_context=None, sleep=lambda _: None).send(  # type: ignore[arg-type]
                target_on(server.port),
                SendRequest(to="x@example.test", body_text="x"),
                transcript=Transcript(),
            )
    finally:
        server.close()
    mail = deferred.value.mail
    assert deferred.value.status == 202 and deferred.value.temporary
    assert mail.status == MailStatus.DEFERRED and mail.next_attempt_at is not None
    assert storage.mail.get(mail.id).status == MailStatus.DEFERRED
    assert [entry["reply"][:3] for entry in mail.attempt_log] == ["421", "421", "421"]
    assert server.connections == 3


def test_a_direct_send_whose_connection_drops_after_the_message_is_unknown_and_never_sent_again():
    server = BusyOnceSmtpServer(busy_connections=0, drop_after_data=True)
    storage, events = memory_storage(), MemoryPublisher()
    try:
        with pytest.raises(MailSendFailed) as failed:
            DirectSend(storage=storage, tls_context=None, events=events).send(  # type: ignore[arg-type]
                target_on(server.port),
                SendRequest(to="x@example.test", body_text="x"),
                transcript=Transcript(),
            )
    finally:
        server.close()
    stored = storage.mail.get(failed.value.mail.id)
    assert stored.status == MailStatus.UNKNOWN and "may have been delivered" in stored.error
    assert server.accepted == 1
    assert [event.detail()["status"] for event in events.events] == ["unknown"]


def test_a_direct_send_finding_no_free_connection_slot_is_refused_429_and_stores_nothing():
    free = target_on(1)
    target = ResolvedAccount(free.team, free.name, free.config.model_copy(update={"max_connections": 1}))
    limiter = AccountLimiter(MemoryLimitCounters())
    storage = memory_storage()
    with limiter.connection(target), pytest.raises(RateLimited):
        DirectSend(storage=storage, tls_context=None, limiter=limiter).send(  # type: ignore[arg-type]
            target, SendRequest(to="x@example.test", body_text="x"), transcript=Transcript()
        )
    assert storage.mail.items == {} and storage.blobs.objects == {}


def test_a_direct_team_mail_past_its_maximum_age_fails_and_is_dead_lettered_like_a_queued_one():
    from tests.fakes import MemoryDeadLetters

    server = BusyOnceSmtpServer(busy_connections=10)
    short = target_on(server.port)
    # 36 s of trying: the first deferral (1 minute) would fall after it.
    account = short.config.model_copy(update={"retry_max_age_hours": 0.01})
    dead_letters = MemoryDeadLetters()
    direct = DirectSend(
        storage=memory_storage(), tls_context=None, dead_letters=dead_letters, sleep=lambda _: None
    )  # type: ignore[arg-type]
    try:
        with pytest.raises(MailSendFailed) as failed:
            direct.send(
                ResolvedAccount(short.team, short.name, account),
                SendRequest(to="x@example.test", body_text="x"),
                transcript=Transcript(),
            )
    finally:
        server.close()
    assert failed.value.status == 502 and failed.value.mail.status == MailStatus.FAILED
    assert [letter["mail_id"] for letter in dead_letters.bodies] == [failed.value.mail.id]
