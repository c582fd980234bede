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
from pydantic import SecretStr

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


def replying(*replies: bytes):
    """A server script that sends `replies` in turn, reading one client line between two of them."""

    def script(reader, writer):
        for number, reply in enumerate(replies):
            if number:
                reader.readline()
            writer.write(reply)

    return script


# Read between the replies: EHLO, AUTH LOGIN <user> (smtplib sends the user name as initial
# response), the password, QUIT.
smtp_login_only_server = replying(
    b"220 fake ESMTP\r\n",
    b"250-fake\r\n250 AUTH LOGIN\r\n",
    b"334 UGFzc3dvcmQ6\r\n",
    b"235 2.7.0 ok\r\n",
    b"221 bye\r\n",
)


def test_an_smtp_auth_login_exchange_is_redacted():
    port = serve_once(smtp_login_only_server)
    transcript = Transcript()
    with SmtpSession(account(smtp_port=port), transcript=transcript, tls_context=client_tls_context()):
        pass
    text = "\n".join(transcript.lines)
    assert "C: AUTH LOGIN <redacted>" in text and "C: <redacted>" in text
    assert PASSWORD not in text and base64.b64encode(PASSWORD.encode()).decode() not in text


pop3_server = replying(b"+OK fake\r\n", b"+OK\r\n", b"-ERR [AUTH] Authentication failed.\r\n")


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


def encodings_of(user: str, password: str) -> list[str]:
    """The password as the client sends it: plain (POP3 PASS), AUTH LOGIN and AUTH PLAIN payloads."""
    plain = f"\0{user}\0{password}".encode()
    return [password, base64.b64encode(password.encode()).decode(), base64.b64encode(plain).decode()]


def smtp_echoing_auth_plain(reader, writer):
    writer.write(b"220 fake ESMTP\r\n")
    reader.readline()
    writer.write(b"250-fake\r\n250 AUTH PLAIN LOGIN\r\n")
    auth_line = reader.readline().rstrip(b"\r\n")
    writer.write(b"535 5.7.8 bad credentials in <" + auth_line + b"> (PASS " + PASSWORD.encode() + b")\r\n")


def test_credentials_an_smtp_server_echoes_in_its_error_are_masked_in_every_encoding():
    port = serve_once(smtp_echoing_auth_plain)
    transcript = Transcript()
    with pytest.raises(MailServerError) as caught:
        SmtpSession(account(smtp_port=port), transcript=transcript, tls_context=client_tls_context()).open()
    shown = "\n".join([*transcript.lines, caught.value.message, str(caught.value), caught.value.reply or ""])
    assert "<redacted>" in caught.value.message
    for secret in encodings_of("a@example.test", PASSWORD):
        assert secret not in shown


def test_a_failed_send_stores_no_echoed_credentials_in_mail_reply_or_error(storage):
    from mailcore.models import SendRequest
    from mailcore.services.send import DirectSend, MailSendFailed
    from mailcore.teams import ResolvedAccount

    port = serve_once(smtp_echoing_auth_plain)
    with pytest.raises(MailSendFailed) as caught:
        DirectSend(storage=storage, tls_context=client_tls_context()).send(
            ResolvedAccount("t", "desk", account(smtp_port=port)),
            SendRequest(to="b@example.test", body_text="x"),
            transcript=Transcript(),
        )
    stored = storage.mail.get(caught.value.mail.id)
    shown = f"{stored.reply} {stored.error} {caught.value.message}"
    assert stored.error and "<redacted>" in shown
    for secret in encodings_of("a@example.test", PASSWORD):
        assert secret not in shown


def pop3_echoing_pass(reader, writer):
    writer.write(b"+OK fake\r\n")
    reader.readline()
    writer.write(b"+OK\r\n")
    pass_line = reader.readline().rstrip(b"\r\n")
    writer.write(b"-ERR [AUTH] refused: " + pass_line + b"\r\n")


def test_a_password_a_pop3_server_echoes_reaches_no_pull_report_state_or_diagnosis(storage):
    from mailcore.services.pull import pull_account
    from mailcore.teams import ResolvedAccount

    port = serve_once(pop3_echoing_pass)
    report = pull_account(
        ResolvedAccount("t", "desk", account(pop3_port=port)),
        storage=storage,
        transcript=Transcript(),
        tls_context=client_tls_context(),
    )
    state = storage.pull_state.get("t", "desk")
    assert report.error and "<redacted>" in report.error
    assert PASSWORD not in f"{report.model_dump()} {state}"


NON_ASCII_PASSWORD = "пароль-密码-ñ"


def smtp_checking_utf8_plain(reader, writer):
    writer.write(b"220 fake ESMTP\r\n")
    reader.readline()
    writer.write(b"250-fake\r\n250 AUTH PLAIN\r\n")
    payload = reader.readline().split()[-1]
    ok = base64.b64decode(payload) == f"\0a@example.test\0{NON_ASCII_PASSWORD}".encode()
    writer.write(b"235 2.7.0 ok\r\n" if ok else b"535 5.7.8 no\r\n")
    reader.readline()
    writer.write(b"221 bye\r\n")


def test_a_password_in_any_script_logs_in_with_utf8_auth_plain():
    port = serve_once(smtp_checking_utf8_plain)
    config = account(smtp_port=port).model_copy(update={"mail_password": SecretStr(NON_ASCII_PASSWORD)})
    transcript = Transcript()
    with SmtpSession(config, transcript=transcript, tls_context=client_tls_context()):
        pass
    assert "S: 235 2.7.0 ok" in transcript.lines
    assert not any(character in "\n".join(transcript.lines) for character in "пароль密码ñ")


def test_a_server_text_cut_inside_an_echoed_password_shows_no_part_of_it():
    from mailcore.errors import SERVER_TEXT_BYTES, MailServerError

    password = "Correct-Horse-Battery-Staple-42"
    # The server's error echoes the password right where the error is cut to its size.
    echoed = "x" * (SERVER_TEXT_BYTES - 20) + " you said " + password + " and more"
    failure = Transcript([password]).redact_failure(MailServerError("refused", reply=echoed))
    assert failure.reply is not None and failure.reply.endswith("<redacted> […]")
    assert not any(password[:n] in failure.reply for n in range(4, len(password) + 1))
