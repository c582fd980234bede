"""OAuth2 access tokens for XOAUTH2 logins: fetched when needed, cached per process, refreshed.

Tokens are opaque strings here (nothing is decoded or verified: the mail server does that). A
token endpoint that hands out a new refresh token (rotation) gets it written back to the team
secret through `on_rotated`, so the next process starts from the newest one.

A refused grant (`invalid_grant`: the refresh token expired or was revoked; `invalid_client`: the
client secret is wrong or expired) is permanent until someone changes the secret: the broker
remembers it per credential fingerprint and answers the same error without asking the endpoint
again, so a broken account never hammers the provider (which may lock the mailbox).
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import io
import json
import socket
import ssl
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aws_lambda_powertools import Logger

from mailcore import telemetry
from mailcore.errors import MailServerError
from mailcore.models import OAuth2Auth
from mailcore.protocols import reach
from mailcore.protocols.deadline import Deadline, bound, reader, send_all
from mailcore.protocols.transcript import Transcript

logger = Logger(child=True)

# Renew this long before a token expires, so it never runs out between fetching and AUTH; for
# short-lived tokens a quarter of their lifetime.
EXPIRY_MARGIN_SECONDS = 60.0
TOKEN_TIMEOUT_SECONDS = 15.0
# A token answer is a few KB; the endpoint is any URL a team administrator sets, so its answer is
# read up to this size, and the whole request ends within this time (or the caller's deadline,
# when that comes first; the socket timeout is per operation only).
MAX_TOKEN_ANSWER_BYTES = 64 * 1024
TOKEN_ANSWER_SECONDS = 30.0
# Errors of RFC 6749 §5.2 that no retry can fix: the secret must change.
PERMANENT_ERRORS = frozenset({"invalid_grant", "invalid_client", "unauthorized_client", "invalid_scope"})

RotatedRefreshToken = Callable[[str, str, str], None]
"""(team, account, new refresh token) -> None: keeps the rotated token in the team secret."""


class _BoundedSocket:
    """What http.client uses of a socket (sendall, makefile, close), every read and write under
    the request's deadline: urllib's timeout bounds each socket operation only, so an endpoint
    dripping its headers or body a byte at a time would hold the request for as long as it likes."""

    def __init__(self, sock: socket.socket, deadline: Deadline, per_operation: float | None) -> None:
        self.sock, self.deadline, self.per_operation = sock, deadline, per_operation

    def sendall(self, data: bytes) -> None:
        send_all(self.sock, data, self.deadline, self.per_operation)

    def makefile(self, mode: str = "rb", *args: Any, **kwargs: Any) -> io.BufferedReader:
        return reader(self.sock, self.deadline, self.per_operation)

    def close(self) -> None:
        self.sock.close()


class _CheckedHTTPConnection(http.client.HTTPConnection):
    """A connection to the token endpoint made through protocols/reach.py (a team administrator
    names the token_url, which must not reach inside the network the service runs in), and
    everything on it within `deadline`."""

    def __init__(self, *args: Any, deadline: Deadline, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.deadline = deadline

    def connect(self) -> None:
        self.sock = _BoundedSocket(self._reach(), self.deadline, self.timeout)

    def _reach(self) -> socket.socket:
        sock = reach.connect(self.host, self.port, self.timeout, deadline=self.deadline)
        bound(sock, self.deadline, self.timeout)  # a TLS handshake has this time as a whole
        return sock


class _CheckedHTTPSConnection(_CheckedHTTPConnection, http.client.HTTPSConnection):
    def connect(self) -> None:
        sock = self._context.wrap_socket(self._reach(), server_hostname=self.host)  # type: ignore[attr-defined]
        self.sock = _BoundedSocket(sock, self.deadline, self.timeout)


class _CheckedHTTP(urllib.request.HTTPHandler):
    def __init__(self, deadline: Deadline) -> None:
        super().__init__()
        self.deadline = deadline

    def http_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(_CheckedHTTPConnection, req, deadline=self.deadline)  # type: ignore[arg-type]


class _CheckedHTTPS(urllib.request.HTTPSHandler):
    def __init__(self, deadline: Deadline, context: ssl.SSLContext | None) -> None:
        super().__init__(context=context)
        self.deadline = deadline

    def https_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(
            _CheckedHTTPSConnection,  # type: ignore[arg-type]
            req,
            context=self._context,  # type: ignore[attr-defined]
            deadline=self.deadline,
        )


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """A token endpoint answers; a redirect would lead the form, secrets included, anywhere."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def _token_opener(tls_context: ssl.SSLContext | None, deadline: Deadline) -> urllib.request.OpenerDirector:
    return urllib.request.build_opener(
        urllib.request.ProxyHandler({}),
        _CheckedHTTP(deadline),
        _CheckedHTTPS(deadline, tls_context),
        _NoRedirects(),
    )


class OAuth2Error(MailServerError, code="oauth2_error"):
    """The token endpoint refused or failed; `error` is its RFC 6749 error code when it gave one."""

    def __init__(self, message: str, *, error: str | None = None, temporary: bool = False) -> None:
        super().__init__(message, temporary=temporary)
        self.error = error


def xoauth2_payload(user: str, token: str) -> str:
    """The SASL XOAUTH2 initial response, unencoded (the protocols base64 it)."""
    return f"user={user}\x01auth=Bearer {token}\x01\x01"


def xoauth2_base64(user: str, token: str) -> str:
    return base64.b64encode(xoauth2_payload(user, token).encode()).decode("ascii")


def describe_sasl_error(challenge: bytes | str) -> str | None:
    """The server's XOAUTH2 error challenge (base64 JSON like {"status":"401",...}) in words."""
    try:
        raw = base64.b64decode(challenge, validate=False) if challenge else b""
        data = json.loads(raw.decode("utf-8")) if raw else None
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(data, dict):
        return None
    parts = [f"{key} {data[key]}" for key in ("status", "schemes", "scope") if data.get(key)]
    return ", ".join(parts) or None


def credential_fingerprint(auth: OAuth2Auth) -> str:
    """A short digest of what decides whether a grant can succeed: it changes when someone fixes
    the secret. Not reversible into the credentials."""
    material = "\0".join(
        [
            auth.effective_token_url,
            auth.client_id,
            auth.tenant_id or "",
            auth.client_secret.get_secret_value() if auth.client_secret else "",
            auth.refresh_token.get_secret_value() if auth.refresh_token else "",
        ]
    )
    return hashlib.sha256(material.encode()).hexdigest()[:16]


@dataclass
class _Cached:
    access_token: str
    renew_at: float
    # The refresh token the secret held when this entry was made, and the newest one known here.
    secret_refresh_token: str | None
    refresh_token: str | None


class TokenBroker:
    """Access tokens of every OAuth2 account this process logs in with."""

    def __init__(
        self,
        *,
        on_rotated: RotatedRefreshToken | None = None,
        clock: Callable[[], float] = time.monotonic,
        tls_context: ssl.SSLContext | None = None,
    ) -> None:
        self.on_rotated = on_rotated
        self.clock = clock
        self.tls_context = tls_context
        self._cache: dict[tuple[str, str], _Cached] = {}
        self._refused: dict[tuple[str, str], tuple[str, OAuth2Error]] = {}
        self._lock = threading.Lock()
        self.requests = 0  # token endpoint calls, for the status of this process

    def access_token(
        self, team: str, account: str, auth: OAuth2Auth, *, deadline: Deadline | None = None
    ) -> str:
        """The account's access token, from the cache or the endpoint (asked within `deadline`,
        the caller's time, and TOKEN_ANSWER_SECONDS)."""
        key = (team, account)
        fingerprint = credential_fingerprint(auth)
        secret_refresh = auth.refresh_token.get_secret_value() if auth.refresh_token else None
        with self._lock:
            refused = self._refused.get(key)
            if refused is not None and refused[0] == fingerprint:
                raise refused[1]
            cached = self._cache.get(key)
            # A secret that changed by our own write-back keeps the entry; one a person changed drops it.
            if cached is not None and secret_refresh not in (
                cached.secret_refresh_token,
                cached.refresh_token,
            ):
                cached = None
            if cached is not None and self.clock() < cached.renew_at:
                return cached.access_token
            refresh_token = cached.refresh_token if cached is not None else secret_refresh
            try:
                answer = self._request(auth, refresh_token, deadline or Deadline.never())
            except OAuth2Error as error:
                telemetry.token_refresh_failed(team, account)
                if not error.temporary:
                    self._refused[key] = (fingerprint, error)
                    self._cache.pop(key, None)
                raise
            telemetry.token_refreshed(team, account)
            token = answer["access_token"]
            lifetime = _lifetime(answer.get("expires_in"))
            margin = min(EXPIRY_MARGIN_SECONDS, lifetime / 4)
            rotated = answer.get("refresh_token")
            newest = rotated if isinstance(rotated, str) and rotated else refresh_token
            self._cache[key] = _Cached(token, self.clock() + lifetime - margin, secret_refresh, newest)
        if newest != refresh_token and newest and self.on_rotated is not None:
            try:
                self.on_rotated(team, account, newest)
            except Exception:
                # The login goes on with the new token (this process keeps it); the next process
                # may find the old one refused, so an operator must hear of it.
                logger.exception(
                    "could not write the rotated refresh token of %s/%s to its team secret",
                    team,
                    account,
                    extra={"team": team, "account": account},
                )
        return token

    def has_token(self, team: str, account: str) -> bool:
        """Whether a login now would use a token from the cache."""
        with self._lock:
            entry = self._cache.get((team, account))
            return entry is not None and self.clock() < entry.renew_at

    def forget(self, team: str, account: str) -> None:
        """Drops the cached token (e.g. after the server refused it), not the refusal memory."""
        with self._lock:
            entry = self._cache.get((team, account))
            if entry is not None:
                entry.renew_at = 0.0

    def _request(self, auth: OAuth2Auth, refresh_token: str | None, deadline: Deadline) -> dict[str, Any]:
        form: dict[str, str] = {"client_id": auth.client_id, "scope": auth.effective_scope}
        if auth.client_secret is not None:
            form["client_secret"] = auth.client_secret.get_secret_value()
        if refresh_token is not None:
            form.update(grant_type="refresh_token", refresh_token=refresh_token)
        else:
            form["grant_type"] = "client_credentials"
        url = auth.effective_token_url
        request = urllib.request.Request(
            url,
            data=urllib.parse.urlencode(form).encode(),
            headers={"Content-Type": "application/x-www-form-urlencoded", "Accept": "application/json"},
            method="POST",
        )
        where = f"the OAuth2 token endpoint {urllib.parse.urlsplit(url).netloc}"
        masks = _secret_masks(form)
        within = deadline.earlier(TOKEN_ANSWER_SECONDS)
        out_of_time = OAuth2Error(f"{where} did not answer within the {within.told()} it had", temporary=True)
        self.requests += 1
        try:
            with _token_opener(self.tls_context, within).open(
                request, timeout=TOKEN_TIMEOUT_SECONDS
            ) as reply:
                body = _read_bounded(reply)
        except urllib.error.HTTPError as error:
            raise _refusal(where, error.code, _read_bounded(error), auth, masks) from None
        except (urllib.error.URLError, OSError) as error:
            reason = getattr(error, "reason", error)
            if isinstance(reason, reach.AddressNotAllowed):
                raise OAuth2Error(f"{where} may not be reached: {reason}; check auth.token_url") from None
            if within.passed():
                raise out_of_time from None
            raise masks.redact_failure(
                OAuth2Error(f"{where} could not be reached ({reason}); retry later", temporary=True)
            ) from None
        if body is None:
            if within.passed():
                raise out_of_time
            raise OAuth2Error(f"{where} answered more than {MAX_TOKEN_ANSWER_BYTES} bytes", temporary=True)
        try:
            answer = json.loads(body)
        except (ValueError, RecursionError):
            raise OAuth2Error(f"{where} answered something that is not JSON", temporary=True) from None
        if not isinstance(answer, dict) or not isinstance(answer.get("access_token"), str):
            raise OAuth2Error(f"{where} answered without an access_token", temporary=True)
        return answer


def _lifetime(expires_in: object) -> float:
    """Seconds the token lives: the endpoint's expires_in (a number, or a string of one, as some
    providers send it) within a second and a day; an hour when it gave none or nonsense."""
    try:
        seconds = float(expires_in) if isinstance(expires_in, int | float | str) and expires_in else 3600.0
    except ValueError:
        seconds = 3600.0
    return min(max(seconds, 1.0), 86400.0) if seconds == seconds else 3600.0


def _secret_masks(form: dict[str, str]) -> Transcript:
    """The secrets sent, as the endpoint may echo them: as sent (form-encoded), decoded, base64."""
    masks = Transcript()
    for key in ("client_secret", "refresh_token"):
        secret = form.get(key)
        if secret:
            masks.add_secret(secret)
            masks.add_secret(urllib.parse.quote_plus(secret))
            masks.add_secret(urllib.parse.quote(secret, safe=""))
            masks.add_secret(base64.b64encode(secret.encode()).decode("ascii"))
    return masks


def _read_bounded(stream: Any) -> bytes | None:
    """The answer's body, or None when it is larger than MAX_TOKEN_ANSWER_BYTES or breaks off (its
    socket reads are under the request's deadline: see _BoundedSocket)."""
    read = getattr(stream, "read1", None) or stream.read
    chunks: list[bytes] = []
    size = 0
    try:
        while size <= MAX_TOKEN_ANSWER_BYTES:
            chunk = read(MAX_TOKEN_ANSWER_BYTES + 1 - size)
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)
            size += len(chunk)
    except (OSError, ValueError):
        return None
    return None


def _refusal(where: str, status: int, body: bytes | None, auth: OAuth2Auth, masks: Transcript) -> OAuth2Error:
    """The refusal in words, with the secrets the endpoint may have echoed masked (before the
    description is cut, so no part of one is left)."""
    return masks.redact_failure(_refusal_in_words(where, status, body, auth, masks))


def _refusal_in_words(
    where: str, status: int, body: bytes | None, auth: OAuth2Auth, masks: Transcript
) -> OAuth2Error:
    try:
        data = json.loads(body) if body is not None else {}
    except (ValueError, RecursionError):
        data = {}
    error = str(data.get("error") or "") if isinstance(data, dict) else ""
    description = str(data.get("error_description") or "") if isinstance(data, dict) else ""
    # RFC 6749 error codes are short printable ASCII; anything else is not a code to repeat.
    error = masks.redact(error)
    error = error if len(error) <= 64 and error.isascii() and error.isprintable() else "invalid_answer"
    description = " ".join(masks.redact(description).split())[:300]
    detail = f"{error}: {description}" if description else error or f"HTTP {status}"
    if error == "invalid_grant":
        if auth.refresh_token is not None:
            advice = (
                "the refresh token has expired or was revoked (a changed password, revoked consent, "
                "or months unused); get a new refresh token and put it into the team secret"
            )
        else:
            advice = "the grant was refused; check tenant_id and that the app has admin consent"
        return OAuth2Error(f"{where} refused the login ({detail}): {advice}", error=error)
    if error in ("invalid_client", "unauthorized_client"):
        return OAuth2Error(
            f"{where} refused the client ({detail}): check client_id and client_secret (secrets of an "
            "Entra ID app expire; make a new one in its 'Certificates & secrets')",
            error=error,
        )
    if error == "invalid_scope":
        return OAuth2Error(f"{where} refused the scope {auth.effective_scope!r} ({detail})", error=error)
    temporary = status >= 500 or status == 429 or error in ("temporarily_unavailable", "server_error")
    permanent = error in PERMANENT_ERRORS
    return OAuth2Error(
        f"{where} answered HTTP {status} ({detail})",
        error=error or None,
        temporary=temporary and not permanent,
    )
