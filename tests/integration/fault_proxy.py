"""The one loopback proxy that injects faults between a client and the real Dovecot or Postfix
(never a fake server): it hangs up at a chosen command, holds one until released, rewrites or
swallows the server's reply to one, drips the server's answers a byte at a time from one on, or
hides lines of the server's answers.

It reads the conversation, so the line must be plain (accounts behind it use `security: none`).
Reply faults pair each reply with its command, which holds for SMTP as smtplib speaks it (no
pipelining: one reply a command, in order); command faults and hidden lines work for POP3 too.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Literal

from tests.support import accepted

DATA_END = "DATA-END"  # SMTP: the message's final "." (the reply to it is the server's verdict)

Action = Literal["cut", "hold", "drip", "reply", "hang_up"]
"""cut: hang up instead of passing the command on. hold: pass it on once `release()` is called.
drip: pass it on, and from then on pass the server's answers on a byte per DRIP_EVERY seconds (a
server slow enough to outlast any deadline, each byte inside any socket timeout). reply: pass it
on, and give the client `reply` instead of the server's answer. hang_up: pass it on, and hang up
instead of passing the server's answer on."""
DRIP_EVERY = 0.2


@dataclass
class Fault:
    command: str  # the client's verb it applies to ("RETR", "RCPT", DATA_END, ...)
    action: Action
    nth: int = 1  # the first one it applies to: the nth such command over every connection
    times: int = 1  # how many of them, from the nth on
    reply: bytes = b""  # for "reply"
    used: int = 0  # how often it was applied

    def applies(self, seen: int) -> bool:
        return self.nth <= seen < self.nth + self.times


def offers_starttls(line: bytes) -> bool:
    """The line of an SMTP EHLO reply (250-STARTTLS) or POP3 CAPA answer (STLS) offering TLS."""
    return line.rstrip(b"\r\n")[4:].upper() == b"STARTTLS" or line.rstrip(b"\r\n").upper() == b"STLS"


def closed_port() -> int:
    """A loopback port nobody listens on: connecting to it is refused."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class FaultProxy:
    """Forwards each connection to 127.0.0.1:`port` to `upstream`, with `faults` applied and the
    server's lines for which `hide_line` is true left out."""

    def __init__(
        self, upstream: tuple[str, int], *faults: Fault, hide_line: Callable[[bytes], bool] | None = None
    ) -> None:
        self.upstream, self.faults, self.hide_line = upstream, faults, hide_line
        self.held = threading.Event()  # set when a "hold" fault holds a command
        self._released = threading.Event()
        self._pairs_replies = any(fault.action in ("reply", "hang_up") for fault in faults)
        self._counts: dict[tuple[str, bool], int] = {}  # (verb, answered): how many over every connection
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        threading.Thread(target=self._accept, daemon=True, name="fault-proxy").start()

    def release(self) -> None:
        self._released.set()

    def seen(self, command: str) -> int:
        """How many times a client sent this command (DATA_END: a whole message), over every connection."""
        with self._lock:
            return self._counts.get((command, False), 0)

    def close(self) -> None:
        self._released.set()
        for sock in [self._listener, *self._sockets]:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)  # wakes a blocked accept() or recv(); close() alone does not
            sock.close()

    def __enter__(self) -> FaultProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _fault_for(self, command: str, *, answered: bool) -> Fault | None:
        """The fault for this command as the client sends it, or for the server's answer to it."""
        actions = ("reply", "hang_up") if answered else ("cut", "hold", "drip")
        with self._lock:
            seen = self._counts[command, answered] = self._counts.get((command, answered), 0) + 1
            for fault in self.faults:
                if fault.command == command and fault.action in actions and fault.applies(seen):
                    fault.used += 1
                    return fault
        return None

    def _accept(self) -> None:
        for client in accepted(self._listener):
            server = socket.create_connection(self.upstream)
            self._sockets += [client, server]
            commands: deque[str] = deque()
            dripping = threading.Event()  # set by a "drip" fault on this connection
            threading.Thread(
                target=self._commands, args=(client, server, commands, dripping), daemon=True
            ).start()
            threading.Thread(
                target=self._answers, args=(server, client, commands, dripping), daemon=True
            ).start()

    @staticmethod
    def _hang_up(*sockets: socket.socket) -> None:
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)  # shutdown: the other thread's recv holds it open
            sock.close()

    def _command(
        self,
        verb: str,
        client: socket.socket,
        server: socket.socket,
        commands: deque[str],
        dripping: threading.Event,
    ) -> bool:
        """Notes the client's command; False when the line is cut there instead."""
        fault = self._fault_for(verb, answered=False)
        if fault is not None and fault.action == "cut":
            self._hang_up(client, server)
            return False
        if fault is not None and fault.action == "drip":
            dripping.set()
            fault = None
        if fault is not None and not self._released.is_set():
            self.held.set()
            self._released.wait(30)
        if self._pairs_replies:
            commands.append(verb)  # before the command goes on, so its reply finds it
        return True

    def _commands(
        self, client: socket.socket, server: socket.socket, commands: deque[str], dripping: threading.Event
    ) -> None:
        pending, in_data, tail = b"", False, b""
        with contextlib.suppress(OSError):
            while chunk := client.recv(65536):
                pending += chunk
                while pending:
                    if in_data:  # an SMTP message: passed on as it comes, until its final "."
                        window = tail + pending
                        end = window.find(b"\r\n.\r\n")
                        if end < 0:
                            server.sendall(pending)
                            tail, pending = window[-4:], b""
                            break
                        body_end = end + 5 - len(tail)
                        server.sendall(pending[:body_end])
                        pending, in_data = pending[body_end:], False
                        if not self._command(DATA_END, client, server, commands, dripping):
                            return
                        continue
                    line_end = pending.find(b"\r\n")
                    if line_end < 0:
                        break
                    line, pending = pending[: line_end + 2], pending[line_end + 2 :]
                    verb = line.split(b" ", 1)[0].split(b":", 1)[0].strip().upper().decode("ascii", "replace")
                    if not self._command(verb, client, server, commands, dripping):
                        return
                    server.sendall(line)
                    if verb == "DATA":
                        in_data, tail = True, b"\r\n"  # a message may be empty: ".\r\n" at once
        with contextlib.suppress(OSError):
            server.shutdown(socket.SHUT_WR)

    def _replies(self, server: socket.socket) -> Iterator[bytes]:
        """The server's answers: whole SMTP replies when faults pair them with commands, else lines."""
        reader = server.makefile("rb")
        reply = b""
        while line := reader.readline():
            if self.hide_line is not None and self.hide_line(line):
                continue
            reply += line
            if not self._pairs_replies or line[3:4] != b"-":
                yield reply
                reply = b""

    def _answers(
        self, server: socket.socket, client: socket.socket, commands: deque[str], dripping: threading.Event
    ) -> None:
        greeted = False
        with contextlib.suppress(OSError, ValueError, IndexError):
            for reply in self._replies(server):
                verb = commands.popleft() if greeted and self._pairs_replies else ""
                greeted = True
                fault = self._fault_for(verb, answered=True) if verb else None
                if fault is not None and fault.action == "hang_up":
                    self._hang_up(client, server)
                    return
                answer = fault.reply if fault is not None else reply
                if dripping.is_set():
                    _drip(client, answer)
                else:
                    client.sendall(answer)
        with contextlib.suppress(OSError):
            client.shutdown(socket.SHUT_WR)


def _drip(client: socket.socket, answer: bytes) -> None:
    for byte in answer:
        client.sendall(bytes([byte]))
        time.sleep(DRIP_EVERY)
