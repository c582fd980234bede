"""Domain exceptions. The API maps each to one HTTP status, in one place (mailcore.api)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from mailcore.textcut import cut_to_bytes

if TYPE_CHECKING:
    from pydantic import ValidationError


class StoreRefused(Exception):
    """Storage refused an item or object for what it is (too large, invalid): trying again fails
    again. A pull sets such a message aside instead of retrying it forever."""


class MailServiceError(Exception):
    """Base of every error the service reports to a caller in words."""

    status = 500
    code = "internal_error"

    def __init_subclass__(cls, *, status: int | None = None, code: str | None = None) -> None:
        """`class NotFound(MailServiceError, status=404, code="not_found")`: a subclass names its
        HTTP status and error code in its header; one left out is the base's."""
        super().__init_subclass__()
        if status is not None:
            cls.status = status
        if code is not None:
            cls.code = code

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        # The redacted protocol conversation, attached when the caller asked for ?debug=true.
        self.debug: list[str] | None = None


class InvalidInput(MailServiceError, status=400, code="invalid_input"): ...


class NotAuthenticated(MailServiceError, status=401, code="not_authenticated"): ...


class NotAMember(MailServiceError, status=403, code="not_a_member"): ...


class NotFound(MailServiceError, status=404, code="not_found"): ...


class AccountNotFound(NotFound, code="account_not_found"): ...


class AmbiguousAccount(MailServiceError, status=409, code="ambiguous_account"): ...


class Conflict(MailServiceError, status=409, code="conflict"): ...


class PullRunning(Conflict, code="pull_running"):
    """Another pull of the account holds its lease; this one did nothing."""


class TeamConfigInvalid(MailServiceError, status=500, code="team_config_invalid"):
    """A team secret that does not validate: the operators must fix it, the caller cannot."""


class MailServerError(MailServiceError, status=502, code="mail_server_error"):
    """The SMTP or POP3 server failed or refused; `reply` is its answer when it gave one."""

    def __init__(
        self,
        message: str,
        *,
        reply_code: int | None = None,
        reply: str | None = None,
        temporary: bool = False,
        problem: str = "server_error",
    ) -> None:
        # A server's words are as long as it makes them; they end up in the mail's item, its
        # events and answers, so they are kept to a length here, where they enter the domain.
        message, reply = _cut(message), _cut(reply)
        super().__init__(message)
        self.reply_code = reply_code
        self.reply = reply
        self.temporary = temporary
        # What went wrong, as a stable word (auth_failed, wrong_port, ...): see protocols/diagnose.py.
        self.problem = problem


# The most of a server's answer kept in an error (and so in a stored mail's `error` and `reply`).
SERVER_TEXT_BYTES = 2000


def _cut[T: (str, str | None)](text: T) -> T:
    return text if text is None else cut_to_bytes(text, SERVER_TEXT_BYTES)


class DeliveryUnknown(MailServerError):
    """The whole message went out but the connection failed before the server answered it: the
    server may have taken it or not. Never retried on its own (see services/outbox.py)."""


def describe_validation_error(error: ValidationError) -> str:
    """Names what is wrong and where, never the value: the input may hold a password."""
    parts = []
    for detail in error.errors(include_input=False, include_url=False):
        location = ".".join(str(part) for part in detail["loc"]) or "(root)"
        parts.append(f"{location}: {detail['msg']}")
    return "; ".join(parts)
