"""What every store object shares: opened and closed around its use, with ``async with``."""

from __future__ import annotations

from abc import ABC, abstractmethod
from types import TracebackType
from typing import TYPE_CHECKING, Self

if TYPE_CHECKING:
    from convhook.store.engine.database import Database


class Resource(ABC):
    """Opened before use and closed after; ``async with`` does both."""

    @abstractmethod
    async def open(self) -> None:
        """Connect (again: does nothing)."""

    @abstractmethod
    async def close(self) -> None:
        """Finish what is queued and disconnect."""

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()


class Facade(Resource):
    """A store over one :class:`~convhook.store.engine.database.Database` (which it opens and
    closes); several facades may share one database opened already."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def open(self) -> None:
        """Check (SQLite: apply) the schema and start the writer; again does nothing."""
        await self.db.open()

    async def close(self) -> None:
        """Finish queued writes and stop."""
        await self.db.close()
