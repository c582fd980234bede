"""How the SMTP client reads a server's replies, against a scripted server on loopback."""

from __future__ import annotations

import smtplib
import socket
import threading
import tracemalloc
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
def endless_server() -> Iterator[tuple[int, list[int]]]:
    listener = socket.create_server(("127.0.0.1", 0))
    sent = [0]
    server = threading.Thread(target=_endless_greeting, args=(listener, sent), daemon=True)
    server.start()
    yield listener.getsockname()[1], sent
    listener.close()
    server.join(timeout=10)


def test_a_reply_that_never_ends_is_cut_off_after_max_reply_bytes(endless_server):
    port, sent = endless_server
    tracemalloc.start()
    with pytest.raises(smtplib.SMTPServerDisconnected, match="ran over"):
        RecordingSMTP("127.0.0.1", port, timeout=10, transcript=Transcript())
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    # Read what fits in a reply and a socket buffer or two, not the 100 MB on offer.
    assert peak < 20 * MAX_REPLY_BYTES
    assert sent[0] < 100_000_000
