"""Fixtures every test shares: a clean environment, free ports, temporary databases."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.servers import free_port


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Tests never see the developer's CONVHOOK_* settings."""
    for name in list(os.environ):
        if name.startswith("CONVHOOK_"):
            monkeypatch.delenv(name)
    return


@pytest.fixture
def port() -> int:
    """A free TCP port on 127.0.0.1."""
    return free_port()


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    """A path for a fresh SQLite database file."""
    return tmp_path / "convhook.db"
