"""SMTP sessions of a mail account: implicit TLS, STARTTLS or plain, AUTH, a redacted transcript."""

from __future__ import annotations

import base64
import contextlib
import smtplib
import socket
from dataclasses import dataclass, field
from email.utils import parseaddr
from typing import Any, Protocol

from pydantic import SecretStr

from mailcore.errors import DeliveryUnknown
from mailcore.models import Security, ServerEndpoint
from mailcore.oauth2 import describe_sasl_error, xoauth2_payload
from mailcore.protocols import reach
from mailcore.protocols.deadline import Deadline, bound, reader, send_all
from mailcore.protocols.diagnose import smtp_failure
from mailcore.protocols.session import AccountSession
from mailcore.protocols.transcript import REDACTED, Transcript
from mailcore.textcut import cut_to_bytes

# smtplib reads a multi-line reply until a line without "-", however many lines come (8 KB each):
# a broken or hostile server could fill the function's memory. Real replies (EHLO's list, a
# rejection's explanation) are a few KB.
MAX_REPLY_BYTES = 64 * 1024


class _BoundedReplies:
    """The server's side of the socket, refusing a reply longer than MAX_REPLY_BYTES."""

    def __init__(self, file: Any) -> None:
        self.file = file
        self.read_in_reply = 0

    def start_reply(self) -> None:
        self.read_in_reply = 0

    def readline(self, limit: int = -1) -> bytes:
        line: bytes = self.file.readline(limit)
        self.read_in_reply += len(line)
        if self.read_in_reply > MAX_REPLY_BYTES:
            # smtplib turns an OSError into "Connection unexpectedly closed" and closes the socket.
            raise OSError(f"the server's reply ran over {MAX_REPLY_BYTES // 1024} KB")
        return line

    def close(self) -> None:
        self.file.close()


class _Recording:
    """Records every command and reply; AUTH payloads and message data never enter the transcript.
    Every read and write is under the session's deadline (protocols/deadline.py)."""

    _last_code: int = 0
    file: Any = None
    # Set once the message's last byte (the final "." of DATA) is written; an error after that
    # leaves the mail's fate unknown.
    message_written: bool = False

    def __init__(
        self, *args: Any, transcript: Transcript, deadline: Deadline | None = None, **kwargs: Any
    ) -> None:
        # Set before smtplib's constructor connects, so the banner is recorded (and bounded) too.
        self.transcript = transcript
        self.deadline = deadline or Deadline.never()
        super().__init__(*args, **kwargs)

    def send(self, s: Any) -> None:
        raw = s.encode("ascii", "replace") if isinstance(s, str) else s
        if self._last_code == 354:
            # smtplib sends the whole message in one call after DATA's 354.
            self.transcript.client(f"<message, {len(raw)} bytes>")
        else:
            for line in raw.decode("utf-8", "replace").rstrip("\r\n").split("\r\n"):
                words = line.split(" ", 2)
                if words[0].upper() == "AUTH" and len(words) > 2:
                    line = f"{words[0]} {words[1]} {REDACTED}"
                elif self._last_code == 334:
                    line = REDACTED
                self.transcript.client(line)
        self._send_bounded(s)
        if self._last_code == 354:
            self.message_written = True

    def _send_bounded(self, s: Any) -> None:
        """smtplib's send, under the deadline."""
        sock = getattr(self, "sock", None)
        if not sock:
            raise smtplib.SMTPServerDisconnected("please run connect() first")
        raw = s.encode(self.command_encoding) if isinstance(s, str) else s  # type: ignore[attr-defined]
        try:
            send_all(sock, raw, self.deadline, self.timeout)  # type: ignore[attr-defined]
        except OSError:
            self.close()  # type: ignore[attr-defined]
            raise smtplib.SMTPServerDisconnected("Server not connected") from None

    def getreply(self) -> tuple[int, bytes]:
        sock = getattr(self, "sock", None)
        if getattr(self, "file", None) is None and sock is not None:
            # Made again after STARTTLS (smtplib drops its file then), so always bounded.
            self.file = _BoundedReplies(reader(sock, self.deadline, self.timeout))  # type: ignore[attr-defined]
        if isinstance(self.file, _BoundedReplies):
            self.file.start_reply()
        code, message = super().getreply()  # type: ignore[misc]
        self._last_code = code
        for line in message.decode("utf-8", "replace").splitlines() or [""]:
            self.transcript.server(f"{code} {line}")
        return code, message


class _ReachingSMTP(smtplib.SMTP):
    """Connects through protocols/reach.py. SMTP_SSL's _get_socket wraps what this one returns, and
    both it and STARTTLS verify the certificate against the host name smtplib keeps."""

    deadline = Deadline.never()

    def _get_socket(self, host: str, port: int, timeout: float) -> socket.socket:
        sock = reach.connect(host, port, timeout, self.source_address, self.deadline)  # type: ignore[arg-type]
        bound(sock, self.deadline, timeout)  # SMTP_SSL's TLS handshake comes next
        return sock


class RecordingSMTP(_Recording, _ReachingSMTP):
    pass


# In this order, SMTP_SSL's _get_socket comes before (and calls) _ReachingSMTP's.
class RecordingSMTPSSL(_Recording, smtplib.SMTP_SSL, _ReachingSMTP):
    pass


@dataclass
class SmtpDelivery:
    """What the server said to one message: who was refused (with the reply) and its final answer."""

    refused: dict[str, str] = field(default_factory=dict)
    reply: str = ""


class SmtpAccount(Protocol):
    """What an SMTP session needs of an account: a team's MailAccount or the system mail's."""

    @property
    def mail_from(self) -> str: ...
    @property
    def smtp(self) -> ServerEndpoint: ...
    @property
    def smtp_login(self) -> str: ...
    @property
    def mail_password(self) -> SecretStr: ...
    @property
    def timeout_seconds(self) -> float: ...


def envelope_sender(account: SmtpAccount) -> str:
    return parseaddr(account.mail_from)[1]


def ehlo_name(account: SmtpAccount) -> str:
    # Never let smtplib ask DNS for this host's name (socket.getfqdn): a Lambda has none worth saying.
    return envelope_sender(account).rpartition("@")[2] or "localhost"


class SmtpSession(AccountSession[SmtpAccount]):
    """One authenticated SMTP connection of an account; sends any number of messages."""

    _smtp: smtplib.SMTP | None = None

    @property
    def login(self) -> str:
        return self.account.smtp_login

    def __exit__(self, *exc: object) -> None:
        self.close()

    def open(self) -> None:
        if self._smtp is not None:
            return  # opened already (see services/credentials.open_session)
        endpoint = self.account.smtp
        self.transcript.note(f"connecting to {endpoint.host}:{endpoint.port} ({endpoint.security.value})")
        smtp: smtplib.SMTP | None = None
        options: dict[str, Any] = {
            "local_hostname": ehlo_name(self.account),
            "timeout": self.account.timeout_seconds,
            "transcript": self.transcript,
            "source_address": self.source_address,
            "deadline": self.deadline,
        }
        try:
            if endpoint.security is Security.SSL:
                smtp = RecordingSMTPSSL(endpoint.host, endpoint.port, context=self.tls_context, **options)
            else:
                smtp = RecordingSMTP(endpoint.host, endpoint.port, **options)
            smtp.ehlo()
            if endpoint.security is Security.STARTTLS:
                smtp.starttls(context=self.tls_context)
                smtp.ehlo()
            if self.access_token:
                smtp.auth("XOAUTH2", self._xoauth2, initial_response_ok=True)
            else:
                password = self.account.mail_password.get_secret_value()
                if password:
                    password_login(smtp, self.account.smtp_login, password)
        except Exception as error:
            if smtp is not None:
                _close_quietly(smtp)
            raise self._failure(error) from None
        self._smtp = smtp

    def _xoauth2(self, challenge: bytes | None = None) -> str:
        if challenge is None:
            assert self.access_token is not None
            return xoauth2_payload(self.account.smtp_login, self.access_token)
        # A challenge after the initial response is the server's error (base64 JSON, already decoded
        # by smtplib); RFC 7628 wants an empty answer, after which the server sends its 535.
        self._sasl_error = describe_sasl_error(base64.b64encode(challenge)) or "unreadable"
        return ""

    def _failure(self, error: BaseException) -> Exception:
        return self.transcript.redact_failure(self._diagnosed(self.out_of_time(error)))

    def _diagnosed(self, error: BaseException) -> Exception:
        return smtp_failure(
            error,
            self.account.smtp,
            username=self.account.smtp_login,
            mail_from=self.account.mail_from,
            oauth2=bool(self.access_token),
            sasl_error=self._sasl_error,
        )

    def send(self, message: bytes, recipients: list[str]) -> SmtpDelivery:
        """Sends one message; raises MailServerError when the server refuses it as a whole."""
        if self._smtp is None:
            self.open()
        assert self._smtp is not None
        smtp = self._smtp
        smtp.message_written = False  # type: ignore[attr-defined]
        try:
            refused = smtp.sendmail(envelope_sender(self.account), recipients, message)
        except Exception as error:
            answered = isinstance(error, smtplib.SMTPResponseException | smtplib.SMTPRecipientsRefused)
            if not answered or getattr(error, "smtp_code", 0) == 421:
                # The connection is in an unknown state: drop it; the next send opens a new one.
                _close_quietly(smtp)
                self._smtp = None
            failure = self._failure(error)
            if not answered and getattr(smtp, "message_written", False):
                raise DeliveryUnknown(
                    f"{failure}; the whole message was sent before the server answered, so "
                    "it may have been delivered",
                ) from None
            raise failure from None
        return SmtpDelivery(
            refused={
                rcpt: refused_reply(f"{code} {self.transcript.redact(_one_line(reply))}")
                for rcpt, (code, reply) in refused.items()
            },
            reply=self.transcript.last_server_line() or "",
        )

    def close(self) -> None:
        if self._smtp is not None:
            try:
                self._smtp.quit()
            except Exception:
                _close_quietly(self._smtp)
            self._smtp = None


def _base64(text: str) -> str:
    return base64.b64encode(text.encode("utf-8")).decode("ascii")


def password_login(smtp: smtplib.SMTP, user: str, password: str) -> None:
    """AUTH PLAIN (else LOGIN) with the credentials in UTF-8, as RFC 4616 wants: smtplib's login()
    encodes them as ASCII, so a password in another script could not log in at all, and its
    UnicodeEncodeError named the password's character. CRAM-MD5 alone is left to smtplib."""
    smtp.ehlo_or_helo_if_needed()
    if not smtp.has_extn("auth"):
        raise smtplib.SMTPNotSupportedError("SMTP AUTH extension not supported by server.")
    offered = smtp.esmtp_features["auth"].upper().split()
    if "PLAIN" in offered:
        code, reply = smtp.docmd("AUTH", "PLAIN " + _base64(f"\0{user}\0{password}"))
    elif "LOGIN" in offered:
        code, reply = smtp.docmd("AUTH", "LOGIN " + _base64(user))
        if code == 334:
            code, reply = smtp.docmd(_base64(password))
    else:
        smtp.login(user, password)
        return
    if code not in (235, 503):  # 503: already authenticated
        raise smtplib.SMTPAuthenticationError(code, reply)


def _close_quietly(smtp: Any) -> None:
    with contextlib.suppress(Exception):
        smtp.close()


# A refused recipient's reply as kept on the mail (up to 300 recipients share one item; a real
# refusal, "550 5.1.1 <addr>: Recipient address rejected: User unknown", is under 150 bytes).
REFUSED_REPLY_BYTES = 200


def _one_line(reply: bytes | str) -> str:
    text = reply.decode("utf-8", "replace") if isinstance(reply, bytes) else reply
    return " ".join(text.split())


def refused_reply(reply: bytes | str) -> str:
    """A refused recipient's reply on one line, cut to REFUSED_REPLY_BYTES (after its secrets
    are masked: a cut first could leave the beginning of one that no mask matches)."""
    return cut_to_bytes(_one_line(reply), REFUSED_REPLY_BYTES)
