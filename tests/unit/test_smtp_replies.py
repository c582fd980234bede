"""How the SMTP client reads a server's replies, against a scripted server on loopback."""

from __future__ import annotations

import smtplib
import socket
import threading
from collections.abc import Iterator

import pytest
from mailcore.protocols.smtp import MAX_REPLY_BYTES, RecordingSMTP
from mailcore.protocols.transcript import Transcript


def _endless_greeting(listener: socket.socket, sent: list[int]) -> None:
    connection, _ = listener.accept()
    line = b"220-" + b"x" * 500 + b"\r\n"
    try:
        for _ in range(200_000):  # 100 MB, if nobody stops reading
            connection.sendall(line)
            sent[0] += len(line)
    except OSError:
        pass
    finally:
        connection.close()


@pytest.fixture
def endless_server() -> Iterator[tuple[int, list[int], threading.Thread]]:
    listener = socket.create_server(("127.0.0.1", 0))
    sent = [0]
    server = threading.Thread(target=_endless_greeting, args=(listener, sent), daemon=True)
    server.start()
    yield listener.getsockname()[1], sent, server
    listener.close()
    server.join(timeout=10)


def test_a_reply_that_never_ends_is_cut_off_after_max_reply_bytes(endless_server):
    port, sent, server = endless_server
    with pytest.raises(smtplib.SMTPServerDisconnected, match="ran over"):
        RecordingSMTP("127.0.0.1", port, timeout=10, transcript=Transcript())
    server.join(timeout=10)
    # The client hung up after MAX_REPLY_BYTES: the server got rid of what fits in the socket
    # buffers (a few MB on loopback), not the 100 MB on offer that smtplib would read.
    assert not server.is_alive() and sent[0] < 300 * MAX_REPLY_BYTES
