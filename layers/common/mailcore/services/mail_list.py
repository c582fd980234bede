"""Listing a team's stored mail newest first, with filters and an opaque cursor.

With several teams each team's partition (ByTeam index) is queried and the answers merged newest
first; the cursor then holds, per team still having mail, the sort key of the last mail of that
team the caller has seen (base64url of JSON {"v": 1, "after": {team: created_key}}). A team
missing from a cursor has no more mail to list.
"""

from __future__ import annotations

import base64
import binascii
import heapq
import json
import re
from datetime import UTC, date, datetime
from typing import Any

from mailcore.errors import InvalidInput, NotAMember
from mailcore.models import ID_PATTERN, Direction, Mail, MailStatus
from mailcore.storage import MailQuery, Storage, created_key
from mailcore.teams import Caller

DEFAULT_LIMIT = 50
MAX_LIMIT = 100
_CREATED_KEY = re.compile(r"^\d{4}-\d{2}-\d{2}T[0-9:.]+(Z|[+-]\d{2}:\d{2})#" + ID_PATTERN[1:])
_SUMMARY_EXCLUDE = {"raw_key", "body_text", "body_html"}


def since_key(since: date | datetime) -> str:
    """The created_key prefix every mail created at or after `since` sorts at or after."""
    moment = (
        since if isinstance(since, datetime) else datetime(since.year, since.month, since.day, tzinfo=UTC)
    )
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S")


def mail_query(
    *,
    account: str | None = None,
    direction: Direction | None = None,
    status: MailStatus | None = None,
    since: date | datetime | None = None,
) -> MailQuery:
    """The listing's filters as the storage takes them (None: any)."""
    return MailQuery(
        account=account,
        direction=direction.value if direction else None,
        status=status.value if status else None,
        since=since_key(since) if since else None,
    )


def encode_cursor(after: dict[str, str]) -> str:
    text = json.dumps({"v": 1, "after": after}, sort_keys=True, separators=(",", ":"))
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def decode_cursor(cursor: str, teams: set[str]) -> dict[str, str]:
    """The per-team positions of a cursor; 400 naming "cursor" for anything not made by
    encode_cursor for these teams (tampered, truncated, or another team's)."""
    try:
        data = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise InvalidInput("the cursor is not one this API gave out", field="cursor") from None
    after = data.get("after") if isinstance(data, dict) and data.get("v") == 1 else None
    if not isinstance(after, dict) or not all(
        isinstance(team, str) and isinstance(key, str) and (key == "" or _CREATED_KEY.match(key))
        for team, key in after.items()
    ):
        raise InvalidInput("the cursor is not one this API gave out", field="cursor")
    if not set(after) <= teams:
        raise InvalidInput("the cursor belongs to other teams than this listing", field="cursor")
    return after


def list_mail(
    caller: Caller,
    *,
    storage: Storage,
    team: str | None = None,
    query: MailQuery | None = None,
    cursor: str | None = None,
    limit: int = DEFAULT_LIMIT,
) -> dict[str, Any]:
    """The caller's teams' mail (or one team's) newest first: summaries without bodies (GET
    /api/core/mail/{id} answers a whole mail) and the cursor of the next page, or None."""
    if not 1 <= limit <= MAX_LIMIT:
        raise InvalidInput(f"limit must be 1 to {MAX_LIMIT}", field="limit")
    if team is not None and team not in caller.teams:
        raise NotAMember(f"you are not a member of team {team!r}", field="team")
    teams = {team} if team is not None else set(caller.teams)
    query = query or MailQuery()
    positions: dict[str, str | None] = (
        dict.fromkeys(sorted(teams)) if cursor is None else dict(decode_cursor(cursor, teams))
    )

    pages: dict[str, tuple[list[Mail], bool]] = {
        name: storage.mail.list_team(name, query, after=after or None, limit=limit)
        for name, after in positions.items()
    }
    keyed = heapq.merge(
        *([(created_key(mail), name, mail) for mail in mails] for name, (mails, _) in pages.items()),
        key=lambda entry: entry[0],
        reverse=True,
    )
    chosen = [entry for _, entry in zip(range(limit), keyed, strict=False)]
    last_seen = {name: key for key, name, _ in chosen}
    next_after: dict[str, str] = {}
    for name, (mails, more) in pages.items():
        taken = sum(1 for _, owner, _ in chosen if owner == name)
        if taken < len(mails) or more:
            # "" when nothing of this team made a page yet: its listing starts at its newest.
            next_after[name] = last_seen.get(name, positions[name] or "")
    return {
        "mail": [
            mail.model_dump(mode="json", by_alias=True, exclude=_SUMMARY_EXCLUDE) for _, _, mail in chosen
        ],
        "cursor": encode_cursor(next_after) if next_after else None,
    }
