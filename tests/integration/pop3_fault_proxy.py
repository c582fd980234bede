"""A TCP proxy between the pull and the real Dovecot that breaks the line at a chosen command:
the honest way to cut a connection between RETR and DELE, or before QUIT."""

from __future__ import annotations

import contextlib
import socket
import threading


class Pop3FaultProxy:
    """Forwards POP3 connections to `upstream`. In the first connection, when the client sends
    the `cut_on`-th `cut_at` command, the proxy closes both sides instead of forwarding it; when
    it sends `hold_at`, the command waits until `release()` (to keep a pull busy)."""

    def __init__(
        self,
        upstream: tuple[str, int],
        *,
        cut_at: str | None = None,
        cut_on: int = 1,
        hold_at: str | None = None,
    ) -> None:
        self.upstream = upstream
        self.cut_at, self.cut_on, self.hold_at = cut_at, cut_on, hold_at
        self.cuts = 0
        self.held = threading.Event()
        self._released = threading.Event()
        self._connections = 0
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def release(self) -> None:
        self._released.set()

    def close(self) -> None:
        self._released.set()
        self._listener.close()

    def __enter__(self) -> Pop3FaultProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            self._connections += 1
            server = socket.create_connection(self.upstream)
            faulty = self._connections == 1
            threading.Thread(target=self._copy, args=(server, client), daemon=True).start()
            threading.Thread(target=self._commands, args=(client, server, faulty), daemon=True).start()

    @staticmethod
    def _copy(source: socket.socket, target: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                target.sendall(data)
        with contextlib.suppress(OSError):
            target.shutdown(socket.SHUT_WR)

    def _commands(self, client: socket.socket, server: socket.socket, faulty: bool) -> None:
        seen = 0
        pending = b""
        try:
            while data := client.recv(65536):
                pending += data
                while b"\r\n" in pending:
                    line, pending = pending.split(b"\r\n", 1)
                    command = line.split(b" ", 1)[0].decode("ascii", "replace").upper()
                    if faulty and command == self.cut_at:
                        seen += 1
                        if seen == self.cut_on:
                            self.cuts += 1
                            for side in (client, server):
                                with contextlib.suppress(OSError):
                                    side.shutdown(socket.SHUT_RDWR)
                                side.close()
                            return
                    if faulty and command == self.hold_at and not self._released.is_set():
                        self.held.set()
                        self._released.wait(30)
                    server.sendall(line + b"\r\n")
        except OSError:
            pass
        with contextlib.suppress(OSError):
            server.shutdown(socket.SHUT_WR)
