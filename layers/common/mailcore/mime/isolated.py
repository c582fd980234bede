"""Received mail parsed in a child process that has a budget of time and memory per message.

Some steps of parsing cannot be bounded inside the pull's own process: nh3 is a C extension that
no signal interrupts, the pull runs on a thread (no SIGALRM there), and a Python process cannot
cap the memory of one piece of its own work. So a pull hands each message to one long-lived child
(`python -m mailcore.mime.isolated`) that parses it under `RLIMIT_AS` and answers the parsed
mail; when the child overruns the time it is killed, when it runs out of memory it says so (or
dies), and the next message gets a fresh child. The child gets no credentials: its environment is
only the import path.

Wire format, both ways: an 8-byte big-endian length, then that many bytes. Parent to child: the
raw message. Child to parent: one status byte (`O` parsed, `M` out of memory) and, after `O`,
the parsed mail in `marshal` format (plain data only: marshal builds no objects of other types).
"""

from __future__ import annotations

import contextlib
import marshal
import os
import resource
import select
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any, BinaryIO

from mailcore.mime.parse import ParsedAttachment, ParsedMail, parse_message

# A Lambda of 512 MB runs the pull (~100 MB), its writes in flight (48 MB) and this child. 256 MiB
# is ~5x the peak of parsing a 35 MB mail (the largest that common providers accept, base64).
PREPARE_MEMORY_BYTES = 256 * 1024 * 1024
# Time: 5 s and 0.5 s per MB of the message. Ordinary mail parses at ~0.05 s per MB here (a 35 MB
# mail of attachments in 1.7 s); a Lambda of 512 MB has ~0.3 of a core, ~0.17 s per MB there.
PREPARE_SECONDS = 5.0
PREPARE_SECONDS_PER_MB = 0.5
_LENGTH = struct.Struct(">Q")
_CHUNK = 1024 * 1024
_READY = b"R"
_START_SECONDS = 30.0
# Environment the interpreter needs to start (shared libraries: the runtime's and the layers'
# /opt/lib), never AWS_* (the credentials) nor the function's own variables.
_INTERPRETER_ENVIRONMENT = ("LD_LIBRARY_PATH", "PYTHONHOME")


class ParserUnavailable(RuntimeError):
    """The parser process could not be started: the service's fault, not the message's."""


class OverBudget(Exception):
    """The message could not be parsed within its budget; `bound` says which one, in words."""

    def __init__(self, bound: str, *, time: bool = False) -> None:
        super().__init__(bound)
        self.bound, self.time = bound, time


class OutOfTime(Exception):
    """The invocation's time ran out while a message was parsed within its budget: the message
    is not at fault, the next pull takes it again."""


class IsolatedParser:
    """`parse(raw)` as `parse_message(raw)`, in the child; raises OverBudget. Use it as a context
    manager (the child is started on first use and stopped at the end)."""

    def __init__(
        self,
        seconds: float = PREPARE_SECONDS,
        memory: int = PREPARE_MEMORY_BYTES,
        seconds_per_mb: float = PREPARE_SECONDS_PER_MB,
    ) -> None:
        self.seconds, self.memory, self.seconds_per_mb = seconds, memory, seconds_per_mb
        self.over_memory = (
            f"preparing it needed more than {memory // 2**20} MiB (the per-message memory budget)"
        )
        self._child: subprocess.Popen[bytes] | None = None

    def budget(self, size: int) -> float:
        """The seconds a message of `size` bytes may take."""
        return self.seconds + self.seconds_per_mb * size / 2**20

    def __enter__(self) -> IsolatedParser:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        child, self._child = self._child, None
        if child is not None:
            with contextlib.suppress(OSError):
                child.kill()
            child.wait()
            for stream in (child.stdin, child.stdout):
                if stream is not None:
                    stream.close()

    def _started(self) -> subprocess.Popen[bytes]:
        if self._child is None or self._child.poll() is not None:
            self.close()
            path = os.pathsep.join(entry for entry in sys.path if entry)
            self._child = subprocess.Popen(
                [sys.executable, "-m", "mailcore.mime.isolated", str(self.memory)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                env=_child_environment(path),
            )
            assert self._child.stdout is not None
            try:  # a child that cannot start is the service's fault, not the message's
                ready = _read(self._child.stdout.fileno(), 1, time.monotonic() + _START_SECONDS)
            except (TimeoutError, OSError) as error:
                self.close()
                raise ParserUnavailable("the mail parser process did not start") from error
            assert ready == _READY
        return self._child

    def parse(self, raw: bytes, *, seconds_left: float | None = None) -> ParsedMail:
        """Raises OverBudget, or OutOfTime when `seconds_left` (the invocation's time) ran out
        before the message's budget did."""
        budget = self.budget(len(raw))
        if seconds_left is not None and seconds_left < budget:
            try:
                return self._parse(raw, max(seconds_left, 0.0))
            except OverBudget as over:
                if over.time:
                    raise OutOfTime from None
                raise
        return self._parse(raw, budget)

    def _parse(self, raw: bytes, seconds: float) -> ParsedMail:
        child = self._started()
        assert child.stdin is not None and child.stdout is not None
        deadline = time.monotonic() + seconds
        try:
            _send(child.stdin.fileno(), _LENGTH.pack(len(raw)), deadline)
            _send(child.stdin.fileno(), raw, deadline)
            answer = _receive(child.stdout.fileno(), deadline)
        except TimeoutError:
            self.close()
            raise OverBudget(
                f"preparing it took more than {seconds:.1f} s (the per-message time budget)", time=True
            ) from None
        except OSError:  # the child died: killed by the kernel for memory, or crashed
            self.close()
            raise OverBudget(self.over_memory) from None
        if answer[:1] != b"O":
            self.close()
            raise OverBudget(self.over_memory)
        return _from_wire(marshal.loads(answer[1:]))


def _child_environment(path: str) -> dict[str, str]:
    """The import path and what the interpreter itself needs to start, no credentials. Lambda's
    python is linked against /var/lang/lib/libpython, found through LD_LIBRARY_PATH only: a child
    started without it dies before it runs a line (every pull would fail in the cloud only)."""
    environment = {"PYTHONPATH": path, "PYTHONDONTWRITEBYTECODE": "1"}
    for name in _INTERPRETER_ENVIRONMENT:
        if name in os.environ:
            environment[name] = os.environ[name]
    return environment


class ParserPool:
    """Parser processes kept between pulls of this process (a child starts in ~0.1 s), one per
    pull running at a time."""

    def __init__(self, make: Callable[[], IsolatedParser] = IsolatedParser) -> None:
        self._idle: list[IsolatedParser] = []
        self._lock = threading.Lock()
        self._make = make

    @contextlib.contextmanager
    def borrowed(self) -> Iterator[IsolatedParser]:
        with self._lock:
            parser = self._idle.pop() if self._idle else self._make()
        try:
            yield parser
        finally:
            with self._lock:
                self._idle.append(parser)


PARSERS = ParserPool()


def _wait(fd: int, deadline: float, *, writing: bool) -> None:
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError
    ready = select.select([], [fd], [], left) if writing else select.select([fd], [], [], left)
    if not any(ready):
        raise TimeoutError


def _send(fd: int, data: bytes, deadline: float) -> None:
    view = memoryview(data)
    while view:
        _wait(fd, deadline, writing=True)
        view = view[os.write(fd, view[:_CHUNK]) :]


def _receive(fd: int, deadline: float) -> bytes:
    header = _read(fd, _LENGTH.size, deadline)
    return _read(fd, _LENGTH.unpack(header)[0], deadline)


def _read(fd: int, size: int, deadline: float) -> bytes:
    pieces: list[bytes] = []
    while size:
        _wait(fd, deadline, writing=False)
        piece = os.read(fd, min(size, _CHUNK))
        if not piece:
            raise ChildProcessError("the parser process ended")
        pieces.append(piece)
        size -= len(piece)
    return b"".join(pieces)


def _to_wire(mail: ParsedMail) -> dict[str, Any]:
    data = dict(vars(mail))
    data["date"] = mail.date.isoformat() if mail.date else None
    data["attachments"] = [
        (item.filename, item.content_type, item.data, item.content_id, item.inline)
        for item in mail.attachments
    ]
    return data


def _from_wire(data: dict[str, Any]) -> ParsedMail:
    date = data.pop("date")
    attachments = [ParsedAttachment(*item) for item in data.pop("attachments")]
    return ParsedMail(**data, date=datetime.fromisoformat(date) if date else None, attachments=attachments)


def _read_exactly(stream: BinaryIO, size: int) -> bytes | None:
    data = stream.read(size)
    return data if len(data) == size else None


def serve(memory: int, requests: BinaryIO, answers: BinaryIO) -> None:
    """The child: parses each message it reads, until its input ends."""
    with open("/proc/self/status") as status:
        start = next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmSize:"))
    resource.setrlimit(resource.RLIMIT_AS, (start + memory, start + memory))
    answers.write(_READY)
    answers.flush()
    while (header := _read_exactly(requests, _LENGTH.size)) is not None:
        try:
            raw = _read_exactly(requests, _LENGTH.unpack(header)[0])
            if raw is None:
                return
            answer = b"O" + marshal.dumps(_to_wire(parse_message(raw)))
        except MemoryError:
            answer = b"M"
        raw = None
        answers.write(_LENGTH.pack(len(answer)) + answer)
        answers.flush()
        if answer == b"M":
            return  # a fresh child for the next message: this one's heap may be left fragmented


if __name__ == "__main__":
    serve(int(sys.argv[1]), sys.stdin.buffer, sys.stdout.buffer)
