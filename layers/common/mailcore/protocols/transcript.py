"""The protocol conversation of one session, safe to show: credentials never enter it."""

from __future__ import annotations

from collections.abc import Iterable

REDACTED = "<redacted>"


class Transcript:
    """Lines `C: ...` (client) and `S: ...` (server). Known secrets are masked as a last line of
    defence; the protocol classes already redact credentials by command (PASS, AUTH payloads)."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self.lines: list[str] = []
        self._secrets = sorted({secret for secret in secrets if secret}, key=len, reverse=True)

    def add_secret(self, secret: str) -> None:
        if secret and secret not in self._secrets:
            self._secrets = sorted([*self._secrets, secret], key=len, reverse=True)

    def redact(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, REDACTED)
        return text

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
