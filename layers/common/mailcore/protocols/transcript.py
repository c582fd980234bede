"""The protocol conversation of one session, safe to show: credentials never enter it."""

from __future__ import annotations

import base64
from collections.abc import Iterable
from typing import TypeVar

from mailcore.textcut import MARK

Failure = TypeVar("Failure", bound=Exception)

REDACTED = "<redacted>"
# A text cut to a size (textcut) may end inside a secret a server echoed: the part before the cut
# is masked too, when it is at least this long.
PARTIAL_SECRET_CHARS = 4


class Transcript:
    """Lines `C: ...` (client) and `S: ...` (server). Known secrets are masked as a last line of
    defence; the protocol classes already redact credentials by command (PASS, AUTH payloads)."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self.lines: list[str] = []
        self._secrets = sorted({secret for secret in secrets if secret}, key=len, reverse=True)

    def add_secret(self, secret: str) -> None:
        if secret and secret not in self._secrets:
            self._secrets = sorted([*self._secrets, secret], key=len, reverse=True)

    def add_credentials(self, user: str, password: str) -> None:
        """The password and every encoding a client sends it in (the AUTH LOGIN and AUTH PLAIN
        payloads, in UTF-8 as RFC 4616 wants): a server that echoes one back shows it masked."""
        if not password:
            return
        self.add_secret(password)
        for plain in (password, f"\0{user}\0{password}", f"{user}\0{user}\0{password}"):
            self.add_secret(base64.b64encode(plain.encode("utf-8")).decode("ascii"))

    def redact_failure(self, failure: Failure) -> Failure:
        """The failure with every known secret masked in its message and the server's reply it
        carries (a server may echo the credentials in its error)."""
        for attribute in ("message", "reply"):
            value = getattr(failure, attribute, None)
            if isinstance(value, str):
                setattr(failure, attribute, self.redact(value))
        failure.args = tuple(self.redact(arg) if isinstance(arg, str) else arg for arg in failure.args)
        return failure

    def redact(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, REDACTED)
        return _cut_secret_masked(text, self._secrets) if text.endswith(MARK) else text

    def client(self, text: str) -> None:
        self.lines.append("C: " + self.redact(text))

    def server(self, text: str) -> None:
        self.lines.append("S: " + self.redact(text))

    def note(self, text: str) -> None:
        self.lines.append("-- " + self.redact(text))

    def last_server_line(self) -> str | None:
        for line in reversed(self.lines):
            if line.startswith("S: "):
                return line[3:]
        return None


def _cut_secret_masked(text: str, secrets: list[str]) -> str:
    """`text`, cut to a size, with the beginning of a secret at the cut masked."""
    body = text[: -len(MARK)]
    for secret in secrets:
        for length in range(min(len(secret) - 1, len(body)), PARTIAL_SECRET_CHARS - 1, -1):
            if body.endswith(secret[:length]):
                return body[:-length] + REDACTED + MARK
    return text
