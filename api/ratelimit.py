"""Log-in protection: attempt limits for logIn and changePassword (the ``limits`` library).

Three moving windows, checked in this order before any password hash is verified:

1. per (e-mail, client address) pair, e.g. 10 per 5 minutes: what stops one guesser, and
   the only limit someone at another address can exhaust for nobody but themselves;
2. per e-mail from all addresses, a slower ceiling, e.g. 200 per hour: bounds a guesser
   spread over many addresses. It is set above what one address may send in its window
   (``Settings`` refuses less), so one address alone can never lock the owner out;
3. per client address, e.g. 50 per 5 minutes: bounds spraying many e-mails from one place.

A refused attempt counts toward no later window, so a guesser held by its pair limit does
not use up the e-mail's ceiling. A correct password clears its pair. See "Log-in
protection" in docs/architecture/api.md for the reasoning.

With ``REDIS_URL`` the counters live in Redis (the ``redis`` package's asyncio client) and
hold across processes and hosts; without it they live in process memory, right only for the
embedded single-process default (``taskql serve`` warns when several workers have no Redis).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass

from limits import RateLimitItem, RateLimitItemPerSecond
from limits.aio.storage import MemoryStorage, RedisStorage, Storage
from limits.aio.strategies import MovingWindowRateLimiter
from limits.errors import StorageError

from api.settings import Settings

_log = logging.getLogger("taskql.ratelimit")


class LimiterUnavailable(Exception):
    """The shared counter store (Redis) did not answer: attempts are refused, not let through."""


@dataclass(frozen=True, slots=True)
class Limit:
    name: str
    item: RateLimitItem


def storage_for(settings: Settings) -> Storage:
    """Redis when ``REDIS_URL`` is set (keys under ``TASKQL_RATE_LIMIT_PREFIX``), else memory."""
    if settings.redis_url:
        uri = settings.redis_url
        if not uri.startswith("async+"):
            uri = f"async+{uri}"
        return RedisStorage(
            uri,
            implementation="redispy",
            key_prefix=settings.taskql_rate_limit_prefix,
            wrap_exceptions=True,
            socket_timeout=2,
            socket_connect_timeout=2,
        )
    return MemoryStorage()


def _email_key(email: str) -> str:
    """The e-mail as counted: normalised as log-in looks it up, at most an address's length."""
    return email.strip().lower()[:320]


class LoginLimits:
    """Attempt limits shared by ``logIn`` and ``changePassword`` (a guess is a guess)."""

    def __init__(self, settings: Settings, storage: Storage | None = None) -> None:
        self.storage = storage if storage is not None else storage_for(settings)
        self.shared = isinstance(self.storage, RedisStorage)
        self._strategy = MovingWindowRateLimiter(self.storage)
        window = settings.taskql_login_window_seconds
        self.pair = Limit(
            "pair",
            RateLimitItemPerSecond(settings.taskql_login_attempts_per_pair, window, "login-pair"),
        )
        self.email = Limit(
            "email",
            RateLimitItemPerSecond(
                settings.taskql_login_attempts_per_email,
                settings.taskql_login_email_window_seconds,
                "login-email",
            ),
        )
        self.ip = Limit(
            "ip", RateLimitItemPerSecond(settings.taskql_login_attempts_per_ip, window, "login-ip")
        )

    async def attempt(self, email: str, client_ip: str | None) -> int | None:
        """Count one attempt; None when allowed, else the seconds until one would be.

        Raises LimiterUnavailable when the store does not answer.
        """
        email = _email_key(email)
        address = client_ip or "unknown"
        for limit, keys in (
            (self.pair, (email, address)),
            (self.email, (email,)),
            (self.ip, (address,)),
        ):
            try:
                if await self._strategy.hit(limit.item, *keys):
                    continue
                stats = await self._strategy.get_window_stats(limit.item, *keys)
            except StorageError as exc:
                _log.error("rate-limit store unavailable: %s", exc)
                raise LimiterUnavailable(str(exc)) from None
            _log.info("log-in attempt refused by the %s limit", limit.name)
            return max(1, math.ceil(stats.reset_time - time.time()))
        return None

    async def succeeded(self, email: str, client_ip: str | None) -> None:
        """The password was right: that pair starts afresh (the ceilings keep counting)."""
        try:
            await self._strategy.clear(self.pair.item, _email_key(email), client_ip or "unknown")
        except StorageError as exc:
            _log.warning("could not clear a log-in pair counter: %s", exc)

    async def close(self) -> None:
        bridge = getattr(self.storage, "bridge", None)
        client = getattr(bridge, "storage", None)
        if client is not None and hasattr(client, "aclose"):
            await client.aclose()
