"""Protocol transcripts never carry credentials, whatever the AUTH mechanism (fake servers)."""

import base64
import socket
import threading

import pytest
from mailcore.errors import MailServerError
from mailcore.models import MailAccount
from mailcore.protocols.pop3 import Pop3Session
from mailcore.protocols.smtp import SmtpSession
from mailcore.protocols.tls import client_tls_context
from mailcore.protocols.transcript import Transcript

PASSWORD = "Tr0ub4dor&3-secret"


def serve_once(script):
    """A one-connection line server on loopback; `script(reader, writer)` talks the protocol."""
    listener = socket.create_server(("127.0.0.1", 0))

    def run():
        connection, _ = listener.accept()
        with (
            connection,
            connection.makefile("rb") as reader,
            connection.makefile("wb", buffering=0) as writer,
        ):
            script(reader, writer)
        listener.close()

    threading.Thread(target=run, daemon=True).start()
    return listener.getsockname()[1]


def account(smtp_port=25, pop3_port=110, smtp_security="none"):
    return MailAccount.model_validate(
        {
            "mail_from": "a@example.test",
            "mail_username": "a@example.test",
            "mail_password": PASSWORD,
            "smtp": {"host": "127.0.0.1", "port": smtp_port, "security": smtp_security},
            "pop3": {"host": "127.0.0.1", "port": pop3_port, "security": "none"},
            "timeout_seconds": 5,
        }
    )


def smtp_login_only_server(reader, writer):
    writer.write(b"220 fake ESMTP\r\n")
    reader.readline()
    writer.write(b"250-fake\r\n250 AUTH LOGIN\r\n")
    reader.readline()  # AUTH LOGIN <user> (smtplib sends the user name as initial response)
    writer.write(b"334 UGFzc3dvcmQ6\r\n")
    reader.readline()  # the password
    writer.write(b"235 2.7.0 ok\r\n")
    reader.readline()
    writer.write(b"221 bye\r\n")


def test_an_smtp_auth_login_exchange_is_redacted():
    port = serve_once(smtp_login_only_server)
    transcript = Transcript()
    with SmtpSession(account(smtp_port=port), transcript=transcript, tls_context=client_tls_context()):
        pass
    text = "\n".join(transcript.lines)
    assert "C: AUTH LOGIN <redacted>" in text and "C: <redacted>" in text
    assert PASSWORD not in text and base64.b64encode(PASSWORD.encode()).decode() not in text


def pop3_server(reader, writer):
    writer.write(b"+OK fake\r\n")
    reader.readline()
    writer.write(b"+OK\r\n")
    reader.readline()
    writer.write(b"-ERR [AUTH] Authentication failed.\r\n")


def test_a_failed_pop3_login_is_diagnosed_without_the_password():
    port = serve_once(pop3_server)
    transcript = Transcript()
    with pytest.raises(MailServerError) as caught:
        Pop3Session(account(pop3_port=port), transcript=transcript, tls_context=client_tls_context()).open()
    assert "login failed" in caught.value.message
    assert "C: PASS <redacted>" in transcript.lines
    assert PASSWORD not in caught.value.message and PASSWORD not in "\n".join(transcript.lines)


def test_a_password_echoed_by_a_server_is_still_masked():
    transcript = Transcript([PASSWORD])
    transcript.server(f"-ERR unknown command PASS {PASSWORD}")
    assert PASSWORD not in transcript.lines[0]


def test_implicit_tls_against_a_plain_server_is_explained():
    def plain_banner(reader, writer):
        writer.write(b"220 plain ESMTP\r\n")

    port = serve_once(plain_banner)
    with pytest.raises(MailServerError) as caught:
        SmtpSession(
            account(smtp_port=port, smtp_security="ssl"),
            transcript=Transcript(),
            tls_context=client_tls_context(),
        ).open()
    assert "STARTTLS" in caught.value.message or "TLS" in caught.value.message
