"""moto's DynamoDB made atomic per request, as DynamoDB is.

moto (5.2) serves requests on many threads and its DynamoDB backend takes no lock: two conditional
writes arriving together can both see the condition hold and both succeed (measured: 4 threads
taking one lease with `attribute_not_exists(holder)` got 2 or 3 winners in 4 of 20 rounds). Every
race the service closes with a condition (pull lease, outbox claims, the accounts writer lease)
would then be open locally. One lock around each DynamoDB request restores what real DynamoDB
guarantees: each request, condition and write together, happens at once.
"""

from __future__ import annotations

import threading
from typing import Any

_LOCK = threading.RLock()
_PATCHED = False


def make_dynamodb_atomic() -> None:
    """Serialises moto's DynamoDB requests in this process (idempotent)."""
    global _PATCHED
    if _PATCHED:
        return
    from moto.dynamodb.responses import DynamoHandler

    unlocked = DynamoHandler.call_action

    def call_action(self: Any) -> Any:
        with _LOCK:
            return unlocked(self)

    DynamoHandler.call_action = call_action  # type: ignore[method-assign]
    _PATCHED = True
