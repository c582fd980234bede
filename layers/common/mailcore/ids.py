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


def keyed_mail_id(team: str, account: str, caller: str, key: str, day: int) -> str:
    """The id of an outgoing mail a caller sends with an Idempotency-Key, derived from what
    identifies the request: every run of the same request (a retry after the first died) gets the
    same id, so a conditional put of its item finds the first run's mail instead of sending again.

    `day` (days since the epoch) scopes the key to a window, as Powertools' record is: the key of
    yesterday's mail is free again after 24 hours (services/send.py looks at today's and
    yesterday's ids). Nothing secret goes in, and the team does: another team cannot make this id
    (its own requests hash its own name), and reads check the caller's team (services/files.py).
    """
    parts = ("keyed-send", team, account, caller, key, str(day))
    digest = hashlib.sha256("\0".join(parts).encode()).hexdigest()
    # As long as new_id (32 characters): the Message-ID that carries it keeps its length, so a
    # header line that fits today still fits (no folding).
    return f"k{digest[:31]}"
