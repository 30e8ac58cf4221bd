"""Regenerate the example events shipped in src/convhook/fixtures/ (stable ids and times)."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime
from pathlib import Path

from convhook.events import CatalogueEventType, EventType, OperationalEventType
from convhook.samples import sample_event

NOW = datetime(2023, 1, 1, 12, 0, 0, tzinfo=UTC)
OUT = Path(__file__).resolve().parent.parent / "src" / "convhook" / "fixtures"


def fixture(event_type: CatalogueEventType) -> dict[str, object]:
    """The fixture document for one event type, the same on every run."""
    event = sample_event(event_type, now=NOW, rng=random.Random(7), fixed_ids=True)
    return event.to_wire()


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    for kind in [*EventType, *OperationalEventType]:
        path = OUT / f"{kind.value}.json"
        path.write_text(json.dumps(fixture(kind), indent=4) + "\n")
        print(path)


if __name__ == "__main__":
    main()
