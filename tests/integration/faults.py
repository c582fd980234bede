"""Faults injected between a client and the real servers (never a fake server)."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator


def closed_port() -> int:
    """A loopback port nobody listens on: connecting to it is refused."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextlib.contextmanager
def starttls_stripped(host: str, port: int) -> Iterator[int]:
    """A loopback proxy to the real SMTP or POP3 server at host:port that removes STARTTLS (SMTP
    EHLO) and STLS (POP3 CAPA) from the server's capabilities, as a misconfigured server (or an
    attacker downgrading) would; yields its port."""
    listener = socket.create_server(("127.0.0.1", 0))
    stopping = threading.Event()

    def pipe_client(client: socket.socket, server: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := client.recv(65536):
                server.sendall(data)
        with contextlib.suppress(OSError):
            server.shutdown(socket.SHUT_WR)

    def pipe_server(server: socket.socket, client: socket.socket) -> None:
        buffered = b""
        with contextlib.suppress(OSError):
            while data := server.recv(65536):
                buffered += data
                *lines, buffered = buffered.split(b"\r\n")
                kept = [line for line in lines if line[4:].upper() != b"STARTTLS" and line.upper() != b"STLS"]
                if kept:
                    client.sendall(b"".join(line + b"\r\n" for line in kept))
        with contextlib.suppress(OSError):
            client.shutdown(socket.SHUT_WR)

    def serve() -> None:
        while not stopping.is_set():
            try:
                client, _ = listener.accept()
            except OSError:
                return
            server = socket.create_connection((host, port))
            threading.Thread(target=pipe_client, args=(client, server), daemon=True).start()
            threading.Thread(target=pipe_server, args=(server, client), daemon=True).start()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield int(listener.getsockname()[1])
    finally:
        stopping.set()
        with contextlib.suppress(OSError):
            listener.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept(); close() alone does not
        listener.close()
        thread.join(timeout=5)
