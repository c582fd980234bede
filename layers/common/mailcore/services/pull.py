"""Pulling new mail of team accounts over POP3 into storage.

Order per message: raw bytes to the bucket, attachments to the file store, then the item with a
conditional put, and only then (when the account asks for it) DELE. The item's id derives from
the message's UIDL, so a message pulled again after a crash or by a concurrent pull is never
stored twice: the conditional put refuses the second copy. A lease per account (see
mailcore.adapters.dynamodb) keeps a second pull from downloading the mailbox at the same time.

The writes of a message run on a small thread pool while the next message is fetched and
parsed: against real S3/DynamoDB latencies a loop waiting for each write would spend most of its
time waiting. Parsing stays on the pull's own thread: on a writer thread it would hold the GIL
against the socket reads of the next RETR (each read then waits for the GIL). DELE of a message
is sent only once its own writes completed.
"""

from __future__ import annotations

import contextlib
import mimetypes
import ssl
import sys
import time
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from typing import Any, NotRequired, Protocol, TypedDict, Unpack

from aws_lambda_powertools import Logger

from mailcore import bounces, telemetry
from mailcore.errors import MailServerError, PullRunning, StoreRefused
from mailcore.events import MAIL_RECEIVED, MAIL_SET_ASIDE, MailEvent
from mailcore.ids import incoming_mail_id, new_id
from mailcore.mime.isolated import PARSERS, OutOfTime, OverBudget, ParserUnavailable
from mailcore.mime.parse import ParsedMail, cheap_headers, parse_message
from mailcore.models import AccountPullReport, Direction, Mail, MailStatus, StoredFile
from mailcore.oauth2 import OAuth2Error, TokenBroker
from mailcore.ports import EventPublisher
from mailcore.protocols.deadline import Deadline
from mailcore.protocols.diagnose import from_rewritten_warning
from mailcore.protocols.pop3 import Pop3Session
from mailcore.protocols.transcript import Transcript
from mailcore.services.credentials import broken_mark, open_session
from mailcore.storage import PullLease, Storage, file_key, raw_key
from mailcore.teams import ResolvedAccount

logger = Logger(child=True)

# Stop fetching when fewer seconds than this are left: storing one large message takes a while.
TIME_MARGIN_SECONDS = 10.0
# A message's parsing stops this long before the time runs out (its writes and the record follow).
WRITE_MARGIN_SECONDS = 5.0
# A pull never runs longer than a Lambda can (15 min); its lease outlives it by a margin.
MAX_PULL_SECONDS = 900.0
LEASE_MARGIN_SECONDS = 30.0
# Writes in flight: enough to hide S3/DynamoDB latency, bounded so memory stays small.
WRITERS = 8
MAX_IN_FLIGHT = 16
MAX_BYTES_IN_FLIGHT = 48 * 1024 * 1024
EVENT_BATCH = 10
ALREADY_RUNNING = "a pull of this account is already running"
# The start of the parse_error of a message stored raw and unparsed.
SET_ASIDE = "set aside"
# A message the function died preparing this many times (killed for memory or time, the whole
# invocation gone) is set aside unparsed by the next pull: it must not stop the account forever.
# Two, not one: a death can also come from elsewhere (a deployment, a host failure). The first
# death is seen only as a lease left behind, with the message among those in hand (Attempts).
MAX_DEATHS = 2


class MailboxSession(Protocol):
    def listing(self) -> list[tuple[int, str]]: ...

    def retrieve(self, number: int) -> bytes: ...

    def delete(self, number: int) -> None: ...


SessionOpener = Callable[[ResolvedAccount], AbstractContextManager[MailboxSession]]


def _keys(target: ResolvedAccount) -> dict[str, str]:
    """The structured log keys of an account (names only: never its settings)."""
    return {"team": target.team, "account": target.name}


def mailbox_identity(target: ResolvedAccount) -> str:
    pop3 = target.config.pop3
    return f"{pop3.host}:{pop3.port}/{target.config.pop3_login}"


@dataclass
class IncomingMail:
    """A pulled message, parsed: its item, its raw bytes and its attachments, ready to write."""

    mail: Mail
    raw_key: str
    raw: bytes
    files: list[tuple[StoredFile, bytes]]
    set_aside: str | None = None  # why it is stored unparsed


Parse = Callable[[bytes], ParsedMail]


def prepare_incoming(
    target: ResolvedAccount,
    uidl: str,
    raw: bytes,
    *,
    now: datetime | None = None,
    parse: Parse = parse_message,
) -> IncomingMail:
    """Parses a pulled message (CPU only: the pull does this on its own thread, see _pull). A
    message over its budget (see mailcore.mime.isolated) is set aside."""
    mail_id = incoming_mail_id(target.team, target.name, mailbox_identity(target), uidl)
    received = now or datetime.now(UTC)
    try:
        return parse_incoming(target.team, target.name, mail_id, uidl, raw, received=received, parse=parse)
    except OverBudget as over:
        return set_aside(target, uidl, raw, reason=over.bound, now=received)


def parse_incoming(
    team: str,
    account: str,
    mail_id: str,
    uidl: str | None,
    raw: bytes,
    *,
    received: datetime,
    parse: Parse = parse_message,
) -> IncomingMail:
    """The item and attachments of the received message `mail_id` (pulled now, or stored earlier
    and parsed again from its raw message)."""
    parsed: ParsedMail | None
    try:
        parsed = parse(raw)
        parse_error = None
    except (OverBudget, ParserUnavailable, OutOfTime):
        raise
    except Exception as error:  # the raw message is kept; a person can look at it
        parsed, parse_error = None, f"{type(error).__name__}: {error}"[:1000]

    files = _attachments(team, mail_id, parsed, received) if parsed is not None else []
    mail = _received_mail(team, account, uidl, raw, mail_id, received).model_copy(
        update={"parse_error": parse_error, "attachments": [stored.id for stored, _ in files]}
    )
    if parsed is not None:
        mail = mail.model_copy(update=_parsed_fields(parsed))
    mail = bounces.mark(mail, raw)
    return IncomingMail(mail=mail, raw_key=mail.raw_key or "", raw=raw, files=files)


def _attachments(
    team: str, mail_id: str, parsed: ParsedMail, received: datetime
) -> list[tuple[StoredFile, bytes]]:
    """The parsed message's attachments as the team's files, each with its bytes."""
    files = []
    for index, attachment in enumerate(parsed.attachments):
        file_id = f"{mail_id}-{index}"
        content_type = attachment.content_type or "application/octet-stream"
        stored = StoredFile(
            id=file_id,
            team=team,
            name=attachment.filename or f"attachment-{index}{mimetypes.guess_extension(content_type) or ''}",
            content_type=content_type,
            size=len(attachment.data),
            s3_key=file_key(team, file_id),
            created_at=received,
            content_id=attachment.content_id,
            mail_id=mail_id,
        )
        files.append((stored, attachment.data))
    return files


def _parsed_fields(parsed: ParsedMail) -> dict[str, Any]:
    """What a received mail's item takes from its parsed message."""
    return {
        "from_": parsed.from_,
        "to": parsed.to,
        "cc": parsed.cc,
        "reply_to": parsed.reply_to,
        "subject": parsed.subject,
        "date": parsed.date,
        "message_id": parsed.message_id,
        "in_reply_to": parsed.in_reply_to,
        "references": parsed.references,
        "body_text": parsed.body_text,
        "body_html": parsed.body_html,
        "cut": parsed.cut,
    }


def _received_mail(
    team: str, account: str, uidl: str | None, raw: bytes, mail_id: str, received: datetime
) -> Mail:
    return Mail(
        id=mail_id,
        team=team,
        account=account,
        direction=Direction.IN,
        status=MailStatus.RECEIVED,
        created_at=received,
        uidl=uidl,
        raw_key=raw_key(team, account, mail_id),
        raw_size=len(raw),
    )


def set_aside(
    target: ResolvedAccount, uidl: str, raw: bytes, *, reason: str, now: datetime | None = None
) -> IncomingMail:
    """The message stored as it came: its raw bytes and a small item with what can be read
    cheaply (sender, subject cut to a length, date, size), `parse_error` saying why."""
    mail_id = incoming_mail_id(target.team, target.name, mailbox_identity(target), uidl)
    headers = cheap_headers(raw)
    mail = _received_mail(target.team, target.name, uidl, raw, mail_id, now or datetime.now(UTC)).model_copy(
        update={
            "from_": headers.from_,
            "subject": headers.subject,
            "date": headers.date,
            "parse_error": f"{SET_ASIDE}: {reason}",
        }
    )
    # A bounce too big or too odd to parse is still linked: classifying reads at most 256 KB.
    mail = bounces.mark(mail, raw)
    return IncomingMail(mail=mail, raw_key=mail.raw_key or "", raw=raw, files=[], set_aside=reason)


def _suspects(after_deaths: int) -> int:
    """How many of a pull's first new messages it records as attempted (Attempts): none after no
    death; after one, those the dead pull could have had in hand (MAX_IN_FLIGHT read now: the
    benchmark lowers it); after more in a row, all (the mailbox may list in an unusual order)."""
    if after_deaths == 0:
        return 0
    return MAX_IN_FLIGHT if after_deaths == 1 else sys.maxsize


class Attempts:
    """Crash-loop protection as data, for one pull; nothing is written while no pull dies.

    A pull that ends gives its lease back; a killed one (for memory or time: nothing of the
    invocation runs after the kill) leaves it, and the next pull learns so from the lease
    (PullLease.after_deaths). The dead pull had at most MAX_IN_FLIGHT messages in hand: the one
    it prepared and those whose writes were in flight; they are the first MAX_IN_FLIGHT new
    messages of this pull's listing (a mailbox keeps its order; what the dead pull stored is not
    new). For those only (`window`; after two deaths in a row, for all: _suspects), the pull
    state records before each is prepared that pull `holder` prepares it, and the record is
    cleared after, whatever the outcome, as long as the function lives. A record from an earlier
    pull means that pull died preparing the message, and the death before it (the reason it
    recorded) had the message in hand: records + 1 deaths; at MAX_DEATHS the message is set
    aside without parsing. The record is written on a writer thread beside the message's RETR;
    the clearing is waited for, so a kill while preparing the next message never counts against
    this one."""

    def __init__(
        self, target: ResolvedAccount, storage: Storage, holder: str, writers: Executor, *, window: int
    ) -> None:
        self.target, self.storage, self.holder, self.writers = target, storage, holder, writers
        self.left = window

    def begin(self, mail_id: str) -> Future[int] | None:
        """The number of earlier pulls that died preparing `mail_id`, once recorded; None when the
        message is not among those a dead pull had in hand (nothing recorded)."""
        if self.left <= 0:
            return None
        self.left -= 1
        state = self.storage.pull_state
        return self.writers.submit(
            state.begin_attempt, self.target.team, self.target.name, mail_id, self.holder
        )

    def end(self, mail_id: str) -> None:
        try:
            self.storage.pull_state.end_attempt(self.target.team, self.target.name, mail_id, self.holder)
        except Exception as error:  # a record left counts as a death if a recording pull meets it again
            logger.error("could not clear a message's attempt record", extra={"reason": str(error)})

    def abandon(self, mail_id: str, recorded: Future[int] | None) -> None:
        """The message was not prepared after all (its RETR failed): clear its record once written."""
        if recorded is None:
            return
        with contextlib.suppress(Exception):
            recorded.result()
        self.end(mail_id)

    def prepare(self, uidl: str, raw: bytes, recorded: Future[int] | None, *, parse: Parse) -> IncomingMail:
        """prepare_incoming, or set_aside after MAX_DEATHS deaths."""
        if recorded is None:
            return prepare_incoming(self.target, uidl, raw, parse=parse)
        mail_id = incoming_mail_id(self.target.team, self.target.name, mailbox_identity(self.target), uidl)
        try:
            earlier = recorded.result()
            deaths = earlier + 1 if earlier else 0
            if deaths >= MAX_DEATHS:
                reason = f"the function died preparing it {deaths} times"
                return set_aside(self.target, uidl, raw, reason=reason)
            return prepare_incoming(self.target, uidl, raw, parse=parse)
        finally:
            self.end(mail_id)


def write_incoming(incoming: IncomingMail, storage: Storage) -> Mail | None:
    """Raw bytes, then attachments, then the item with a conditional put (the exactly-once
    guard: the item is written last, so an item never points at missing objects).
    None when the message was already stored (by an earlier or a concurrent pull)."""
    mail = incoming.mail
    storage.blobs.put(incoming.raw_key, incoming.raw, "message/rfc822")
    for stored, data in incoming.files:
        storage.blobs.put(stored.s3_key, data, stored.content_type)
        storage.files.put(stored)
    # A bounce is recorded on its outgoing mail before its own item is written: a pull that dies
    # in between leaves the message unstored, so the next pull fetches it again and recording
    # (idempotent per bounce) repeats harmlessly.
    mail = bounces.linked(storage, mail)
    bounces.record_bounce(storage, mail)
    return mail if storage.mail.put_new(mail) else None


def store_incoming(
    target: ResolvedAccount, uidl: str, raw: bytes, *, storage: Storage, now: datetime | None = None
) -> Mail | None:
    """Stores one pulled message; None when it was already stored (by an earlier or concurrent pull)."""
    return write_incoming(prepare_incoming(target, uidl, raw, now=now), storage)


class _ReceivedEvents:
    """MailReceived (and MailSetAside) events of one pull, put on the bus in batches as mail is
    stored."""

    def __init__(self, publisher: EventPublisher | None, team: str, account: str) -> None:
        self.publisher, self.team, self.account = publisher, team, account
        self.waiting: list[MailEvent] = []

    def add(self, mail: Mail) -> None:
        """MailReceived (with auto_reply and bounce_of), then MailBounced for a linked bounce."""
        extra = {"auto_reply": mail.auto_reply, **({"bounce_of": mail.bounce_of} if mail.bounce_of else {})}
        self._wait(MailEvent(MAIL_RECEIVED, self.team, self.account, mail.id, extra))
        if mail.bounce_of:
            self._wait(bounces.bounced_event(mail))

    def add_set_aside(self, mail: Mail, reason: str) -> None:
        self._wait(MailEvent(MAIL_SET_ASIDE, self.team, self.account, mail.id, {"reason": reason}))

    def _wait(self, event: MailEvent) -> None:
        if self.publisher is None:
            return
        self.waiting.append(event)
        if len(self.waiting) >= EVENT_BATCH:
            self.flush()

    def flush(self) -> None:
        if self.publisher is None or not self.waiting:
            return
        batch, self.waiting = self.waiting, []
        try:
            self.publisher.publish(batch)
        except Exception:
            # The mail is stored either way; an event is a notification, not the record.
            logger.exception(
                "could not put mail events",
                extra={"team": self.team, "account": self.account, "events": len(batch)},
            )


def pull_account(
    target: ResolvedAccount,
    *,
    storage: Storage,
    transcript: Transcript,
    tls_context: ssl.SSLContext,
    seconds_left: Callable[[], float] | None = None,
    events: EventPublisher | None = None,
    open_session: SessionOpener | None = None,
    tokens: TokenBroker | None = None,
    parse: Parse | None = None,
) -> AccountPullReport:
    """Pulls the account's new messages under its lease; a failure of the mail server is reported
    (and recorded on the account's pull state), not raised. Raises PullRunning when another pull
    of the account holds the lease, and storage failures as they are."""
    team, account = target.team, target.name
    holder = new_id()
    budget = min(seconds_left(), MAX_PULL_SECONDS) if seconds_left is not None else MAX_PULL_SECONDS
    lease = storage.pull_state.acquire_lease(team, account, holder, budget + LEASE_MARGIN_SECONDS)
    if lease is None:
        raise PullRunning(ALREADY_RUNNING, field="account")
    started = time.monotonic()
    try:
        # The session (its token request included) ends in time to store what it fetched, record
        # the pull and answer: a server dripping a message or a listing is cut off there.
        deadline = Deadline.after(budget - WRITE_MARGIN_SECONDS)
        opener = open_session or _pop3_opener(transcript, tls_context, tokens, storage, deadline)
        report = AccountPullReport(team=team, account=account)
        broken: dict[str, object] = {}
        previous = storage.pull_state.get(team, account)
        _measure_lag(team, account, previous)
        aside = _SetAsideState(previous)
        try:
            with PARSERS.borrowed() as parser:
                _pull(
                    target,
                    report,
                    storage=storage,
                    opener=opener,
                    seconds_left=seconds_left,
                    events=events,
                    broken=broken,
                    aside=aside,
                    parse=parser.parse if parse is None else _untimed(parse),
                    lease=lease,
                )
        except Exception:
            _record(storage, report, error="storing the mail failed; the next pull retries", aside=aside)
            raise
        _record(storage, report, error=report.error, broken=broken, aside=aside)
        telemetry.pull_finished(team, account, seconds=time.monotonic() - started, backlog=report.remaining)
        return report
    finally:
        storage.pull_state.release_lease(team, account, holder)


def _measure_lag(team: str, account: str, previous: dict[str, Any] | None) -> None:
    """The time since the account's previous pull ended (none before its first pull)."""
    try:
        last = datetime.fromisoformat(str((previous or {})["last_pull_at"]))
    except (KeyError, ValueError):
        return
    telemetry.pull_lag(team, account, max(0.0, (datetime.now(UTC) - last).total_seconds()))


class TimedParse(Protocol):
    """Parses a message; raises OutOfTime when `seconds_left` runs out first (IsolatedParser.parse)."""

    def __call__(self, raw: bytes, *, seconds_left: float | None = None) -> ParsedMail: ...


def _untimed(parse: Parse) -> TimedParse:
    def timed(raw: bytes, *, seconds_left: float | None = None) -> ParsedMail:
        return parse(raw)

    return timed


def _pop3_opener(
    transcript: Transcript,
    tls_context: ssl.SSLContext,
    tokens: TokenBroker | None,
    storage: Storage,
    deadline: Deadline,
) -> SessionOpener:
    def opened(target: ResolvedAccount) -> Pop3Session:
        return open_session(
            target,
            lambda token: Pop3Session(
                target.config,
                transcript=transcript,
                tls_context=tls_context,
                access_token=token,
                deadline=deadline,
            ),
            tokens=tokens,
            pull_state=storage.pull_state,
            deadline=deadline,
        )

    return opened


class _SetAsideState:
    """Messages set aside on this account, counted over all its pulls, and the latest of them."""

    def __init__(self, previous: dict[str, Any] | None) -> None:
        self.count = int((previous or {}).get("set_aside", 0))
        self.latest: dict[str, str] | None = (previous or {}).get("latest_set_aside")

    def add(self, mail: Mail, reason: str) -> None:
        self.count += 1
        self.latest = {"mail_id": mail.id, "reason": reason, "at": datetime.now(UTC).isoformat()}

    def fields(self) -> dict[str, object]:
        return {"set_aside": self.count, "latest_set_aside": self.latest} if self.count else {}


def _record(
    storage: Storage,
    report: AccountPullReport,
    *,
    error: str | None,
    aside: _SetAsideState,
    broken: dict[str, object] | None = None,
) -> None:
    state = {
        **aside.fields(),
        "last_pull_at": datetime.now(UTC).isoformat(),
        "last_error": error,
        "fetched": report.fetched,
        "remaining": report.remaining,
        # An OAuth2 account marked broken stays marked (see services.credentials) until its
        # secret changes; a pull that got further clears the mark.
        **(broken or {}),
    }
    try:
        storage.pull_state.record(report.team, report.account, state)
    except Exception:
        if error is None:
            raise
        logger.exception(
            "could not record the pull state", extra={"team": report.team, "account": report.account}
        )


def _written_or_set_aside(
    target: ResolvedAccount, writes: Future[Mail | None], incoming: IncomingMail, storage: Storage
) -> tuple[Mail | None, IncomingMail]:
    """The outcome of a message's writes; a message storage refused for what it is (it would fail
    again on every pull) is written again, set aside."""
    try:
        return writes.result(), incoming
    except StoreRefused as refused:
        aside = set_aside(
            target, incoming.mail.uidl or "", incoming.raw, reason=f"storing it failed: {refused}"
        )
        return write_incoming(aside, storage), aside


class _PullRun:
    """One pull of an account: new messages fetched and parsed on the pull's thread, written on
    the writers, and settled in order (DELE follows its own writes)."""

    def __init__(
        self,
        target: ResolvedAccount,
        report: AccountPullReport,
        *,
        storage: Storage,
        seconds_left: Callable[[], float] | None,
        events: EventPublisher | None,
        aside: _SetAsideState,
        parse: TimedParse,
        lease: PullLease,
    ) -> None:
        self.target, self.report, self.storage, self.lease = target, report, storage, lease
        self.seconds_left, self.aside, self.parse = seconds_left, aside, parse
        self.delete = not target.config.leave_on_server
        self.received = _ReceivedEvents(events, target.team, target.name)
        # (message number, its writes, its size, the message), settled in order.
        self.pending: deque[tuple[int, Future[Mail | None], int, IncomingMail]] = deque()

    def run(self, opener: SessionOpener, writers: ThreadPoolExecutor) -> None:
        window = _suspects(self.lease.after_deaths)
        self.attempts = Attempts(self.target, self.storage, self.lease.holder, writers, window=window)
        with opener(self.target) as session:
            new = self._new_messages(session)
            for position, (number, uidl) in enumerate(new):
                if not self._fetch(session, writers, number, uidl):
                    self.report.remaining = len(new) - position
                    break
            while self.pending:
                self._settle_first(session if self.delete else None)

    def settle_without_deleting(self) -> None:
        """The line broke or a write failed: what is already written still counts (and is not
        deleted: this session will not QUIT, the next pull deletes it)."""
        while self.pending:
            try:
                self._settle_first(None)
            except Exception:
                logger.exception("a write of a pulled mail failed", extra=_keys(self.target))

    def _new_messages(self, session: MailboxSession) -> list[tuple[int, str]]:
        """The listing's messages not stored yet; those stored before are deleted (if asked)."""
        listing = session.listing()
        identity = mailbox_identity(self.target)
        ids = {
            uidl: incoming_mail_id(self.target.team, self.target.name, identity, uidl) for _, uidl in listing
        }
        stored_before = self.storage.mail.existing_ids(ids.values())
        new = [(number, uidl) for number, uidl in listing if ids[uidl] not in stored_before]
        self.report.skipped = len(listing) - len(new)
        if self.delete:
            for number, uidl in listing:
                if ids[uidl] in stored_before:
                    session.delete(number)
                    self.report.deleted += 1
        return new

    def _fetch(self, session: MailboxSession, writers: ThreadPoolExecutor, number: int, uidl: str) -> bool:
        """Fetches and parses a message and starts its writes; False when the time is up first."""
        left = self.seconds_left() if self.seconds_left is not None else None
        if left is not None and left < TIME_MARGIN_SECONDS:
            return False
        deadline = None if left is None else time.monotonic() + left - WRITE_MARGIN_SECONDS
        mail_id = incoming_mail_id(self.target.team, self.target.name, mailbox_identity(self.target), uidl)
        recorded = self.attempts.begin(mail_id)
        try:
            raw = session.retrieve(number)
        except BaseException:
            self.attempts.abandon(mail_id, recorded)
            raise
        within = partial(self.parse, seconds_left=None if deadline is None else deadline - time.monotonic())
        try:
            incoming = self.attempts.prepare(uidl, raw, recorded, parse=within)
        except OutOfTime:  # not the message's fault: the next pull takes it
            return False
        del raw
        writes = writers.submit(write_incoming, incoming, self.storage)
        self.pending.append((number, writes, len(incoming.raw), incoming))
        del incoming
        while self.pending and (
            self.pending[0][1].done()
            or len(self.pending) >= MAX_IN_FLIGHT
            or sum(size for _, _, size, _ in self.pending) > MAX_BYTES_IN_FLIGHT
        ):
            self._settle_first(session if self.delete else None)
        return True

    def _settle_first(self, session: MailboxSession | None) -> None:
        number, writes, _, incoming = self.pending.popleft()
        stored, incoming = _written_or_set_aside(self.target, writes, incoming, self.storage)
        if stored is None:
            self.report.skipped += 1
        else:
            self._count(stored, incoming)
        if session is not None:
            session.delete(number)
            self.report.deleted += 1

    def _count(self, stored: Mail, incoming: IncomingMail) -> None:
        report, target = self.report, self.target
        report.fetched += 1
        report.mail_ids.append(stored.id)
        self.received.add(stored)
        if incoming.set_aside is not None:
            report.set_aside += 1
            self.aside.add(stored, incoming.set_aside)
            self.received.add_set_aside(stored, incoming.set_aside)
            logger.warning(
                "mail set aside", extra={**_keys(target), "mail_id": stored.id, "reason": stored.parse_error}
            )
        if warning := from_rewritten_warning(target.config, stored):
            report.warnings.append(warning)
            logger.warning(
                "From rewritten by the provider",
                extra={**_keys(target), "mail_id": stored.id, "reason": warning},
            )


def _pull(
    target: ResolvedAccount,
    report: AccountPullReport,
    *,
    storage: Storage,
    opener: SessionOpener,
    seconds_left: Callable[[], float] | None,
    events: EventPublisher | None,
    broken: dict[str, object],
    aside: _SetAsideState,
    parse: TimedParse,
    lease: PullLease,
) -> None:
    run = _PullRun(
        target,
        report,
        storage=storage,
        seconds_left=seconds_left,
        events=events,
        aside=aside,
        parse=parse,
        lease=lease,
    )
    try:
        with ThreadPoolExecutor(WRITERS, thread_name_prefix="pull-write") as writers:
            try:
                run.run(opener, writers)
            finally:
                run.settle_without_deleting()
    except OAuth2Error as error:
        report.error = error.message
        if not error.temporary:
            broken.update(broken_mark(storage.pull_state.get(target.team, target.name)))
    except MailServerError as error:
        report.error = error.message
        report.problem = error.problem
    finally:
        run.received.flush()


class PullOptions(TypedDict):
    """The keyword arguments of pull_account that pull_accounts passes on to each pull."""

    storage: Storage
    transcript: Transcript
    tls_context: ssl.SSLContext
    seconds_left: NotRequired[Callable[[], float] | None]
    events: NotRequired[EventPublisher | None]
    tokens: NotRequired[TokenBroker | None]


def pull_accounts(
    targets: Iterable[ResolvedAccount], **options: Unpack[PullOptions]
) -> list[AccountPullReport]:
    """Pulls each account in turn; one broken account never stops the others."""
    reports = []
    for target in targets:
        try:
            reports.append(pull_account(target, **options))
        except PullRunning as running:
            reports.append(AccountPullReport(team=target.team, account=target.name, error=running.message))
        except Exception:
            # Storage failing is not the account's fault; report it and go on with the others.
            logger.exception("pull failed", extra=_keys(target))
            reports.append(
                AccountPullReport(
                    team=target.team, account=target.name, error="storing the mail failed; retry later"
                )
            )
    return reports
