"""One deadline over a whole conversation with a server (a connect, a session, a token request).

A socket timeout bounds one operation only: a server that drips a byte just inside it keeps a
reply, a message or a session going for as long as it likes, past the time the function has to
answer (API Gateway's 29 s) or to live (its Timeout). Every socket operation here gets the
per-operation timeout cut to what is left of the deadline, and none starts after it has passed.
"""

from __future__ import annotations

import io
import math
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass

# A message goes out in slices, so that a server reading slowly meets the deadline between two
# (SSLSocket.sendall gives every TLS record its own timeout, the whole message none).
SEND_SLICE = 64 * 1024


class DeadlinePassed(TimeoutError):
    """The conversation ran past its deadline. A TimeoutError: whatever handles a timeout handles it."""


@dataclass(frozen=True)
class Deadline:
    """`at` on the monotonic clock; `seconds`, the time it gave, for messages."""

    at: float
    seconds: float

    @classmethod
    def after(cls, seconds: float) -> Deadline:
        seconds = max(seconds, 0.0)
        return cls(time.monotonic() + seconds, seconds)

    @classmethod
    def never(cls) -> Deadline:
        return cls(math.inf, math.inf)

    @classmethod
    def ahead_of(cls, seconds_left: Callable[[], float] | None, margin: float) -> Deadline:
        """`margin` seconds before the caller's time runs out (what it needs after the
        conversation: storing, recording, answering); never, when the caller has no limit."""
        return cls.never() if seconds_left is None else cls.after(seconds_left() - margin)

    def left(self) -> float:
        return self.at - time.monotonic()

    def passed(self) -> bool:
        return self.left() <= 0

    def earlier(self, seconds: float | None) -> Deadline:
        """This deadline, or the one `seconds` from now when that comes first."""
        if seconds is None:
            return self
        other = Deadline.after(seconds)
        return other if other.at < self.at else self

    def timeout(self, per_operation: float | None) -> float | None:
        """The timeout of the next socket operation; raises DeadlinePassed when none is left."""
        left = self.left()
        if left <= 0:
            raise self.error()
        if per_operation is None:
            return None if math.isinf(left) else left
        return min(per_operation, left)

    def told(self) -> str:
        """The time it gave, in words ("1.5 s", "25 s")."""
        return f"{round(self.seconds, 1):g} s"

    def error(self, what: str = "the server") -> DeadlinePassed:
        return DeadlinePassed(f"{what} did not finish within the {self.told()} it had")


def bound(sock: socket.socket, deadline: Deadline, per_operation: float | None) -> None:
    """Sets the timeout of `sock`'s next operation."""
    sock.settimeout(deadline.timeout(per_operation))


def _within_deadline(deadline: Deadline, error: TimeoutError) -> TimeoutError:
    """A timeout that the deadline cut short is told as the deadline's."""
    return deadline.error() if deadline.passed() else error


class _DeadlineRaw(io.RawIOBase):
    """The reading side of a socket, each read bounded by the deadline."""

    def __init__(self, sock: socket.socket, deadline: Deadline, per_operation: float | None) -> None:
        self._raw = sock.makefile("rb", buffering=0)
        self._sock, self._deadline, self._per_operation = sock, deadline, per_operation

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int | None:  # type: ignore[override]
        bound(self._sock, self._deadline, self._per_operation)
        try:
            return self._raw.readinto(buffer)
        except TimeoutError as error:
            raise _within_deadline(self._deadline, error) from None

    def close(self) -> None:
        self._raw.close()
        super().close()


def reader(sock: socket.socket, deadline: Deadline, per_operation: float | None) -> io.BufferedReader:
    """What `sock.makefile("rb")` is, with every read under the deadline."""
    return io.BufferedReader(_DeadlineRaw(sock, deadline, per_operation))


def send_all(sock: socket.socket, data: bytes, deadline: Deadline, per_operation: float | None) -> None:
    """`sock.sendall(data)`, in slices, under the deadline."""
    with memoryview(data) as view:
        for start in range(0, max(len(view), 1), SEND_SLICE):
            bound(sock, deadline, per_operation)
            try:
                sock.sendall(view[start : start + SEND_SLICE])
            except TimeoutError as error:
                raise _within_deadline(deadline, error) from None
