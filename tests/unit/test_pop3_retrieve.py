"""Pop3Session.retrieve against a scripted server side: the bytes come back exactly, for small
messages and for ones that outgrow the in-memory slice."""

from __future__ import annotations

import pytest
from mailcore.protocols import pop3
from mailcore.protocols.pop3 import Pop3Session
from mailcore.protocols.transcript import Transcript

from tests.unit.test_pull_pipeline import ACCOUNT


class ScriptedPop:
    """The part of poplib.POP3 that retrieve uses, answering RETR with `lines` (dot-stuffed)."""

    def __init__(self, lines: list[bytes]) -> None:
        stuffed = [b"." + line if line.startswith(b".") else line for line in lines]
        self.replies = iter([*stuffed, b"."])
        self.commands: list[str] = []

    def _putcmd(self, line: str) -> None:
        self.commands.append(line)

    def _getresp(self) -> bytes:
        return b"+OK"

    def _getline(self) -> tuple[bytes, int]:
        line = next(self.replies)
        return line, len(line) + 2


@pytest.mark.parametrize("count", [3, 120_000], ids=["small", "larger-than-a-slice"])
def test_retrieve_answers_the_message_with_crlf_and_dots_unstuffed(count):
    lines = [b"Subject: x", b""] + [f"line {n}".encode() if n % 7 else b".dot first" for n in range(count)]
    session = Pop3Session(ACCOUNT, transcript=Transcript(), tls_context=None)  # type: ignore[arg-type]
    session._pop = ScriptedPop(lines)  # type: ignore[assignment]
    raw = session.retrieve(5)
    assert raw == b"\r\n".join(lines) + b"\r\n"
    assert session._pop.commands == ["RETR 5"]  # type: ignore[union-attr]
    assert (len(raw) > pop3.SPOOL_SLICE) == (count == 120_000)
