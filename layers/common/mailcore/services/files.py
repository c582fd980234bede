"""Files of a team (uploads for attachments, attachments received) and reading stored mail."""

from __future__ import annotations

import base64
import binascii
from datetime import UTC, datetime

from mailcore.errors import Conflict, InvalidInput, NotAMember, NotFound
from mailcore.ids import new_id
from mailcore.models import Direction, Mail, StoredFile
from mailcore.storage import Storage, file_key
from mailcore.teams import Caller

# What fits in an API Gateway request (10 MB) once base64 grows it by a third; larger files
# are uploaded straight to S3 with a presigned URL.
MAX_INLINE_BYTES = 7 * 1024 * 1024
MAX_FILE_BYTES = 40 * 1024 * 1024
# Parsing a mail again answers an API caller, whom API Gateway gives 29 s in all.
REPARSE_SECONDS = 20.0
# A raw message parsed again is read whole into this function's memory (512 MB), then copied to
# the parser child, whose budget (256 MiB) is ~5x the peak of a 50 MB mail: a larger raw message
# cannot be parsed anyway, and one of hundreds of MB would end the function out of memory (a 502).
MAX_REPARSE_BYTES = 64 * 1024 * 1024


def choose_team(caller: Caller, team: str | None) -> str:
    if team is not None:
        if team not in caller.teams:
            raise NotAMember(f"you are not a member of team {team!r}", field="team")
        return team
    if len(caller.teams) == 1:
        return next(iter(caller.teams))
    raise InvalidInput("you belong to several teams (or none): name the team", field="team")


def store_file(
    caller: Caller,
    *,
    team: str | None,
    name: str,
    content_type: str,
    content: str | None,
    size: int | None,
    storage: Storage,
) -> tuple[StoredFile, str | None]:
    """Stores a file from base64 `content`, or, given only its `size`, registers it and answers a
    presigned URL to PUT its bytes to (the file may be attached once they are there)."""
    owner = choose_team(caller, team)
    file_id = new_id()
    key = file_key(owner, file_id)
    now = datetime.now(UTC)
    if content is not None:
        try:
            data = base64.b64decode(content, validate=True)
        except (binascii.Error, ValueError):
            raise InvalidInput("content must be base64", field="content") from None
        if len(data) > MAX_INLINE_BYTES:
            raise InvalidInput(
                f"content is larger than {MAX_INLINE_BYTES} bytes: send size instead to get an upload URL",
                field="content",
            )
        storage.blobs.put(key, data, content_type)
        stored = StoredFile(
            id=file_id,
            team=owner,
            name=name,
            content_type=content_type,
            size=len(data),
            s3_key=key,
            created_at=now,
        )
        storage.files.put(stored)
        return stored, None
    if size is None:
        raise InvalidInput("give the file's content (base64) or its size for an upload URL", field="content")
    if size > MAX_FILE_BYTES:
        raise InvalidInput(f"files are limited to {MAX_FILE_BYTES} bytes", field="size")
    stored = StoredFile(
        id=file_id,
        team=owner,
        name=name,
        content_type=content_type,
        size=size,
        s3_key=key,
        created_at=now,
        uploaded=False,
    )
    storage.files.put(stored)
    return stored, storage.blobs.upload_url(key, content_type=content_type)


def team_file(caller: Caller, file_id: str, storage: Storage) -> tuple[StoredFile, str]:
    """A file of one of the caller's teams with a presigned download URL."""
    stored = storage.files.get(file_id)
    if stored is None:
        raise NotFound(f"no file {file_id!r}", field="file_id")
    if stored.team not in caller.teams:
        raise NotAMember("the file belongs to a team you are not a member of", field="file_id")
    url = storage.blobs.download_url(stored.s3_key, filename=stored.name, content_type=stored.content_type)
    return stored, url


def team_raw_mail(caller: Caller, mail_id: str, storage: Storage) -> tuple[Mail, str]:
    """A mail of one of the caller's teams with a presigned URL to its raw message: the only way
    to look at a mail stored with a parse_error."""
    mail = team_mail(caller, mail_id, storage)
    if not mail.raw_key:
        raise NotFound(f"mail {mail_id!r} has no raw message", field="mail_id")
    url = storage.blobs.download_url(mail.raw_key, filename=f"{mail.id}.eml", content_type="message/rfc822")
    return mail, url


def parse_again(caller: Caller, mail_id: str, storage: Storage) -> Mail:
    """A received mail parsed again from its raw message (after a parser fix), keeping its id,
    status and time; its attachments are written again under the same file ids."""
    # Imported here: the pull's code (POP3 included) is not worth the store function's cold start.
    from mailcore.mime.isolated import IsolatedParser, OutOfTime, OverBudget
    from mailcore.services.pull import parse_incoming

    mail = team_mail(caller, mail_id, storage)
    if mail.direction is not Direction.IN or not mail.raw_key:
        raise Conflict("only a received mail is parsed from its raw message", field="mail_id")
    raw = storage.blobs.get_at_most(mail.raw_key, MAX_REPARSE_BYTES)
    if raw is None:
        raise Conflict(
            f"the raw message is larger than the {MAX_REPARSE_BYTES // 2**20} MB that can be parsed again; "
            "download it (GET .../raw)",
            field="mail_id",
        )
    # The raw message may be one the pull set aside for its cost: it gets the same per-message
    # budget here, cut to what an API caller can wait for.
    with IsolatedParser() as parser:
        try:
            incoming = parse_incoming(
                mail.team,
                mail.account,
                mail.id,
                mail.uidl,
                raw,
                received=mail.created_at,
                parse=lambda data: parser.parse(data, seconds_left=REPARSE_SECONDS),
            )
        except OverBudget as over:
            raise Conflict(
                f"the raw message cannot be parsed within its budget: {over.bound}", field="mail_id"
            ) from None
        except OutOfTime:
            raise Conflict(
                f"the raw message cannot be parsed within the {REPARSE_SECONDS:.0f} s an API call has",
                field="mail_id",
            ) from None
    for stored, data in incoming.files:
        storage.blobs.put(stored.s3_key, data, stored.content_type)
        storage.files.put(stored)
    again = incoming.mail.model_copy(update={"status": mail.status})
    if not storage.mail.replace(again):
        raise NotFound(f"no mail {mail_id!r}", field="mail_id")
    return again


def team_mail(caller: Caller, mail_id: str, storage: Storage) -> Mail:
    mail = storage.mail.get(mail_id)
    if mail is None:
        raise NotFound(f"no mail {mail_id!r}", field="mail_id")
    if mail.team not in caller.teams:
        raise NotAMember("the mail belongs to a team you are not a member of", field="mail_id")
    return mail
