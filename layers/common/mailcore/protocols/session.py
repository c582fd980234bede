"""What the POP3 and SMTP sessions of an account share: their settings and the secrets their transcript masks."""

from __future__ import annotations

import ssl
from typing import Protocol, Self

from pydantic import SecretStr

from mailcore.oauth2 import xoauth2_base64
from mailcore.protocols.deadline import Deadline, DeadlinePassed
from mailcore.protocols.transcript import Transcript


class PasswordAccount(Protocol):
    @property
    def mail_password(self) -> SecretStr: ...


class AccountSession[Account: PasswordAccount]:
    """A session of `account` that logs in as `login`; with `access_token` it logs in with SASL
    XOAUTH2 instead of the password. Every form of either secret is masked in the transcript.
    Everything it does ends by `deadline` (the caller's time); each answer also within the
    account's timeout_seconds."""

    def __init__(
        self,
        account: Account,
        *,
        transcript: Transcript,
        tls_context: ssl.SSLContext,
        access_token: str | None = None,
        source_address: tuple[str, int] | None = None,
        deadline: Deadline | None = None,
    ) -> None:
        self.account = account
        self.transcript = transcript
        self.tls_context = tls_context
        self.access_token = access_token
        self.source_address = source_address
        self.deadline = deadline or Deadline.never()
        self._sasl_error: str | None = None
        login = self.login
        transcript.add_credentials(login, account.mail_password.get_secret_value())
        if access_token:
            transcript.add_secret(access_token)
            transcript.add_secret(xoauth2_base64(login, access_token))

    @property
    def login(self) -> str:
        raise NotImplementedError

    def open(self) -> None:
        raise NotImplementedError

    def out_of_time(self, error: BaseException) -> BaseException:
        """The failure as the deadline's once it has passed: whatever broke then (smtplib and poplib
        turn a timeout into a dropped connection), the session ran out of its time."""
        if not self.deadline.passed() or isinstance(error, DeadlinePassed):
            return error
        return self.deadline.error("the session")

    def __enter__(self) -> Self:
        self.open()
        return self
