"""Opaque, time-sortable identifiers such as ``evt_0190f3c2a1b4c0ffee12345678``."""

from __future__ import annotations

import os
import threading
import time

_lock = threading.Lock()
_last_ms = 0
_last_rand = 0
_RAND_BITS = 64


def new_id(prefix: str) -> str:
    """A new id: ``prefix_`` then 12 hex digits of milliseconds and 16 of randomness.

    Ids made by one process sort in creation order even within one millisecond, because the
    random part is incremented rather than redrawn when the clock has not moved.
    """
    global _last_ms, _last_rand
    with _lock:
        ms = time.time_ns() // 1_000_000
        if ms <= _last_ms:
            ms = _last_ms
            rand = (_last_rand + 1) % (1 << _RAND_BITS)
        else:
            rand = int.from_bytes(os.urandom(8), "big") >> 1
        _last_ms, _last_rand = ms, rand
    return f"{prefix}_{ms:012x}{rand:016x}"
