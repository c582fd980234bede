"""A TCP proxy between the SMTP client and the real Postfix that injects faults: it rewrites the
server's reply to chosen commands, or hangs up after the message's final "." was passed on.

Plain SMTP only (it reads the conversation): accounts behind it use `security: none`. smtplib
never pipelines, so every command has exactly one reply, in order.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections import deque
from dataclasses import dataclass, field

DATA_END = "DATA-END"  # the message's final "." (the reply to it is the server's verdict)


@dataclass
class Fault:
    verb: str  # "RCPT", "MAIL", DATA_END, ...
    times: int  # how many of those replies (over every connection) it applies to
    reply: bytes = b""  # the reply the client gets instead; empty: hang up instead of replying
    used: int = 0


@dataclass
class FaultyProxy:
    upstream: tuple[str, int]
    faults: list[Fault] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._stopping = False
        self._sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True, name="faulty-proxy").start()

    def close(self) -> None:
        self._stopping = True
        for sock in [self._listener, *self._sockets]:
            with contextlib.suppress(OSError):
                sock.close()

    def __enter__(self) -> FaultyProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _fault_for(self, verb: str) -> Fault | None:
        with self._lock:
            for fault in self.faults:
                if fault.verb == verb and fault.used < fault.times:
                    fault.used += 1
                    return fault
        return None

    def _accept(self) -> None:
        while not self._stopping:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            server = socket.create_connection(self.upstream)
            self._sockets += [client, server]
            commands: deque[str] = deque()
            threading.Thread(
                target=self._client_to_server, args=(client, server, commands), daemon=True
            ).start()
            threading.Thread(
                target=self._server_to_client, args=(server, client, commands), daemon=True
            ).start()

    def _client_to_server(self, client: socket.socket, server: socket.socket, commands: deque[str]) -> None:
        buffer, in_data = b"", False
        with contextlib.suppress(OSError):
            while chunk := client.recv(65536):
                buffer += chunk
                while True:
                    if in_data:
                        end = buffer.find(b"\r\n.\r\n")
                        if end < 0:
                            buffer = buffer[-4:]
                            break
                        buffer, in_data = buffer[end + 5 :], False
                        commands.append(DATA_END)
                        continue
                    line_end = buffer.find(b"\r\n")
                    if line_end < 0:
                        break
                    line, buffer = buffer[:line_end], buffer[line_end + 2 :]
                    verb = line.split(b" ", 1)[0].split(b":", 1)[0].upper().decode("ascii", "replace")
                    commands.append(verb)
                    if verb == "DATA":
                        in_data = True
                        buffer = b"\r\n" + buffer  # a message may be empty: ".\r\n" at once
                # Forwarded only after its commands are noted, so their replies find them.
                server.sendall(chunk)
        with contextlib.suppress(OSError):
            server.close()

    def _server_to_client(self, server: socket.socket, client: socket.socket, commands: deque[str]) -> None:
        reader = server.makefile("rb")
        greeted = False
        with contextlib.suppress(OSError, ValueError, IndexError):
            while True:
                reply = b""
                while line := reader.readline():
                    reply += line
                    if line[3:4] != b"-":
                        break
                if not reply:
                    break
                verb = commands.popleft() if greeted else ""
                greeted = True
                fault = self._fault_for(verb) if verb else None
                if fault is not None and not fault.reply:
                    # shutdown, not only close: the other thread's recv holds the socket open.
                    for sock in (client, server):
                        sock.shutdown(socket.SHUT_RDWR)
                        sock.close()
                    return
                client.sendall(fault.reply if fault is not None else reply)
        with contextlib.suppress(OSError):
            client.close()
