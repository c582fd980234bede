"""The login of an account for one session: nothing for password accounts, an access token for
OAuth2 ones, and the account's broken mark when its provider refused the grant for good."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Protocol

from mailcore.oauth2 import OAuth2Error, TokenBroker, credential_fingerprint
from mailcore.protocols.deadline import Deadline
from mailcore.protocols.diagnose import OAuth2LoginRefused
from mailcore.storage import PullStateRepository
from mailcore.teams import ResolvedAccount

BROKEN_FIELDS = ("broken_reason", "broken_fingerprint", "broken_at")


def _broker(tokens: TokenBroker | None, target: ResolvedAccount) -> TokenBroker:
    # The broker is the composition root's (it writes rotated refresh tokens back): never made here.
    if tokens is None:
        raise TypeError(f"account {target.name!r} logs in with OAuth2: its caller must pass a token broker")
    return tokens


def broken_mark(state: dict[str, Any] | None) -> dict[str, Any]:
    """The broken fields of a pull state, to carry over when the state is written again."""
    return {key: state[key] for key in BROKEN_FIELDS if state and state.get(key)}


def access_token(
    target: ResolvedAccount,
    *,
    tokens: TokenBroker | None,
    pull_state: PullStateRepository,
    deadline: Deadline | None = None,
) -> str | None:
    """The access token to log in with, or None for a password account.

    An account whose grant was refused (expired or revoked refresh token, wrong client secret) is
    marked broken on its pull state with the fingerprint of its credentials; until the secret
    changes, every process answers the recorded error without asking the token endpoint again.
    """
    auth = target.config.oauth2
    if auth is None:
        return None
    fingerprint = credential_fingerprint(auth)
    state = pull_state.get(target.team, target.name)
    if state and state.get("broken_fingerprint") == fingerprint:
        raise OAuth2Error(
            f"account {target.name!r} is marked broken since {state.get('broken_at')}: "
            f"{state.get('broken_reason')}. It is not tried again until its team secret changes",
            error="account_broken",
        )
    try:
        return _broker(tokens, target).access_token(target.team, target.name, auth, deadline=deadline)
    except OAuth2Error as error:
        if not error.temporary:
            mark = {
                "broken_reason": error.message,
                "broken_fingerprint": fingerprint,
                "broken_at": datetime.now(UTC).isoformat(),
            }
            pull_state.record(
                target.team, target.name, {**(state or {}), "last_error": error.message, **mark}
            )
        raise


class _Session(Protocol):
    def open(self) -> None: ...


def open_session[SessionT: _Session](
    target: ResolvedAccount,
    make: Callable[[str | None], SessionT],
    *,
    tokens: TokenBroker | None,
    pull_state: PullStateRepository,
    deadline: Deadline | None = None,
) -> SessionT:
    """`make(access token or None)` opened and logged in (the token asked for within `deadline`).

    A token from the cache that the server refuses (revoked early, e.g. with its refresh token) is
    dropped and the login tried once more with a new one: the token endpoint then says what is
    wrong (invalid_grant marks the account broken) instead of every login failing until expiry.
    """
    broker = _broker(tokens, target) if target.config.oauth2 is not None else None
    for last_try in (False, True):
        from_cache = broker is not None and broker.has_token(target.team, target.name)
        session = make(access_token(target, tokens=broker, pull_state=pull_state, deadline=deadline))
        try:
            session.open()
            return session
        except OAuth2LoginRefused:
            if last_try or not from_cache or broker is None:
                raise
            broker.forget(target.team, target.name)
    raise AssertionError("unreachable")
