"""Turns what went wrong on the wire into a MailServerError a person can act on.

Each error carries a `problem` word (below) and a message saying what to check. The check tool
(`mail-check`) and the API's `?debug=true` answer show the same `diagnosis()`.

Problems: dns, refused, timeout, tls_certificate, wrong_tls_mode, tls_failed, tls_not_offered,
wrong_port, auth_failed, auth_not_offered, pop3_disabled, connection_dropped, recipients_refused,
server_reply, unexpected.
"""

from __future__ import annotations

import poplib
import smtplib
import socket
import ssl

from mailcore.errors import MailServerError
from mailcore.models import Security, ServerEndpoint

# Ports whose service is known: a mismatch with the protocol or the security mode is worth saying.
IMPLICIT_TLS_PORTS = {465: "SMTP", 993: "IMAP", 995: "POP3"}
PLAIN_PORTS = {25: "SMTP", 110: "POP3", 143: "IMAP", 587: "SMTP"}
USUAL_PORTS = {"SMTP": "587 (starttls) or 465 (ssl)", "POP3": "995 (ssl) or 110 (starttls)"}


def diagnosis(error: MailServerError) -> dict[str, str]:
    """The diagnosis of a failure as the check tool prints it and the API answers it."""
    return {"problem": error.problem, "message": error.message}


def _where(protocol: str, endpoint: ServerEndpoint) -> str:
    return f"{protocol} server {endpoint.host}:{endpoint.port} ({endpoint.security.value})"


def _mode_hint(protocol: str, endpoint: ServerEndpoint) -> str:
    if endpoint.security is not Security.SSL and endpoint.port in IMPLICIT_TLS_PORTS:
        return f"; port {endpoint.port} usually wants implicit TLS: set security to ssl"
    if endpoint.security is Security.SSL and endpoint.port in PLAIN_PORTS:
        return f"; port {endpoint.port} usually wants starttls, not ssl"
    return f"; {protocol} is usually on port {USUAL_PORTS.get(protocol, '?')}"


def network_failure(error: BaseException, protocol: str, endpoint: ServerEndpoint) -> MailServerError | None:
    """The failures that are the same for SMTP and POP3: DNS, refused, timeouts, TLS."""
    where = _where(protocol, endpoint)
    if isinstance(error, socket.gaierror):
        return MailServerError(
            f"{where}: the host name does not resolve (DNS); check the host",
            temporary=True,
            problem="dns",
        )
    if isinstance(error, ConnectionRefusedError):
        return MailServerError(
            f"{where}: connection refused; check the host and port, and that the server runs",
            temporary=True,
            problem="refused",
        )
    if isinstance(error, TimeoutError | socket.timeout):
        return MailServerError(
            f"{where}: timed out; the port may be wrong or blocked by a firewall"
            + _mode_hint(protocol, endpoint),
            temporary=True,
            problem="timeout",
        )
    if isinstance(error, ssl.SSLCertVerificationError):
        return MailServerError(
            f"{where}: the TLS certificate is not trusted ({error.verify_message}); "
            "check the host name matches the certificate",
            problem="tls_certificate",
        )
    if isinstance(error, ssl.SSLError):
        if endpoint.security is Security.SSL and error.reason in {
            "WRONG_VERSION_NUMBER",
            "RECORD_LAYER_FAILURE",
        }:
            return MailServerError(
                f"{where}: the server does not speak TLS on this port ({error.reason}); "
                "it probably wants starttls (or none) rather than implicit TLS (ssl)",
                problem="wrong_tls_mode",
            )
        hint = (
            "the port may expect STARTTLS rather than implicit TLS (ssl)"
            if endpoint.security is Security.SSL
            else "TLS negotiation failed"
        )
        return MailServerError(f"{where}: {hint} ({error.reason or error})", problem="tls_failed")
    if isinstance(error, ConnectionError | EOFError | OSError):
        return MailServerError(
            f"{where}: the connection failed or was dropped ({error})" + _mode_hint(protocol, endpoint),
            temporary=True,
            problem="connection_dropped",
        )
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
            problem="auth_failed",
        )
    if isinstance(error, smtplib.SMTPNotSupportedError):
        text = str(error)
        if "STARTTLS" in text:
            return MailServerError(
                f"{where}: TLS expected but not offered: the server does not advertise STARTTLS, so "
                "the login would go unencrypted. Check the port (587 offers STARTTLS, 465 wants "
                "security ssl); use security none only on a network you trust",
                problem="tls_not_offered",
            )
        if "AUTH" in text:
            return MailServerError(
                f"{where}: the server offers no login (SMTP AUTH) here; many offer it only after "
                "STARTTLS or on port 587. Office 365 needs SMTP AUTH enabled for the mailbox",
                problem="auth_not_offered",
            )
        return MailServerError(
            f"{where}: the server does not offer what the account needs ({error}); "
            "check the security setting (starttls, ssl) and the port",
        )
    if isinstance(error, smtplib.SMTPConnectError) and not 200 <= error.smtp_code < 600:
        greeting = _reply_text(error.smtp_error)
        return MailServerError(
            f"{where}: the server's greeting is not SMTP ({greeting!r}); this port belongs to "
            f"another service (POP3, IMAP?): SMTP is usually on port {USUAL_PORTS['SMTP']}",
            problem="wrong_port",
        )
    if isinstance(error, smtplib.SMTPServerDisconnected):
        return MailServerError(
            f"{where}: the server closed the connection ({error}); with implicit TLS on a "
            "STARTTLS port (or the reverse) servers often just hang up" + _mode_hint("SMTP", endpoint),
            temporary=True,
            problem="connection_dropped",
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
            problem="recipients_refused",
        )
    if isinstance(error, smtplib.SMTPResponseException):
        reply = _reply_text(error.smtp_error)
        return MailServerError(
            f"{where}: the server answered {error.smtp_code} {reply}",
            reply_code=error.smtp_code,
            reply=reply,
            temporary=400 <= error.smtp_code < 500,
            problem="server_reply",
        )
    found = network_failure(error, "SMTP", endpoint)
    if found is not None:
        return found
    if isinstance(error, smtplib.SMTPException):
        return MailServerError(f"{where}: {error}", temporary=True)
    return MailServerError(
        f"{where}: unexpected failure ({type(error).__name__}: {error})", problem="unexpected"
    )


def pop3_failure(error: BaseException, endpoint: ServerEndpoint, *, username: str = "") -> MailServerError:
    where = _where("POP3", endpoint)
    if isinstance(error, poplib.error_proto):
        reply = _reply_text(error.args[0] if error.args else b"")
        lowered = reply.lower()
        if reply[:3].isdigit():
            return MailServerError(
                f"{where}: the server's greeting is not POP3 ({reply!r}: an SMTP server?); "
                f"POP3 is usually on port {USUAL_PORTS['POP3']}",
                reply=reply,
                problem="wrong_port",
            )
        if "stls" in lowered and "not supported" in lowered:
            return MailServerError(
                f"{where}: TLS expected but not offered: the server does not support STLS, so the "
                "login would go unencrypted. Use port 995 with security ssl, or security none only "
                "on a network you trust",
                reply=reply,
                problem="tls_not_offered",
            )
        if "pop" in lowered and ("enable" in lowered or "disabled" in lowered):
            return MailServerError(
                f"{where}: POP3 is disabled for this mailbox ({reply}); enable it in the mailbox's "
                "settings (Gmail: Settings, Forwarding and POP/IMAP; Office 365: the admin center)",
                reply=reply,
                problem="pop3_disabled",
            )
        if "auth" in lowered or "password" in lowered or "login" in lowered or "logon" in lowered:
            return MailServerError(
                f"{where}: login failed for {username!r} ({reply}); check the user name and password. "
                "Gmail wants the 'recent:' prefix on the user name and an app password, and POP "
                "enabled in its settings; Office 365 accepts only OAuth2 for POP3",
                reply=reply,
                problem="auth_failed",
            )
        return MailServerError(
            f"{where}: the server answered {reply}", reply=reply, temporary=True, problem="server_reply"
        )
    found = network_failure(error, "POP3", endpoint)
    if found is not None:
        return found
    return MailServerError(
        f"{where}: unexpected failure ({type(error).__name__}: {error})", problem="unexpected"
    )


def _reply_text(reply: bytes | str) -> str:
    text = reply.decode("utf-8", "replace") if isinstance(reply, bytes) else str(reply)
    return " ".join(text.split())
