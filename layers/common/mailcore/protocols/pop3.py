"""POP3 sessions of a mail account: implicit TLS, STLS or plain, with a redacted transcript.

Deletions (DELE) take effect only at QUIT: a session that breaks before QUIT deletes nothing.
"""

from __future__ import annotations

import contextlib
import poplib
import socket
import tempfile
from typing import IO, Any, BinaryIO, cast

from mailcore.errors import MailServerError
from mailcore.models import MailAccount, Pop3AuthForm, Security
from mailcore.oauth2 import describe_sasl_error, xoauth2_base64
from mailcore.protocols import reach
from mailcore.protocols.deadline import Deadline, bound, reader, send_all
from mailcore.protocols.diagnose import pop3_failure
from mailcore.protocols.session import AccountSession
from mailcore.protocols.transcript import REDACTED, Transcript

# Messages of 25 MB and more are normal in business mail; poplib's default line limit is 2 KB.
poplib._MAXLINE = max(poplib._MAXLINE, 1024 * 1024)  # type: ignore[attr-defined]
SPOOL_SLICE = 1024 * 1024
READ_BLOCK = 256 * 1024
# A UIDL listing is ~26 bytes a message and is held whole, with the mail ids made of it: 16 MB
# (~650,000 messages) peaked at 200 MB here, within the functions' 512 MB. More is a mailbox no
# pull can hold, or a server sending a listing that never ends: refused, not an out-of-memory death.
MAX_LISTING_BYTES = 16 * 1024 * 1024


class _Recording:
    """poplib, recording, with every read and write under the session's deadline
    (protocols/deadline.py): a server that drips a message or a listing a byte at a time is cut off."""

    transcript: Transcript
    _continuation = False
    source_address: tuple[str, int] | None = None
    file: BinaryIO
    sock: socket.socket
    _bounded_file: BinaryIO | None = None

    def __init__(
        self,
        transcript: Transcript,
        host: str,
        port: int,
        timeout: float,
        source_address: tuple[str, int] | None = None,
        deadline: Deadline | None = None,
        **options: Any,
    ) -> None:
        self.transcript = transcript
        self.source_address = source_address
        self.deadline = deadline or Deadline.never()
        self.per_operation = timeout
        super().__init__(host, port, timeout=timeout, **options)  # type: ignore[call-arg]

    def _create_socket(self, timeout: float) -> socket.socket:
        # Through protocols/reach.py; poplib cannot bind the client's address either, which the
        # check tool (and its tests) can ask for.
        host, port = self.host, self.port  # type: ignore[attr-defined]
        sock = reach.connect(host, port, timeout, self.source_address, self.deadline)
        if isinstance(self, poplib.POP3_SSL):
            bound(sock, self.deadline, timeout)  # the TLS handshake's time as a whole
            sock = self.context.wrap_socket(sock, server_hostname=host)  # type: ignore[attr-defined]
        return sock

    def _getline(self) -> tuple[bytes, int]:
        if self.file is not self._bounded_file:
            # poplib's own (made at the connect and after STLS) gives way to a bounded one; the
            # TLS handshake of STLS had the timeout the last read set, cut to the deadline too.
            self.file.close()
            bounded = reader(self.sock, self.deadline, self.per_operation)
            self.file = self._bounded_file = cast(BinaryIO, bounded)
        return super()._getline()  # type: ignore[misc]

    def _putline(self, line: bytes) -> None:
        send_all(self.sock, line + b"\r\n", self.deadline, self.per_operation)

    def _putcmd(self, line: str) -> None:
        if "\r" in line or "\n" in line:
            # poplib would send it: a second command on the session. Never echo it (a password?).
            raise poplib.error_proto("refused to send a POP3 command holding a line break")
        words = line.split(" ", 2)
        command = words[0].upper()
        if command == "PASS":
            shown = f"PASS {REDACTED}"
        elif command == "AUTH" and len(words) > 2:
            shown = f"AUTH {words[1]} {REDACTED}"
        elif self._continuation:
            shown = REDACTED
        else:
            shown = line
        self.transcript.client(shown)
        super()._putcmd(line)  # type: ignore[misc]

    def _getresp(self) -> bytes:
        try:
            response: bytes = super()._getresp()  # type: ignore[misc]
        except poplib.error_proto as error:
            self._continuation = False
            self.transcript.server(_text(error.args[0] if error.args else b""))
            raise
        self._continuation = response.startswith(b"+ ") or response == b"+"
        self.transcript.server(_text(response))
        return response


class RecordingPOP3(_Recording, poplib.POP3):
    pass


class RecordingPOP3SSL(_Recording, poplib.POP3_SSL):
    pass


class Pop3Session(AccountSession[MailAccount]):
    """One logged-in POP3 session of an account."""

    _pop: poplib.POP3 | None = None

    @property
    def login(self) -> str:
        return self.account.pop3_login

    def __exit__(self, exc_type: object, *rest: object) -> None:
        # Commit deletions only when the work in between went well; otherwise drop the line.
        self.close(commit=exc_type is None)

    @property
    def pop(self) -> poplib.POP3:
        if self._pop is None:
            raise RuntimeError("the POP3 session is not open")
        return self._pop

    def _fail(self, error: BaseException) -> Exception:
        failure = pop3_failure(
            self.out_of_time(error),
            self.account.pop3,
            username=self.account.pop3_login,
            oauth2=bool(self.access_token),
            sasl_error=self._sasl_error,
        )
        return self.transcript.redact_failure(failure)

    def _xoauth2(self, pop: poplib.POP3, token: str) -> None:
        oauth2 = self.account.oauth2
        form = oauth2.pop3_auth_form if oauth2 is not None else Pop3AuthForm.TWO_STEP
        payload = xoauth2_base64(self.account.pop3_login, token)
        if form is Pop3AuthForm.ONE_LINE:
            reply = pop._shortcmd(f"AUTH XOAUTH2 {payload}")  # type: ignore[attr-defined]
        else:
            pop._shortcmd("AUTH XOAUTH2")  # type: ignore[attr-defined]
            reply = pop._shortcmd(payload)  # type: ignore[attr-defined]
        if reply.startswith(b"+OK"):
            return
        # `+ <base64 JSON>`: the server's error; answer it with an empty line (RFC 7628 §3.2.3),
        # then it sends -ERR, which poplib raises.
        self._sasl_error = describe_sasl_error(reply[1:].strip()) or "unreadable"
        pop._shortcmd("")  # type: ignore[attr-defined]
        raise poplib.error_proto(b"-ERR the server accepted the XOAUTH2 error answer as a login")

    def open(self) -> None:
        if self._pop is not None:
            return  # opened already (see services/credentials.open_session)
        endpoint = self.account.pop3
        timeout = self.account.timeout_seconds
        self.transcript.note(f"connecting to {endpoint.host}:{endpoint.port} ({endpoint.security.value})")
        pop: poplib.POP3 | None = None
        try:
            if endpoint.security is Security.SSL:
                pop = RecordingPOP3SSL(
                    self.transcript,
                    endpoint.host,
                    endpoint.port,
                    timeout,
                    self.source_address,
                    self.deadline,
                    context=self.tls_context,
                )
            else:
                pop = RecordingPOP3(
                    self.transcript, endpoint.host, endpoint.port, timeout, self.source_address, self.deadline
                )
            if endpoint.security is Security.STARTTLS:
                pop.stls(context=self.tls_context)
            if self.access_token:
                self._xoauth2(pop, self.access_token)
            else:
                pop.user(self.account.pop3_login)
                pop.pass_(self.account.mail_password.get_secret_value())
        except Exception as error:
            if pop is not None:
                _close_quietly(pop)
            raise self._fail(error) from None
        self._pop = pop

    def stat(self) -> tuple[int, int]:
        """(message count, mailbox size in bytes)."""
        try:
            return self.pop.stat()
        except Exception as error:  # an answer without the numbers too (IndexError, ValueError)
            raise self._fail(error) from None

    def listing(self) -> list[tuple[int, str]]:
        """(message number, UIDL) of every message in the mailbox, in server order."""
        try:
            lines = _long_answer(self.pop, "UIDL", MAX_LISTING_BYTES)
            listing = []
            for line in lines:
                number, _, uidl = line.decode("ascii", "replace").partition(" ")
                listing.append((int(number), uidl.strip()))  # a number that is none: ValueError
        except _AnswerTooLong as error:
            endpoint = self.account.pop3
            raise MailServerError(
                f"POP3 server {endpoint.host}:{endpoint.port}: {error}; the mailbox is too large to "
                "list (over 600,000 messages), or the server is broken",
                problem="server_reply",
            ) from None
        except Exception as error:
            raise self._fail(error) from None
        return listing

    def retrieve(self, number: int) -> bytes:
        """The message's bytes as the server sent them, dot-stuffing undone.

        poplib's retr() makes a bytes object per line, a list of them and then a joined copy
        (a 25 MB message costs ~3.5 times its size, and the per-line work is most of a fetch's
        time). Here the answer is read in blocks and searched for its end; a message larger
        than a slice goes through a temporary file, so only one whole copy is ever in memory."""
        pop = self.pop
        try:
            pop._putcmd(f"RETR {number}")  # type: ignore[attr-defined]
            pop._getresp()  # type: ignore[attr-defined]
            return _read_multiline(pop.file)
        except Exception as error:
            raise self._fail(error) from None

    def delete(self, number: int) -> None:
        try:
            self.pop.dele(number)
        except Exception as error:
            raise self._fail(error) from None

    def close(self, *, commit: bool = True) -> None:
        if self._pop is None:
            return
        pop, self._pop = self._pop, None
        if commit:
            try:
                pop.quit()
                return
            except Exception as error:
                _close_quietly(pop)
                raise self._fail(error) from None
        _close_quietly(pop)


class _AnswerTooLong(Exception):
    pass


def _long_answer(pop: Any, command: str, limit: int) -> list[bytes]:
    """The lines of a multi-line answer (poplib's _longcmd), refused past `limit` bytes."""
    pop._putcmd(command)
    pop._getresp()
    lines: list[bytes] = []
    size = 0
    while True:
        line, octets = pop._getline()
        if line == b".":
            return lines
        size += octets
        if size > limit:
            raise _AnswerTooLong(f"its {command} answer ran over {limit // 2**20} MB")
        lines.append(line[1:] if line.startswith(b"..") else line)


def _unstuff(block: memoryview) -> bytes:
    """Undoes dot-stuffing in a block that starts at the start of a line."""
    data = bytes(block).replace(b"\r\n..", b"\r\n.")
    return data[1:] if data.startswith(b"..") else data


def _read_multiline(file: IO[bytes]) -> bytes:
    """The rest of a multi-line answer, up to its terminating CRLF "." CRLF (not included)."""
    # A CRLF in front, so that the end marker right away (an empty message) is found the same way.
    buffer = bytearray(b"\r\n")
    with contextlib.ExitStack() as cleanup:
        spool: IO[bytes] | None = None
        while True:
            block = file.read1(READ_BLOCK)  # type: ignore[attr-defined]
            if not block:
                raise poplib.error_proto("the connection closed in the middle of a message")
            searched_from = max(0, len(buffer) - 4)
            buffer += block
            end = buffer.find(b"\r\n.\r\n", searched_from)
            if end >= 0:
                if end + 5 != len(buffer):
                    raise poplib.error_proto("unexpected data after the end of a message")
                with memoryview(buffer) as view:
                    body = _unstuff(view[2 : end + 2])
                if spool is None:
                    return body
                spool.write(body)
                del body, buffer
                spool.seek(0)
                return spool.read()
            if len(buffer) > SPOOL_SLICE:
                # Write out whole lines, keeping the last CRLF and what follows (an end marker
                # or a stuffed dot may continue in the next block).
                cut = buffer.rfind(b"\r\n", 2)
                if cut > 2:
                    spool = spool or cleanup.enter_context(tempfile.TemporaryFile())
                    with memoryview(buffer) as view:
                        spool.write(_unstuff(view[2 : cut + 2]))
                    del buffer[:cut]


def _close_quietly(pop: Any) -> None:
    with contextlib.suppress(Exception):
        pop.close()


def _text(response: bytes | str) -> str:
    return response.decode("utf-8", "replace") if isinstance(response, bytes) else response
