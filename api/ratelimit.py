"""Fixed-window rate limits for log-in attempts, per e-mail and per client address.

In process memory: right for the single-process default. With several workers or hosts the
counters must live in a shared store (Redis); see docs/operations (issue #5's scaling work).
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict


class RateLimiter:
    """Allows ``limit`` hits per key per ``window`` seconds."""

    def __init__(self, limit: int, window: float, max_keys: int = 100_000) -> None:
        self.limit = limit
        self.window = window
        self.max_keys = max_keys
        self._windows: OrderedDict[str, tuple[float, int]] = OrderedDict()

    def hit(self, key: str, now: float | None = None) -> int | None:
        """Count one attempt; None if allowed, else the seconds until the window resets."""
        now = time.monotonic() if now is None else now
        started, count = self._windows.get(key, (now, 0))
        if now - started >= self.window:
            started, count = now, 0
        count += 1
        self._windows[key] = (started, count)
        self._windows.move_to_end(key)
        while len(self._windows) > self.max_keys:
            self._windows.popitem(last=False)
        if count > self.limit:
            return max(1, math.ceil(started + self.window - now))
        return None
