"""Turns what went wrong on the wire into a MailServerError a person can act on.

Each error carries a `problem` word (below) and a message saying what to check. The check tool
(`mail-check`) and the API's `?debug=true` answer show the same `diagnosis()`.

Problems: address_not_allowed, dns, refused, timeout, tls_certificate, wrong_tls_mode, tls_failed, tls_not_offered,
wrong_port, auth_failed, auth_not_offered, pop3_disabled, connection_dropped, recipients_refused,
server_reply, unexpected.
"""

from __future__ import annotations

import poplib
import smtplib
import socket
import ssl
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from email.utils import parseaddr
from typing import Any, Protocol

from mailcore.errors import MailServerError
from mailcore.models import Mail, Security, ServerEndpoint
from mailcore.protocols.deadline import DeadlinePassed
from mailcore.protocols.reach import AddressNotAllowed


class OAuth2LoginRefused(MailServerError):
    """The server refused an access token (expired or revoked early, wrong scope or mailbox)."""


class MailServerNotAllowed(MailServerError):
    """The account names a mail server at an address the service may not connect to
    (protocols/reach.py): the account's fault, not the server's, so a 4xx."""

    status = 422
    code = "address_not_allowed"


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
    if isinstance(error, AddressNotAllowed):
        return MailServerNotAllowed(
            f"{where}: {error}, which the service may not connect to (only globally routable "
            "addresses, and the deployment's MailServerNetworks); give the mail server's public name",
            problem="address_not_allowed",
        )
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
        return _timed_out(error, where, _mode_hint(protocol, endpoint))
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


def _timed_out(error: TimeoutError, where: str, mode_hint: str) -> MailServerError:
    if isinstance(error, DeadlinePassed):
        # Out of the caller's time, not necessarily a wrong port: a server answering too slowly
        # (or dripping its answer) meets it as well.
        return MailServerError(
            f"{where}: {error}; the server answers too slowly, or the port is wrong or blocked by a firewall",
            temporary=True,
            problem="timeout",
        )
    return MailServerError(
        f"{where}: timed out; the port may be wrong or blocked by a firewall" + mode_hint,
        temporary=True,
        problem="timeout",
    )


@dataclass(frozen=True)
class _Attempt:
    """What a diagnosis knows besides the error: where it happened and who tried to log in."""

    where: str
    endpoint: ServerEndpoint
    username: str = ""
    mail_from: str = ""
    oauth2: bool = False
    sasl_error: str | None = None

    @property
    def sasl_said(self) -> str:
        return f"; the server's XOAUTH2 error: {self.sasl_error}" if self.sasl_error else ""


# A diagnosis of one kind of error: a MailServerError, or None to let the next rule try.
Rule = tuple[
    type[BaseException] | tuple[type[BaseException], ...], Callable[[Any, _Attempt], MailServerError | None]
]


def _first_diagnosis(rules: Sequence[Rule], error: BaseException, attempt: _Attempt) -> MailServerError:
    for kind, diagnose in rules:
        if isinstance(error, kind) and (found := diagnose(error, attempt)) is not None:
            return found
    return MailServerError(
        f"{attempt.where}: unexpected failure ({type(error).__name__}: {error})", problem="unexpected"
    )


def is_busy_reply(code: int, reply: str) -> bool:
    """A provider's "busy, try later": 421, or Exchange Online's 432 4.3.2 (a connection or
    message limit of the mailbox)."""
    return code == 421 or (code == 432 and "4.3.2" in reply)


# Replies of Microsoft 365 and Gmail that need a person to change a setting, in their words:
# (does the reply match (code, reply, oauth2), advice (over username, mail_from), temporary).
_PROVIDER_REPLIES: tuple[tuple[Callable[[int, str, bool], bool], str, bool], ...] = (
    (
        lambda code, reply, oauth2: "5.7.139" in reply and not oauth2 and "basic" in reply.lower(),
        "the tenant has turned off password (basic) logins for SMTP: switch the account to auth mode oauth2",
        False,
    ),
    (
        lambda code, reply, oauth2: "5.7.139" in reply,
        "SMTP AUTH is disabled for the tenant or for this mailbox: an Exchange admin must enable it "
        "(Set-CASMailbox -Identity <mailbox> -SmtpClientAuthenticationDisabled $false, or "
        "Set-TransportConfig -SmtpClientAuthenticationDisabled $false for the tenant)",
        False,
    ),
    (
        lambda code, reply, oauth2: "5.7.30" in reply or ("basic auth" in reply.lower() and code >= 500),
        "the server no longer accepts password (basic) logins; switch the account to auth mode oauth2 "
        "(see the README)",
        False,
    ),
    (
        lambda code, reply, oauth2: "5.2.252" in reply or "sendasdenied" in reply.lower().replace(" ", ""),
        "the login {username!r} may not send as {mail_from!r}; grant it 'Send As' on that mailbox "
        "(Exchange admin) or set mail_from to the login's own address. Not retried: it fails the same "
        "way until the permission changes",
        False,
    ),
    (
        lambda code, reply, oauth2: is_busy_reply(code, reply),
        "the server is busy or the mailbox is over its connection or message limit (Exchange Online: "
        "3 connections, 30 messages a minute); retry later",
        True,
    ),
)


def _provider_diagnosis(code: int, reply: str, attempt: _Attempt) -> MailServerError | None:
    for matches, advice, temporary in _PROVIDER_REPLIES:
        if matches(code, reply, attempt.oauth2):
            said = advice.format(username=attempt.username, mail_from=attempt.mail_from)
            return MailServerError(
                f"{attempt.where}: {code} {reply}: {said}", reply_code=code, reply=reply, temporary=temporary
            )
    return None


def _smtp_provider_reply(error: smtplib.SMTPResponseException, attempt: _Attempt) -> MailServerError | None:
    return _provider_diagnosis(error.smtp_code, _reply_text(error.smtp_error), attempt)


def _smtp_login_refused(error: smtplib.SMTPAuthenticationError, attempt: _Attempt) -> MailServerError:
    reply = _reply_text(error.smtp_error)
    if attempt.oauth2:
        return OAuth2LoginRefused(
            f"{attempt.where}: the OAuth2 (XOAUTH2) login of {attempt.username!r} was refused "
            f"({error.smtp_code} {reply}{attempt.sasl_said}). Check that the token's scope allows SMTP "
            "(Microsoft: SMTP.SendAsApp for app-only, with the Exchange service principal granted on the "
            "mailbox; Google: https://mail.google.com/) and that the login is the mailbox's address",
            reply_code=error.smtp_code,
            reply=reply,
        )
    return MailServerError(
        f"{attempt.where}: authentication failed for {attempt.username!r} ({error.smtp_code} {reply}); "
        "check the user name and password. Gmail needs an app password when 2-step verification is on; "
        "Office 365 needs SMTP AUTH enabled for the mailbox",
        reply_code=error.smtp_code,
        reply=reply,
        problem="auth_failed",
    )


# What the server did not offer (a word of smtplib's error): the problem, and what to check.
_NOT_OFFERED = (
    (
        "STARTTLS",
        "tls_not_offered",
        "TLS expected but not offered: the server does not advertise STARTTLS, so the login would go "
        "unencrypted. Check the port (587 offers STARTTLS, 465 wants security ssl); use security none "
        "only on a network you trust",
    ),
    (
        "AUTH",
        "auth_not_offered",
        "the server offers no login (SMTP AUTH) here; many offer it only after STARTTLS or on port 587. "
        "Office 365 needs SMTP AUTH enabled for the mailbox",
    ),
)


def _smtp_not_offered(error: smtplib.SMTPNotSupportedError, attempt: _Attempt) -> MailServerError:
    for word, problem, advice in _NOT_OFFERED:
        if word in str(error):
            return MailServerError(f"{attempt.where}: {advice}", problem=problem)
    return MailServerError(
        f"{attempt.where}: the server does not offer what the account needs ({error}); "
        "check the security setting (starttls, ssl) and the port",
    )


def _smtp_not_smtp(error: smtplib.SMTPConnectError, attempt: _Attempt) -> MailServerError | None:
    if 200 <= error.smtp_code < 600:
        return None
    return MailServerError(
        f"{attempt.where}: the server's greeting is not SMTP ({_reply_text(error.smtp_error)!r}); this port "
        f"belongs to another service (POP3, IMAP?): SMTP is usually on port {USUAL_PORTS['SMTP']}",
        problem="wrong_port",
    )


def _smtp_disconnected(error: smtplib.SMTPServerDisconnected, attempt: _Attempt) -> MailServerError:
    return MailServerError(
        f"{attempt.where}: the server closed the connection ({error}); with implicit TLS on a "
        "STARTTLS port (or the reverse) servers often just hang up" + _mode_hint("SMTP", attempt.endpoint),
        temporary=True,
        problem="connection_dropped",
    )


def _smtp_recipients_refused(error: smtplib.SMTPRecipientsRefused, attempt: _Attempt) -> MailServerError:
    refusals = [(code, _reply_text(reply)) for code, reply in error.recipients.values()]
    for code, reply in refusals:
        if (found := _provider_diagnosis(code, reply, attempt)) is not None:
            return found
    summary = "; ".join(
        f"{rcpt}: {code} {_reply_text(reply)}" for rcpt, (code, reply) in error.recipients.items()
    )
    return MailServerError(
        f"{attempt.where}: every recipient was refused ({summary})",
        reply_code=refusals[0][0] if refusals else None,
        reply=summary,
        temporary=all(400 <= code < 500 for code, _ in refusals),
        problem="recipients_refused",
    )


def _smtp_server_reply(error: smtplib.SMTPResponseException, attempt: _Attempt) -> MailServerError:
    reply = _reply_text(error.smtp_error)
    return MailServerError(
        f"{attempt.where}: the server answered {error.smtp_code} {reply}",
        reply_code=error.smtp_code,
        reply=reply,
        temporary=400 <= error.smtp_code < 500,
        problem="server_reply",
    )


def _network(protocol: str) -> Rule:
    # smtplib's own errors are OSErrors: any not diagnosed before ends here as a dropped connection.
    return BaseException, lambda error, attempt: network_failure(error, protocol, attempt.endpoint)


# In order: the first rule whose error kind matches and that returns a diagnosis wins.
_SMTP_RULES: tuple[Rule, ...] = (
    (smtplib.SMTPResponseException, _smtp_provider_reply),
    (smtplib.SMTPAuthenticationError, _smtp_login_refused),
    (smtplib.SMTPNotSupportedError, _smtp_not_offered),
    (smtplib.SMTPConnectError, _smtp_not_smtp),
    (smtplib.SMTPServerDisconnected, _smtp_disconnected),
    (smtplib.SMTPRecipientsRefused, _smtp_recipients_refused),
    (smtplib.SMTPResponseException, _smtp_server_reply),
    _network("SMTP"),
)


def smtp_failure(
    error: BaseException,
    endpoint: ServerEndpoint,
    *,
    username: str = "",
    mail_from: str = "",
    oauth2: bool = False,
    sasl_error: str | None = None,
) -> MailServerError:
    attempt = _Attempt(_where("SMTP", endpoint), endpoint, username, mail_from, oauth2, sasl_error)
    return _first_diagnosis(_SMTP_RULES, error, attempt)


# A POP3 server's -ERR in words: (does the reply match (reply, lowered), problem, advice, temporary).
_POP3_REPLIES: tuple[tuple[Callable[[str, str], bool], str, str, bool], ...] = (
    (
        lambda reply, lowered: reply[:3].isdigit(),
        "wrong_port",
        "the server's greeting is not POP3 ({reply!r}: an SMTP server?); POP3 is usually on port {usual}",
        False,
    ),
    (
        lambda reply, lowered: "stls" in lowered and "not supported" in lowered,
        "tls_not_offered",
        "TLS expected but not offered: the server does not support STLS, so the login would go "
        "unencrypted. Use port 995 with security ssl, or security none only on a network you trust",
        False,
    ),
    (
        lambda reply, lowered: "pop" in lowered and ("enable" in lowered or "disabled" in lowered),
        "pop3_disabled",
        "POP3 is disabled for this mailbox ({reply}); enable it in the mailbox's settings (Gmail: "
        "Settings, Forwarding and POP/IMAP; Office 365: the admin center)",
        False,
    ),
    (
        lambda reply, lowered: any(word in lowered for word in ("auth", "password", "login", "logon")),
        "auth_failed",
        "login failed for {username!r} ({reply}); check the user name and password. Gmail wants the "
        "'recent:' prefix on the user name and an app password, and POP enabled in its settings; "
        "Office 365 accepts only OAuth2 for POP3",
        False,
    ),
    (lambda reply, lowered: True, "server_reply", "the server answered {reply}", True),
)


def _pop3_reply(error: poplib.error_proto, attempt: _Attempt) -> MailServerError:
    reply = _reply_text(error.args[0] if error.args else b"")
    if attempt.oauth2:
        return OAuth2LoginRefused(
            f"{attempt.where}: the OAuth2 (XOAUTH2) login of {attempt.username!r} was refused ({reply}"
            f"{attempt.sasl_said}). Check the token's scope (Microsoft app-only: POP.AccessAsApp, with the "
            "Exchange service principal given FullAccess on the mailbox; delegated: POP.AccessAsUser.All; "
            "Google: https://mail.google.com/), that POP is enabled for the mailbox, and that the login is "
            "its address",
            reply=reply,
        )
    lowered = reply.lower()
    problem, advice, temporary = next(
        (problem, advice, temporary)
        for matches, problem, advice, temporary in _POP3_REPLIES
        if matches(reply, lowered)
    )
    said = advice.format(reply=reply, username=attempt.username, usual=USUAL_PORTS["POP3"])
    return MailServerError(f"{attempt.where}: {said}", reply=reply, temporary=temporary, problem=problem)


_POP3_RULES: tuple[Rule, ...] = ((poplib.error_proto, _pop3_reply), _network("POP3"))


def pop3_failure(
    error: BaseException,
    endpoint: ServerEndpoint,
    *,
    username: str = "",
    oauth2: bool = False,
    sasl_error: str | None = None,
) -> MailServerError:
    attempt = _Attempt(_where("POP3", endpoint), endpoint, username, oauth2=oauth2, sasl_error=sasl_error)
    return _first_diagnosis(_POP3_RULES, error, attempt)


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
