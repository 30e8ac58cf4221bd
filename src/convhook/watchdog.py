"""The watchdog: a conversation left too long in a live phase is ended by convhook itself.

Every conversation ends with exactly one terminal event, even when the client that drives it
never says so. A conversation with no transition for longer than its phase's limit
(:class:`Limits`) gets ``conversation.completed`` with ``endReason: "timeout"``, recorded
through the outbox like any transition: ``fail`` from ``created`` or ``dialing`` (status
``failed``), ``end`` from ``active`` or ``left`` (status ``completed``).

The decision is made on a read and checked again inside the write (the transition's guard): a
conversation whose phase or event count changed meanwhile is left alone, and the lifecycle
refuses whichever of a late client ``end`` and the watchdog comes second, so the two never
both record a terminal event. Among all the processes sharing a database one watchdog acts at a
time: the holder of the ``watchdog`` lease (:mod:`convhook.store.producer.watchdog`), renewed
at every sweep and taken over by another process once a crashed holder's lease expires.

A conversation whose timeout the outbox refuses for a reason that would not change on a retry
(e.g. :class:`~convhook.errors.UnsendableChange`, a row stored before today's checks) is
logged once and skipped by this process from then on; a restart tries it once more.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType

from convhook.errors import ConfigError, ConstraintError, NotFoundError, StateError, StoreError
from convhook.ids import new_id
from convhook.lifecycle import Action, Phase, TransitionError
from convhook.outbox import Outbox
from convhook.store.producer import StoredConversation
from convhook.store.producer.watchdog import Stale, release_lease, stale, take_lease
from convhook.vocabulary import EndReason

__all__ = ["LEASE", "Limits", "Moved", "Watchdog", "parse_duration"]

log = logging.getLogger("convhook.watchdog")

LEASE = "watchdog"
"""The name of the lease whose holder is the one watchdog acting."""

_DURATION = re.compile(r"^([0-9]+)([smh])$")
_UNIT_MS = {"s": 1_000, "m": 60_000, "h": 3_600_000}
# Sweeps come at a quarter of the shortest limit (a conversation is ended at most a quarter
# late), within these bounds: often enough for second-long limits in tests, rarely enough that
# an idle database sees a query a phase every half minute at most.
_MIN_INTERVAL = 0.05
_MAX_INTERVAL = 30.0
# Conversations remembered as refused for good; the oldest is forgotten beyond this.
_MAX_GIVEN_UP = 10_000


def parse_duration(text: str, *, name: str) -> int:
    """``90s``, ``2m``, ``4h`` or ``0`` (off) in milliseconds; :class:`ConfigError` naming
    the setting ``name`` for anything else."""
    value = text.strip()
    if value == "0":
        return 0
    match = _DURATION.match(value)
    if match is None:
        raise ConfigError(
            f"{name} must be a whole number of seconds, minutes or hours (90s, 2m, 4h) "
            f"or 0 to turn it off, got {text!r}"
        )
    return int(match[1]) * _UNIT_MS[match[2]]


@dataclass(frozen=True)
class Limits:
    """How long a conversation may stay in each phase without a transition, in ms (0: not
    watched)."""

    created: int = 0
    """Created but never dialed or joined: off by default (conversations are often created
    ahead of a campaign)."""
    dialing: int = 2 * 60_000
    """Placing the call: a call rings for well under two minutes."""
    active: int = 4 * 3_600_000
    """The user is in the conversation."""
    left: int = 10 * 60_000
    """The user left and the client has not ended the conversation."""

    def watched(self) -> list[tuple[Phase, int]]:
        """The phases with a limit, in lifecycle order, with their limit."""
        given = (
            (Phase.CREATED, self.created),
            (Phase.DIALING, self.dialing),
            (Phase.ACTIVE, self.active),
            (Phase.LEFT, self.left),
        )
        return [(phase, limit) for phase, limit in given if limit > 0]

    @property
    def enabled(self) -> bool:
        """Whether any phase is watched."""
        return bool(self.watched())


class Moved(StateError):
    """The conversation changed after the watchdog read it: it is not stale any more."""

    def __init__(self, conversation_id: str) -> None:
        super().__init__(f"conversation {conversation_id} moved since it was found stale")
        self.conversation_id = conversation_id


_TIMEOUT = {"endReason": EndReason.TIMEOUT.value}


def _action(phase: Phase) -> Action:
    """``fail`` before the user joined, ``end`` after: both record ``conversation.completed``."""
    return Action.FAIL if phase in (Phase.CREATED, Phase.DIALING) else Action.END


class Watchdog:
    """Ends stale conversations through ``outbox`` every ``interval`` seconds while this
    process holds the lease; use as ``async with Watchdog(outbox, limits)`` inside the
    store's own ``async with``.

    ``clock`` (epoch seconds) decides both staleness and the lease's expiry: inject one to
    test without waiting."""

    def __init__(
        self,
        outbox: Outbox,
        limits: Limits | None = None,
        *,
        interval: float | None = None,
        lease_ttl: float | None = None,
        batch: int = 100,
        owner: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.outbox = outbox
        self.limits = limits or Limits()
        if batch < 1:
            raise ConfigError(f"batch must be at least 1, got {batch}")
        if interval is None:
            shortest = min((limit for _, limit in self.limits.watched()), default=0) / 4000
            interval = min(max(shortest, _MIN_INTERVAL), _MAX_INTERVAL)
        self.interval = interval
        # Renewed at every sweep and between batches, so only a holder that stopped sweeping
        # (crashed, or stalled for several sweeps) loses it.
        self.lease_ttl = lease_ttl if lease_ttl is not None else max(4 * interval, 2.0)
        self.batch = batch
        self.owner = owner or new_id("wd")
        self.clock = clock
        self.ended = 0
        """Conversations this watchdog ended since it started."""
        self.leading = False
        """Whether this process held the lease at its last sweep."""
        self._given_up: dict[tuple[str, str, int], None] = {}
        self._task: asyncio.Task[None] | None = None

    def _now(self) -> int:
        return int(self.clock() * 1000)

    async def _lead(self) -> bool:
        held = await take_lease(
            self.outbox.store, LEASE, self.owner, now=self._now(), ttl=int(self.lease_ttl * 1000)
        )
        if held != self.leading:
            log.info(
                "watchdog %s the lease",
                "took" if held else "does not hold",
                extra={"action": "watchdog_lease", "owner": self.owner, "leading": held},
            )
        self.leading = held
        return held

    async def sweep(self) -> int:
        """One pass: when this process holds (or takes) the lease, end every conversation
        stale in a watched phase, ``batch`` at a time; the number ended."""
        if not await self._lead():
            return 0
        before = self.ended
        await self._sweep(self._now())
        return self.ended - before

    async def _sweep(self, now: int) -> None:
        for phase, limit in self.limits.watched():
            after = (-1, "")
            while True:
                found = await stale(
                    self.outbox.store, phase, before=now - limit, after=after, limit=self.batch
                )
                todo = [row for row in found if self._key(row) not in self._given_up]
                # Submitted together: the store commits concurrent transitions in one write.
                outcomes = await asyncio.gather(
                    *(self._end(row, now) for row in todo), return_exceptions=True
                )
                for outcome in outcomes:
                    if isinstance(outcome, BaseException):
                        raise outcome
                if len(found) < self.batch:
                    break
                after = (found[-1].updated_at, found[-1].id)
                if not await self._lead():
                    return

    @staticmethod
    def _key(row: Stale) -> tuple[str, str, int]:
        return (row.id, row.phase.value, row.event_seq)

    async def _end(self, row: Stale, now: int) -> bool:
        """Time ``row`` out unless it moved since it was read; whether it was ended."""

        def still_stale(current: StoredConversation) -> None:
            # Every transition moves the phase forward or adds an event (or both): the same
            # phase and event count mean nothing happened since the read.
            if current.phase != row.phase or current.event_seq != row.event_seq:
                raise Moved(row.id)

        try:
            change = await self.outbox.transition(
                row.workspace_id, row.id, _action(row.phase), dict(_TIMEOUT), guard=still_stale
            )
        except (Moved, TransitionError, NotFoundError):
            return False
        except ConstraintError as exc:  # the data, not the database: it would fail each sweep
            self._give_up(row, exc)
            return False
        except StoreError:
            raise  # the database, not the conversation: the next sweep tries again
        except Exception as exc:  # noqa: BLE001 - any other refusal would repeat every sweep
            self._give_up(row, exc)
            return False
        self.ended += 1
        _count(row.phase)
        log.info(
            "conversation timed out",
            extra={
                "action": "conversation_timed_out",
                "conversation_id": row.id,
                "workspace_id": row.workspace_id,
                "phase": row.phase.value,
                "idle_ms": now - row.updated_at,
                "event_id": change.events[0].id if change.events else None,
            },
        )
        return True

    def _give_up(self, row: Stale, exc: Exception) -> None:
        if len(self._given_up) >= _MAX_GIVEN_UP:
            del self._given_up[next(iter(self._given_up))]
        self._given_up[self._key(row)] = None
        log.error(
            "conversation %s cannot be timed out and is skipped from now on: %s",
            row.id,
            exc,
            extra={
                "action": "conversation_timeout_refused",
                "conversation_id": row.id,
                "workspace_id": row.workspace_id,
                "phase": row.phase.value,
                "error": type(exc).__name__,
            },
        )

    async def run(self) -> None:
        """Sweep every ``interval`` seconds until cancelled; a failed sweep is logged and the
        next one tries again."""
        while True:
            try:
                await self.sweep()
            except StoreError as exc:
                log.warning(
                    "watchdog sweep failed: %s",
                    exc,
                    extra={"action": "watchdog_failed", "error": type(exc).__name__},
                )
            except Exception:
                log.exception("watchdog sweep failed", extra={"action": "watchdog_failed"})
            await asyncio.sleep(self.interval)

    async def start(self) -> None:
        """Start sweeping in a task of the running loop (again: does nothing)."""
        if self._task is None:
            self._task = asyncio.create_task(self.run(), name="convhook-watchdog")

    async def close(self) -> None:
        """Stop sweeping and give the lease up, so another process takes over at once."""
        task, self._task = self._task, None
        if task is None:
            return
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        if self.leading:
            # The database may be gone already: the lease then expires by itself.
            with contextlib.suppress(Exception):
                await release_lease(self.outbox.store, LEASE, self.owner)
            self.leading = False

    async def __aenter__(self) -> Watchdog:
        await self.start()
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()


def _count(phase: Phase) -> None:
    """Count a timeout on the metrics page when the server extra is installed."""
    try:
        from convhook.metrics import TIMED_OUT
    except ImportError:
        return
    TIMED_OUT.labels(phase.value).inc()
