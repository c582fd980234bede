"""Putting messages straight into a local mailbox's Maildir: what a delivery would leave there,
thousands a second, for tests and benchmarks that need big mailboxes (SMTP manages ~700/s)."""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import Iterable
from pathlib import Path

from local.mailservers import MAIL_GID, MAIL_UID, MailServers


def _folder(path: Path) -> None:
    if not path.is_dir():
        path.mkdir(mode=0o700)
        os.chown(path, MAIL_UID, MAIL_GID)


def deliver_files(servers: MailServers, address: str, messages: Iterable[bytes]) -> int:
    """Writes each message (CRLF or LF line ends; Dovecot serves CRLF) into the mailbox's
    Maildir/new the Maildir way (tmp, then rename), owned by the mail uid; answers how many."""
    maildir = servers.maildir(address)
    for folder in (
        maildir.parent.parent,
        maildir.parent,
        maildir,
        maildir / "new",
        maildir / "cur",
        maildir / "tmp",
    ):
        _folder(folder)
    count = 0
    for raw in messages:
        name = f"{int(time.time())}.M{time.time_ns() % 1_000_000}P{os.getpid()}Q{secrets.token_hex(6)}.local"
        temporary = maildir / "tmp" / name
        temporary.write_bytes(raw.replace(b"\r\n", b"\n"))
        os.chown(temporary, MAIL_UID, MAIL_GID)
        temporary.rename(maildir / "new" / name)
        count += 1
    return count
