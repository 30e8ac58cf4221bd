"""Each conversation's events are handled in order; gaps are found, recorded and filled.

A sender that numbers a conversation's events (convhook sends ``convhook-sequence`` and
``convhook-previous-event-id`` on every delivery) lets the receiver check, before an event's
handlers run, that every earlier event of its conversation was handled:

- the next sequence runs at once (the usual case costs no query: the last sequence handled
  is kept in memory);
- an earlier event stored but not yet handled (arrived late, or its handlers are being
  retried) makes the event wait for it, at most ``wait`` seconds after it arrived;
- a sequence never stored is a *gap*: recorded in the inbox with the event that revealed it.
  With the producer's API configured (:class:`~convhook.receiver.reconcile.Reconcile`) the
  missing events are fetched, stored as ``reconciled`` (a later real delivery of one is a
  duplicate) and handled first. An API that does not answer is asked again with backoff
  until ``wait`` has passed; a 404, a pruned event or an API still down then leave the gap
  ``unfilled`` with the reason, and the event's handlers run without them. Without the API,
  a gap is recorded ``unfilled`` at once and nothing waits for it.
- an event older than the last one handled (it arrived after its gap was given up) runs
  too, recorded as out of order.

Events of senders without sequence headers are compared by their type's lifecycle rank
(:data:`RANKS`): one ranked below the last handled of its conversation is recorded as out of
order, never as a gap (``userLeft`` may never come). Only ``conversation.*`` events are
ordered: operational events carry sequences of their endpoint, not of a conversation.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from convhook.receiver.limits import clip
from convhook.receiver.reconcile import ConversationAPI, FetchError, Reconcile
from convhook.store.inbox import (
    Gap,
    GapKind,
    GapStatus,
    HandlerStatus,
    Inbox,
    InboxEntry,
    Progress,
    Received,
)

log = logging.getLogger("convhook.receiver.ordering")

RANKS: dict[str, int] = {
    "conversation.userJoined": 1,
    "conversation.userLeft": 2,
    "conversation.completed": 3,
    "conversation.analysisCompleted": 4,
}
"""The lifecycle rank of each conversation event type, for senders without sequences."""
DEFAULT_WAIT = 60.0
"""Seconds an event waits, at most, for its conversation's earlier events."""
RECHECK = 0.25
"""Seconds between looks at an earlier event still being handled."""
MAX_BACKOFF = 30.0
"""The longest pause between two requests to an API that does not answer."""
_CACHED = 10_000

Run = Callable[[InboxEntry], Awaitable[bool]]
"""Runs a claimed event's handlers and records the outcome; True if it is settled (done, or
failed for good) rather than to be retried."""
Clock = Callable[[], float]


def claimed(received: Received) -> InboxEntry:
    """The inbox row just stored for ``received`` as ``running``, attempt 1."""
    return InboxEntry(
        event_id=received.event_id,
        webhook_id=received.webhook_id,
        event_type=received.event_type,
        body=received.body,
        headers=received.headers,
        received_at=received.received_at,
        status=HandlerStatus.RUNNING,
        attempts=1,
        next_attempt_at=received.claimed_until,
        handlers_done=(),
        last_error=None,
        updated_at=received.received_at,
        conversation_id=received.conversation_id,
        sequence=received.sequence,
        traceparent=received.traceparent,
        origin=received.origin,
    )


class Ordering:
    """Decides, before an event's handlers run, whether its conversation is ready for it."""

    def __init__(
        self,
        inbox: Inbox,
        *,
        clock: Clock,
        lease: float,
        reconcile: Reconcile | None = None,
        wait: float | None = None,
    ) -> None:
        self.inbox = inbox
        self.reconcile = reconcile
        self.api = ConversationAPI(reconcile) if reconcile is not None else None
        self.wait = wait if wait is not None else (reconcile.wait if reconcile else DEFAULT_WAIT)
        self.lease = lease
        self._clock = clock
        # The last sequence and rank handled here per conversation: the usual next event
        # needs no query.
        self._last: dict[str, int] = {}
        self._rank: dict[str, int] = {}

    async def close(self) -> None:
        """Close the API client."""
        if self.api is not None:
            await self.api.close()

    async def gate(self, entry: InboxEntry, run: Run) -> float | None:
        """None if ``entry``'s handlers may run now, else the time to look again.

        Missing earlier events are fetched, stored and run here (with ``run``), in order.
        """
        conversation = entry.conversation_id
        if conversation is None:
            return None
        sequence = entry.sequence
        if sequence is None:
            await self._check_rank(entry, conversation)
            return None
        if self._last.get(conversation) == sequence - 1:
            return None
        last = (await self.inbox.progress(conversation)).last_sequence
        if sequence <= last:
            if await self.inbox.covered(conversation, sequence):
                await self._out_of_order(
                    entry,
                    conversation,
                    f"sequence {sequence} arrived after sequence {last} had been handled "
                    "without it",
                )
            return None
        if sequence == last + 1:
            return None
        return await self._earlier(entry, conversation, last, sequence, run)

    async def handled(self, entry: InboxEntry) -> None:
        """Note that ``entry``'s handlers are settled (done, or failed for good)."""
        conversation = entry.conversation_id
        if conversation is None:
            return
        rank = RANKS.get(entry.event_type, 0)
        await self.inbox.handled(conversation, entry.sequence, rank, entry.event_id, self._clock())
        if entry.sequence is not None and entry.sequence > self._last.get(conversation, 0):
            _remember(self._last, conversation, entry.sequence)
        if rank > self._rank.get(conversation, 0):
            _remember(self._rank, conversation, rank)

    async def _check_rank(self, entry: InboxEntry, conversation: str) -> None:
        rank = RANKS.get(entry.event_type, 0)
        if not rank or rank >= self._rank.get(conversation, rank + 1):
            return
        progress: Progress = await self.inbox.progress(conversation)
        if rank < progress.last_rank:
            await self._out_of_order(
                entry,
                conversation,
                f"{entry.event_type} arrived after a later lifecycle event had been handled",
            )

    async def _out_of_order(self, entry: InboxEntry, conversation: str, reason: str) -> None:
        now = self._clock()
        await self.inbox.note_gap(
            Gap(
                entry.event_id,
                conversation,
                GapKind.OUT_OF_ORDER,
                None,
                None,
                GapStatus.RECORDED,
                reason,
                0,
                0,
                now,
                now,
            )
        )
        event_id = clip(entry.event_id)
        log.warning(
            "event %s handled out of order: %s",
            event_id,
            reason,
            extra={
                "action": "out_of_order",
                "event_id": event_id,
                "conversation_id": clip(conversation),
            },
        )

    async def _earlier(
        self, entry: InboxEntry, conversation: str, last: int, sequence: int, run: Run
    ) -> float | None:
        """``entry`` is beyond the next sequence: wait for, or fill, the events before it."""
        now = self._clock()
        deadline = entry.received_at + self.wait
        stored = await self.inbox.between(conversation, last, sequence)
        missing = sequence - last - 1 - len({s for s, _, _ in stored})
        if missing > 0:
            later = await self._gap(entry, conversation, last, sequence, stored, run, deadline)
            if later is not None:
                return later
            stored = await self.inbox.between(conversation, last, sequence)
        busy = [
            s
            for s, event_id, status in stored
            if status in (HandlerStatus.PENDING, HandlerStatus.RUNNING)
            and event_id != entry.event_id
        ]
        if not busy:
            return None
        now = self._clock()
        if now < deadline:
            return min(now + RECHECK, deadline)
        shown = ", ".join(str(s) for s in busy[:10]) + (" ..." if len(busy) > 10 else "")
        reason = (
            f"handled after waiting {self.wait:g} s for sequence(s) {shown}, still being handled"
        )
        await self.inbox.note_gap(
            Gap(
                entry.event_id,
                conversation,
                GapKind.GAP,
                last,
                sequence,
                GapStatus.UNFILLED,
                reason,
                0,
                0,
                now,
                now,
            )
        )
        self._log_unfilled(entry, conversation, reason)
        return None

    async def _gap(
        self,
        entry: InboxEntry,
        conversation: str,
        last: int,
        sequence: int,
        stored: list[tuple[int, str, HandlerStatus]],
        run: Run,
        deadline: float,
    ) -> float | None:
        """Record the gap and fill it if the API is configured; a time to look again if the
        API should be asked again later."""
        now = self._clock()
        # Named by the sequences missing at its ends: events stored next to the last handled
        # one or next to this one (waiting for a handler or for their turn) are not missing.
        have = {s for s, _, _ in stored}
        low, high = last, sequence
        while low + 1 in have:
            low += 1
        while high - 1 in have:
            high -= 1
        first, final = low + 1, high - 1
        span = str(first) if first == final else f"{first}-{final}"
        gap = await self.inbox.note_gap(
            Gap(
                entry.event_id,
                conversation,
                GapKind.GAP,
                low,
                high,
                GapStatus.OPEN,
                None if self.api else "not reconciled: no producer API is configured",
                0,
                1 if self.api else 0,
                now,
                None,
            )
        )
        event_id = clip(entry.event_id)
        if gap.detected_at == now:
            log.warning(
                "gap before event %s: sequence(s) %s of conversation %s never arrived",
                event_id,
                span,
                clip(conversation),
                extra={
                    "action": "gap_detected",
                    "event_id": event_id,
                    "conversation_id": clip(conversation),
                    "missing": span,
                },
            )
        if gap.status is not GapStatus.OPEN:
            return None
        if self.api is None:
            await self.inbox.close_gap(entry.event_id, GapStatus.UNFILLED, gap.reason, 0, now)
            return None
        try:
            fetched = await self.api.events(conversation, last, sequence)
        except FetchError as exc:
            now = self._clock()
            if exc.retry and now < deadline:
                await self.inbox.note_gap(
                    Gap(
                        entry.event_id,
                        conversation,
                        GapKind.GAP,
                        low,
                        high,
                        GapStatus.OPEN,
                        exc.reason,
                        0,
                        0,
                        gap.detected_at,
                        None,
                    )
                )
                pause: float = min(MAX_BACKOFF, 0.5 * 2.0 ** max(0, gap.attempts - 1))
                log.warning(
                    "filling the gap before %s failed (asked %d times), asking again in %.1f s: %s",
                    event_id,
                    gap.attempts,
                    pause,
                    exc.reason,
                    extra={"action": "gap_fetch_failed", "event_id": event_id},
                )
                return min(now + pause, deadline)
            await self.inbox.close_gap(entry.event_id, GapStatus.UNFILLED, exc.reason, 0, now)
            self._log_unfilled(entry, conversation, exc.reason)
            return None
        have = {s for s, _, _ in stored}
        problems: list[str] = []
        new: list[InboxEntry] = []
        returned: set[int] = set()
        for item in fetched:
            if item.sequence in have or item.sequence in returned:
                continue
            returned.add(item.sequence)
            if item.body is None:
                problems.append(f"sequence {item.sequence} {item.problem}")
                continue
            received = Received(
                event_id=item.event_id,
                webhook_id=None,
                event_type=item.event_type,
                body=item.body,
                headers=_headers(item.sequence, item.previous_event_id),
                received_at=self._clock(),
                claimed_until=self._clock() + self.lease,
                conversation_id=conversation,
                sequence=item.sequence,
                origin="reconciled",
            )
            # False: delivered meanwhile (the wait below then covers it).
            if await self.inbox.add(received):
                new.append(claimed(received))
        # A huge gap is named by its ends only: the set of its sequences would cost memory.
        wide = sequence - first > 10_000
        absent = set() if wide else set(range(first, sequence)) - have - returned
        if absent:
            problems.append(f"sequence(s) {_ranges(sorted(absent))} not returned by the API")
        elif wide:
            known = sum(1 for n in have | returned if first <= n < sequence)
            if known < sequence - first:
                problems.append(
                    f"{sequence - first - known} of sequences {first}-{sequence - 1} "
                    "not returned by the API"
                )
        filled = 0
        for at, item_entry in enumerate(new):
            settled = await run(item_entry)
            filled += 1
            if not settled:
                # Its retry comes first; the rest wait for it in the inbox, due now.
                for rest in new[at + 1 :]:
                    await self.inbox.defer(rest.event_id, self._clock(), self._clock())
                break
        now = self._clock()
        status = GapStatus.UNFILLED if problems else GapStatus.FILLED
        reason = "; ".join(problems) or None
        await self.inbox.close_gap(entry.event_id, status, reason, filled, now)
        if problems:
            self._log_unfilled(entry, conversation, reason or "")
        else:
            log.info(
                "gap before %s filled from the API: %d event(s)",
                event_id,
                len(new),
                extra={"action": "gap_filled", "event_id": event_id, "filled": len(new)},
            )
        return None

    def _log_unfilled(self, entry: InboxEntry, conversation: str, reason: str) -> None:
        event_id = clip(entry.event_id)
        log.warning(
            "gap before %s left unfilled: %s",
            event_id,
            clip(reason),
            extra={
                "action": "gap_unfilled",
                "event_id": event_id,
                "conversation_id": clip(conversation),
            },
        )


def _remember(cache: dict[str, int], key: str, value: int) -> None:
    """Keep ``value`` for ``key``, forgetting the oldest entry when the cache is full."""
    if key not in cache and len(cache) >= _CACHED:
        del cache[next(iter(cache))]
    cache[key] = value


def _headers(sequence: int, previous: str | None) -> dict[str, str]:
    headers = {"convhook-sequence": str(sequence)}
    if previous is not None:
        headers["convhook-previous-event-id"] = previous
    return headers


def _ranges(values: list[int]) -> str:
    """``[2, 3, 4, 7]`` as ``2-4, 7``."""
    parts: list[str] = []
    start = prev = values[0]
    for v in values[1:]:
        if v != prev + 1:
            parts.append(str(start) if start == prev else f"{start}-{prev}")
            start = v
        prev = v
    parts.append(str(start) if start == prev else f"{start}-{prev}")
    return ", ".join(parts)
