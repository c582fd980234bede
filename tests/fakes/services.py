"""In-memory adapters of the service ports (mailcore.ports) for the tests and benchmarks."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Sequence
from typing import Any

from mailcore.events import Event


class MemoryPublisher:
    def __init__(self) -> None:
        self.events: list[Event] = []

    def publish(self, events: Sequence[Event]) -> None:
        self.events.extend(events)


class MemoryLimitCounters:
    def __init__(self) -> None:
        self.items: dict[tuple[str, str], dict[str, Any]] = {}
        self._lock = threading.Lock()

    def take(self, pk: str, minute: int, limit: int, expires_at: int) -> bool:
        with self._lock:
            item = self.items.setdefault((pk, f"RATE#{minute}"), {"count": 0})
            if item["count"] >= limit:
                return False
            item["count"] += 1
            return True

    def lease(self, pk: str, slot: int, holder: str, now: float, until: float) -> bool:
        with self._lock:
            item = self.items.get((pk, f"CONN#{slot}"))
            if item is not None and item["lease_until"] >= now:
                return False
            self.items[(pk, f"CONN#{slot}")] = {"holder": holder, "lease_until": until}
            return True

    def release(self, pk: str, slot: int, holder: str) -> None:
        with self._lock:
            item = self.items.get((pk, f"CONN#{slot}"))
            if item is not None and item["holder"] == holder:
                del self.items[(pk, f"CONN#{slot}")]


class MemoryPullQueue:
    def __init__(self) -> None:
        self.sent: list[dict[str, str]] = []

    def send(self, accounts: list[dict[str, str]]) -> None:
        self.sent.extend(accounts)


class MemoryDeadLetters:
    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []

    def put(self, body: dict[str, Any]) -> None:
        self.bodies.append(body)


class MemoryAccountRevisions:
    """The same lease and revisions under a lock (unit tests)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._holders: dict[str, tuple[str, float]] = {}
        self._revisions: dict[str, dict[str, int]] = {}

    def acquire(self, team: str, holder: str, seconds: float) -> bool:
        with self._lock:
            held = self._holders.get(team)
            if held is not None and held[1] >= time.time():
                return False
            self._holders[team] = (holder, time.time() + seconds)
            return True

    def release(self, team: str, holder: str, *, account: str | None, revision: int | None) -> None:
        with self._lock:
            if self._holders.get(team, ("", 0.0))[0] != holder:
                return
            del self._holders[team]
            if account is not None and revision is not None:
                self._revisions.setdefault(team, {})[account] = revision

    def revisions(self, team: str) -> dict[str, int]:
        with self._lock:
            return dict(self._revisions.get(team, {}))


class MemoryTeamSecrets:
    def __init__(self, secrets: dict[str, dict[str, Any]] | None = None) -> None:
        self.secrets = {team: json.dumps(config) for team, config in (secrets or {}).items()}

    def read(self, team: str) -> dict[str, Any] | None:
        stored = self.secrets.get(team)
        return None if stored is None else dict(json.loads(stored))

    def write(self, team: str, config: dict[str, Any]) -> None:
        self.secrets[team] = json.dumps(config)


class MemorySecrets:
    """Secrets as JSON by name (port SecretReader)."""

    def __init__(self, secrets: dict[str, Any] | None = None) -> None:
        self.secrets: dict[str, Any] = dict(secrets or {})

    def cached_json(self, name: str) -> Any | None:
        value = self.secrets.get(name)
        if isinstance(value, str):
            try:
                return json.loads(value)
            except ValueError:
                raise ValueError(f"the secret {name!r} is not valid JSON") from None
        return value

    def fresh_json(self, name: str) -> Any:
        return json.loads(json.dumps(self.secrets[name]))

    def put_json(self, name: str, value: Any) -> None:
        self.secrets[name] = value

    def names_under(self, prefix: str) -> list[str]:
        return [name for name in self.secrets if name.startswith(prefix)]

    def clear_cache(self) -> None:
        pass
