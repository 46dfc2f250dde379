"""Fair shares: how many operations one caller may have in flight, per server process.

One member sending eight of the costliest requests the limits admit took three quarters of
the server's throughput and made everybody else's p95 four times longer (``bench/abuse.py``:
55 -> 237 ms at concurrency 8, 2026-12-02). Each caller (a session token; an anonymous
caller by client address) gets ``per_caller`` operations at a time; the next ones wait their
turn before they take a pooled connection, and past ``max_waiting`` waiting ones the caller
is told to slow down (HTTP 429, RATE_LIMITED, ``Retry-After``). The key is the token's hash,
known before the database is asked: a caller holding several sessions gets a share per
session, and sessions come from the rate-limited log-in.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field


class TooBusy(Exception):
    """The caller already has its share in flight and its queue is full."""


@dataclass
class _Share:
    semaphore: asyncio.Semaphore
    waiting: int = 0
    holders: int = field(default=0)


class Fairness:
    def __init__(self, per_caller: int, max_waiting: int) -> None:
        self.per_caller = per_caller
        self.max_waiting = max_waiting
        self._shares: dict[str, _Share] = {}

    @asynccontextmanager
    async def slot(self, caller: str) -> AsyncIterator[None]:
        """Hold one of the caller's slots for the block; TooBusy when its queue is full."""
        share = self._shares.get(caller)
        if share is None:
            share = self._shares[caller] = _Share(asyncio.Semaphore(self.per_caller))
        if share.semaphore.locked() and share.waiting >= self.max_waiting:
            raise TooBusy
        share.holders += 1
        try:
            share.waiting += 1
            try:
                await share.semaphore.acquire()
            finally:
                share.waiting -= 1
            try:
                yield
            finally:
                share.semaphore.release()
        finally:
            share.holders -= 1
            if share.holders == 0:
                del self._shares[caller]

    def callers(self) -> int:
        """Callers with an operation in flight or waiting (for tests and metrics)."""
        return len(self._shares)
