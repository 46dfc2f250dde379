"""Log lines an operator can read during an outage.

While PostgreSQL is down every request fails the same way: one line per request buried the
logs (12,000 lines in 26 s). ``RateLimitedLog`` writes the first line of a kind at once,
then at most one line per ``interval`` seconds for that kind, counting the ones it held
back and saying so on the next line it writes.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class _Kind:
    last: float
    suppressed: int = 0


class RateLimitedLog:
    """At most one line per ``interval`` seconds for each key, with the count suppressed."""

    def __init__(
        self,
        logger: logging.Logger,
        interval: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.logger = logger
        self.interval = interval
        self.clock = clock
        self._kinds: dict[str, _Kind] = {}
        self._lock = threading.Lock()

    def log(self, level: int, key: str, message: str, *args: object) -> bool:
        """Write the line (True), or count it as suppressed (False). ``key`` names the kind
        of failure (not the request): lines of one kind share the allowance."""
        now = self.clock()
        with self._lock:
            kind = self._kinds.get(key)
            if kind is not None and now - kind.last < self.interval:
                kind.suppressed += 1
                return False
            suppressed = kind.suppressed if kind is not None else 0
            self._kinds[key] = _Kind(last=now)
        if suppressed:
            message += " (%d similar line(s) suppressed in the last %.0f s)"
            args = (*args, suppressed, self.interval)
        self.logger.log(level, message, *args)
        return True

    def warning(self, key: str, message: str, *args: object) -> bool:
        return self.log(logging.WARNING, key, message, *args)

    def error(self, key: str, message: str, *args: object) -> bool:
        return self.log(logging.ERROR, key, message, *args)


def failure_kind(exc: BaseException) -> str:
    """A key for a failure: its class (messages carry addresses, pids, request ids)."""
    return type(exc).__name__
