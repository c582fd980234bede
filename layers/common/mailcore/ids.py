"""Identifiers of mail and files."""

from __future__ import annotations

import hashlib
import secrets
import time


def new_id() -> str:
    """A fresh id that sorts by creation time (48-bit milliseconds, then 80 random bits), like a ULID."""
    return f"{int(time.time() * 1000):012x}{secrets.token_hex(10)}"


def incoming_mail_id(team: str, account: str, mailbox: str, uidl: str) -> str:
    """The id of a pulled message, derived from its identity on the server.

    The same message pulled twice gets the same id, so a conditional put of its item is the
    exactly-once guard, and a crash between storing and deleting it can never store it twice.
    `mailbox` (host and login) keeps two mailboxes behind one account name apart.
    """
    digest = hashlib.sha256("\0".join((team, account, mailbox, uidl)).encode()).hexdigest()
    return f"in{digest[:40]}"
