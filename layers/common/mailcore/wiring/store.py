"""StoreFunction: stored mail and files of the caller's teams."""

from __future__ import annotations

from dataclasses import dataclass

from mailcore.settings import Settings, read
from mailcore.storage import Storage
from mailcore.teams import TeamDirectory
from mailcore.wiring import parts, process_root


@dataclass(frozen=True)
class StoreRoot:
    storage: Storage
    directory: TeamDirectory


def build(settings: Settings) -> StoreRoot:
    return StoreRoot(storage=parts.aws_storage(settings), directory=parts.team_directory(settings))


@process_root
def root() -> StoreRoot:
    return build(read(Settings))
