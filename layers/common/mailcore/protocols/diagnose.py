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
from email.utils import parseaddr
from typing import Protocol

from mailcore.errors import MailServerError
from mailcore.models import Mail, Security, ServerEndpoint


class OAuth2LoginRefused(MailServerError):
    """The server refused an access token (expired or revoked early, wrong scope or mailbox)."""


class SmtpAccountLike(Protocol):
    @property
    def mail_from(self) -> str: ...
    @property
    def smtp_login(self) -> str: ...


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


def _provider_diagnosis(
    where: str, code: int, reply: str, *, username: str, mail_from: str, oauth2: bool
) -> MailServerError | None:
    """Replies of Microsoft 365 and Gmail that need a person to change a setting, in their words."""
    if "5.7.139" in reply:
        if not oauth2 and "basic" in reply.lower():
            advice = "the tenant has turned off password (basic) logins for SMTP: switch the account to auth mode oauth2"
        else:
            advice = (
                "SMTP AUTH is disabled for the tenant or for this mailbox: an Exchange admin must enable it "
                "(Set-CASMailbox -Identity <mailbox> -SmtpClientAuthenticationDisabled $false, or "
                "Set-TransportConfig -SmtpClientAuthenticationDisabled $false for the tenant)"
            )
        return MailServerError(f"{where}: {code} {reply}: {advice}", reply_code=code, reply=reply)
    if "5.7.30" in reply or ("basic auth" in reply.lower() and code >= 500):
        return MailServerError(
            f"{where}: {code} {reply}: the server no longer accepts password (basic) logins; "
            "switch the account to auth mode oauth2 (see the README)",
            reply_code=code,
            reply=reply,
        )
    if "5.2.252" in reply or "sendasdenied" in reply.lower().replace(" ", ""):
        return MailServerError(
            f"{where}: {code} {reply}: the login {username!r} may not send as {mail_from!r}; grant it "
            "'Send As' on that mailbox (Exchange admin) or set mail_from to the login's own address. "
            "Not retried: it fails the same way until the permission changes",
            reply_code=code,
            reply=reply,
            temporary=False,
        )
    if (code == 432 and "4.3.2" in reply) or code == 421:
        return MailServerError(
            f"{where}: {code} {reply}: the server is busy or the mailbox is over its connection or "
            "message limit (Exchange Online: 3 connections, 30 messages a minute); retry later",
            reply_code=code,
            reply=reply,
            temporary=True,
        )
    return None


def smtp_failure(
    error: BaseException,
    endpoint: ServerEndpoint,
    *,
    username: str = "",
    mail_from: str = "",
    oauth2: bool = False,
    sasl_error: str | None = None,
) -> MailServerError:
    where = _where("SMTP", endpoint)
    if isinstance(error, smtplib.SMTPResponseException):
        found = _provider_diagnosis(
            where,
            error.smtp_code,
            _reply_text(error.smtp_error),
            username=username,
            mail_from=mail_from,
            oauth2=oauth2,
        )
        if found is not None:
            return found
    if isinstance(error, smtplib.SMTPAuthenticationError) and oauth2:
        reply = _reply_text(error.smtp_error)
        said = f"; the server's XOAUTH2 error: {sasl_error}" if sasl_error else ""
        return OAuth2LoginRefused(
            f"{where}: the OAuth2 (XOAUTH2) login of {username!r} was refused ({error.smtp_code} {reply}"
            f"{said}). Check that the token's scope allows SMTP (Microsoft: SMTP.SendAsApp for app-only, "
            "with the Exchange service principal granted on the mailbox; Google: https://mail.google.com/) "
            "and that the login is the mailbox's address",
            reply_code=error.smtp_code,
            reply=reply,
        )
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
        for code, reply_bytes in error.recipients.values():
            found = _provider_diagnosis(
                where, code, _reply_text(reply_bytes), username=username, mail_from=mail_from, oauth2=oauth2
            )
            if found is not None:
                return found
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


def pop3_failure(
    error: BaseException,
    endpoint: ServerEndpoint,
    *,
    username: str = "",
    oauth2: bool = False,
    sasl_error: str | None = None,
) -> MailServerError:
    where = _where("POP3", endpoint)
    if isinstance(error, poplib.error_proto) and oauth2:
        reply = _reply_text(error.args[0] if error.args else b"")
        said = f"; the server's XOAUTH2 error: {sasl_error}" if sasl_error else ""
        return OAuth2LoginRefused(
            f"{where}: the OAuth2 (XOAUTH2) login of {username!r} was refused ({reply}{said}). Check the "
            "token's scope (Microsoft app-only: POP.AccessAsApp, with the Exchange service principal given "
            "FullAccess on the mailbox; delegated: POP.AccessAsUser.All; Google: https://mail.google.com/), "
            "that POP is enabled for the mailbox, and that the login is its address",
            reply=reply,
        )
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


def from_rewritten_warning(account: SmtpAccountLike, mail: Mail) -> str | None:
    """A warning when `mail` looks like this account's own sent mail whose From the provider
    rewrote to the login address, or None.

    Gmail does that, silently, when `mail_from` is not a verified "Send mail as" alias of the
    login. The copy shows it: Gmail's POP3 with the `recent:` login also serves sent mail, and a
    mail sent to the account itself comes back. A copy is recognised by its Message-ID, which the
    service makes on the domain of `mail_from`, and a From that is the login while mail_from is
    another address.
    """
    wanted = parseaddr(account.mail_from)[1].lower()
    login = parseaddr(account.smtp_login.removeprefix("recent:"))[1].lower()
    shown = parseaddr(mail.from_)[1].lower()
    if not wanted or not login or wanted == login or shown != login:
        return None
    message_domain = (mail.message_id or "").strip("<>").rpartition("@")[2].lower()
    if message_domain != wanted.rpartition("@")[2]:
        return None
    return (
        f"the provider rewrote From to the login {login!r} on a mail sent as {wanted!r} "
        f"(Message-ID {mail.message_id}); make {wanted!r} a verified 'Send mail as' alias of the login "
        "(Gmail settings, Accounts) or set mail_from to the login's address"
    )
