"""Turns what went wrong on the wire into a MailServerError a person can act on."""

from __future__ import annotations

import poplib
import smtplib
import socket
import ssl

from mailcore.errors import MailServerError
from mailcore.models import ServerEndpoint


def _where(protocol: str, endpoint: ServerEndpoint) -> str:
    return f"{protocol} server {endpoint.host}:{endpoint.port} ({endpoint.security.value})"


def network_failure(error: BaseException, protocol: str, endpoint: ServerEndpoint) -> MailServerError | None:
    """The failures that are the same for SMTP and POP3: DNS, refused, timeouts, TLS."""
    where = _where(protocol, endpoint)
    if isinstance(error, socket.gaierror):
        return MailServerError(
            f"{where}: the host name does not resolve (DNS); check the host", temporary=True
        )
    if isinstance(error, ConnectionRefusedError):
        return MailServerError(
            f"{where}: connection refused; check the host and port, and that the server runs",
            temporary=True,
        )
    if isinstance(error, TimeoutError | socket.timeout):
        return MailServerError(
            f"{where}: timed out; the port may be wrong or blocked by a firewall", temporary=True
        )
    if isinstance(error, ssl.SSLCertVerificationError):
        return MailServerError(
            f"{where}: the TLS certificate is not trusted ({error.verify_message}); "
            "check the host name matches the certificate"
        )
    if isinstance(error, ssl.SSLError):
        hint = (
            "the port may expect STARTTLS rather than implicit TLS (ssl)"
            if endpoint.security.value == "ssl"
            else "TLS negotiation failed"
        )
        return MailServerError(f"{where}: {hint} ({error.reason or error})")
    if isinstance(error, ConnectionError | EOFError | OSError):
        return MailServerError(f"{where}: the connection failed or was dropped ({error})", temporary=True)
    return None


def smtp_failure(error: BaseException, endpoint: ServerEndpoint, *, username: str = "") -> MailServerError:
    where = _where("SMTP", endpoint)
    if isinstance(error, smtplib.SMTPAuthenticationError):
        reply = _reply_text(error.smtp_error)
        return MailServerError(
            f"{where}: authentication failed for {username!r} ({error.smtp_code} {reply}); check the "
            "user name and password. Gmail needs an app password when 2-step verification is on; "
            "Office 365 needs SMTP AUTH enabled for the mailbox",
            reply_code=error.smtp_code,
            reply=reply,
        )
    if isinstance(error, smtplib.SMTPNotSupportedError):
        return MailServerError(
            f"{where}: the server does not offer what the account needs ({error}); "
            "check the security setting (starttls, ssl) and the port",
        )
    if isinstance(error, smtplib.SMTPServerDisconnected):
        return MailServerError(
            f"{where}: the server closed the connection ({error}); with implicit TLS on a "
            "STARTTLS port (or the reverse) servers often just hang up",
            temporary=True,
        )
    if isinstance(error, smtplib.SMTPRecipientsRefused):
        refusals = [(code, _reply_text(reply)) for code, reply in error.recipients.values()]
        summary = "; ".join(
            f"{rcpt}: {code} {_reply_text(reply)}" for rcpt, (code, reply) in error.recipients.items()
        )
        first_code = refusals[0][0] if refusals else None
        return MailServerError(
            f"{where}: every recipient was refused ({summary})",
            reply_code=first_code,
            reply=summary,
            temporary=all(400 <= code < 500 for code, _ in refusals),
        )
    if isinstance(error, smtplib.SMTPResponseException):
        reply = _reply_text(error.smtp_error)
        return MailServerError(
            f"{where}: the server answered {error.smtp_code} {reply}",
            reply_code=error.smtp_code,
            reply=reply,
            temporary=400 <= error.smtp_code < 500,
        )
    found = network_failure(error, "SMTP", endpoint)
    if found is not None:
        return found
    if isinstance(error, smtplib.SMTPException):
        return MailServerError(f"{where}: {error}", temporary=True)
    return MailServerError(f"{where}: unexpected failure ({type(error).__name__}: {error})")


def pop3_failure(error: BaseException, endpoint: ServerEndpoint, *, username: str = "") -> MailServerError:
    where = _where("POP3", endpoint)
    if isinstance(error, poplib.error_proto):
        reply = _reply_text(error.args[0] if error.args else b"")
        lowered = reply.lower()
        if "auth" in lowered or "password" in lowered or "login" in lowered:
            return MailServerError(
                f"{where}: login failed for {username!r} ({reply}); check the user name and password. "
                "Gmail wants the 'recent:' prefix on the user name and an app password, and POP "
                "enabled in its settings; Office 365 accepts only OAuth2 for POP3",
                reply=reply,
            )
        return MailServerError(f"{where}: the server answered {reply}", reply=reply, temporary=True)
    found = network_failure(error, "POP3", endpoint)
    if found is not None:
        return found
    return MailServerError(f"{where}: unexpected failure ({type(error).__name__}: {error})")


def _reply_text(reply: bytes | str) -> str:
    text = reply.decode("utf-8", "replace") if isinstance(reply, bytes) else str(reply)
    return " ".join(text.split())
