"""In-memory adapters of every port (mailcore.ports): the tests build the same use cases as the
functions with these instead of the AWS adapters. They are not in the Lambda layer."""

from typing import Any

from mailcore.settings import SECRETS_MAX_AGE_SECONDS
from mailcore.teams import TeamDirectory

from tests.fakes.services import (
    MemoryAccountRevisions,
    MemoryDeadLetters,
    MemoryLimitCounters,
    MemoryPublisher,
    MemoryPullQueue,
    MemorySecrets,
    MemoryTeamSecrets,
)
from tests.fakes.storage import (
    MemoryBlobs,
    MemoryFiles,
    MemoryMail,
    MemoryPullState,
    MemoryRateLimits,
    memory_storage,
)

__all__ = [
    "MemoryAccountRevisions",
    "MemoryBlobs",
    "MemoryDeadLetters",
    "MemoryFiles",
    "MemoryLimitCounters",
    "MemoryMail",
    "MemoryPublisher",
    "MemoryPullQueue",
    "MemoryPullState",
    "MemoryRateLimits",
    "MemorySecrets",
    "MemoryTeamSecrets",
    "memory_directory",
    "memory_storage",
]


def memory_directory(teams: dict[str, Any] | None = None, prefix: str = "teams/") -> TeamDirectory:
    """A team directory over in-memory secrets: team name -> the JSON of its secret."""
    secrets = MemorySecrets({prefix + name: config for name, config in (teams or {}).items()})
    return TeamDirectory(prefix, secrets, list_max_age=SECRETS_MAX_AGE_SECONDS)
