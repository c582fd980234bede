"""Pop3Session.retrieve against a scripted server side: the bytes come back exactly (dot-stuffing
undone), for an empty message, small ones and ones that outgrow the in-memory slice, whatever
the blocks the network hands over."""

from __future__ import annotations

import io

import pytest
from mailcore.errors import MailServerError
from mailcore.protocols import pop3
from mailcore.protocols.pop3 import Pop3Session
from mailcore.protocols.transcript import Transcript

from tests.unit.test_pull_pipeline import ACCOUNT


class Trickle(io.RawIOBase):
    """A socket that hands over at most `block` bytes per read."""

    def __init__(self, data: bytes, block: int) -> None:
        self.data, self.block, self.position = data, block, 0

    def readable(self) -> bool:
        return True

    def readinto(self, target) -> int:  # type: ignore[no-untyped-def]
        chunk = self.data[self.position : self.position + min(self.block, len(target))]
        target[: len(chunk)] = chunk
        self.position += len(chunk)
        return len(chunk)


class ScriptedPop:
    """The part of poplib.POP3 that retrieve uses: RETR answered with `lines`, dot-stuffed."""

    def __init__(self, lines: list[bytes], block: int, *, complete: bool = True) -> None:
        stuffed = [b"." + line if line.startswith(b".") else line for line in lines]
        wire = b"".join(line + b"\r\n" for line in stuffed) + (b".\r\n" if complete else b"")
        self.file = io.BufferedReader(Trickle(wire, block), buffer_size=65536)
        self.commands: list[str] = []

    def _putcmd(self, line: str) -> None:
        self.commands.append(line)

    def _getresp(self) -> bytes:
        return b"+OK"


def session_answering(pop: ScriptedPop) -> Pop3Session:
    session = Pop3Session(ACCOUNT, transcript=Transcript(), tls_context=None)  # type: ignore[arg-type]
    session._pop = pop  # type: ignore[assignment]
    return session


def message_lines(count: int) -> list[bytes]:
    return [b"Subject: x", b""] + [f"line {n}".encode() if n % 7 else b"..dots first." for n in range(count)]


@pytest.mark.parametrize(
    ("count", "block"),
    [(count, block) for count in (0, 1, 3) for block in (1, 5, 7, 65536)] + [(120_000, 7), (120_000, 65536)],
)
def test_retrieve_answers_the_message_with_dots_unstuffed(count, block):
    lines = [] if count == 0 else [b".first line starts with a dot", *message_lines(count)]
    pop = ScriptedPop(lines, block)
    raw = session_answering(pop).retrieve(5)
    assert raw == b"".join(line + b"\r\n" for line in lines)
    assert pop.commands == ["RETR 5"]
    assert (len(raw) > pop3.SPOOL_SLICE) == (count == 120_000)


def test_a_connection_closed_in_the_middle_of_a_message_is_a_mail_server_error():
    with pytest.raises(MailServerError):
        session_answering(ScriptedPop(message_lines(100), 4096, complete=False)).retrieve(1)


def test_a_command_holding_a_line_break_is_never_sent():
    """Defence in depth under the account validation: poplib itself would send both lines."""
    import poplib
    import socket

    ours, theirs = socket.socketpair()
    client = object.__new__(pop3.RecordingPOP3)
    client.transcript, client.sock, client._debugging = Transcript(), ours, 0  # type: ignore[attr-defined]
    with pytest.raises(poplib.error_proto) as refused:
        client._putcmd("PASS pw\r\nDELE 1")
    theirs.setblocking(False)
    with pytest.raises(BlockingIOError):
        theirs.recv(100)
    assert "DELE" not in str(refused.value) and client.transcript.lines == []
    ours.close(), theirs.close()
