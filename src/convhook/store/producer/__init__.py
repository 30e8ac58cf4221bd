"""The producer's data: workspaces, customers, conversations and the event outbox."""

from convhook.store.producer.store import *  # noqa: F403
from convhook.store.producer.store import __all__ as __all__
