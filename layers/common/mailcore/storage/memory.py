"""In-memory adapters of the storage ports, for unit tests and the pipeline benchmark."""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from typing import Any

from mailcore.models import Mail, MailStatus, StoredFile
from mailcore.storage import Storage


class MemoryMail:
    def __init__(self) -> None:
        self.items: dict[str, Mail] = {}
        self._lock = threading.Lock()

    def put_new(self, mail: Mail) -> bool:
        with self._lock:
            if mail.id in self.items:
                return False
            self.items[mail.id] = mail.model_copy(deep=True)
            return True

    def get(self, mail_id: str) -> Mail | None:
        mail = self.items.get(mail_id)
        return mail.model_copy(deep=True) if mail else None

    def existing_ids(self, mail_ids: Iterable[str]) -> set[str]:
        return {mail_id for mail_id in mail_ids if mail_id in self.items}

    def update_status(
        self,
        mail_id: str,
        status: MailStatus,
        *,
        expected: MailStatus | None = None,
        error: str | None = None,
        changes: Mapping[str, Any] | None = None,
    ) -> bool:
        with self._lock:
            mail = self.items.get(mail_id)
            if mail is None or (expected is not None and mail.status != expected):
                return False
            update = {**(changes or {}), "status": status, "error": error}
            self.items[mail_id] = Mail.model_validate({**mail.model_dump(), **update})
            return True


class MemoryRateLimits:
    def __init__(self) -> None:
        self.counts: dict[tuple[str, str], int] = {}
        self._lock = threading.Lock()

    def take(self, key: str, window: str, *, limit: int, expires_at: int) -> bool:
        with self._lock:
            used = self.counts.get((key, window), 0)
            if used >= limit:
                return False
            self.counts[(key, window)] = used + 1
            return True


class MemoryFiles:
    def __init__(self) -> None:
        self.items: dict[str, StoredFile] = {}

    def put(self, stored: StoredFile) -> None:
        self.items[stored.id] = stored.model_copy()

    def get(self, file_id: str) -> StoredFile | None:
        return self.items.get(file_id)


class MemoryBlobs:
    def __init__(self) -> None:
        self.objects: dict[str, tuple[bytes, str]] = {}

    def put(self, key: str, data: bytes, content_type: str) -> None:
        self.objects[key] = (bytes(data), content_type)

    def get(self, key: str) -> bytes:
        return self.objects[key][0]

    def exists(self, key: str) -> bool:
        return key in self.objects

    def download_url(self, key: str, *, filename: str, content_type: str) -> str:
        return f"memory://{key}?filename={filename}"

    def upload_url(self, key: str, *, content_type: str) -> str:
        return f"memory://{key}?upload"


class MemoryPullState:
    def __init__(self) -> None:
        self.states: dict[tuple[str, str], dict[str, Any]] = {}

    def record(self, team: str, account: str, state: dict[str, Any]) -> None:
        self.states[(team, account)] = dict(state)

    def get(self, team: str, account: str) -> dict[str, Any] | None:
        return self.states.get((team, account))


def memory_storage() -> Storage:
    return Storage(mail=MemoryMail(), files=MemoryFiles(), blobs=MemoryBlobs(), pull_state=MemoryPullState())
