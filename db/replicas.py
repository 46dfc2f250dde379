"""Streaming read replicas: which PostgreSQL serves a read-only operation.

``DATABASE_REPLICA_URL`` names one or several hot standbys (server role). Each gets a pool of
its own. A background check (every ``DB_REPLICA_CHECK_INTERVAL`` s) reads the primary's WAL
position (``pg_current_wal_lsn()``) and each replica's replayed position
(``pg_last_wal_replay_lsn()``); the primary's positions are kept for a while, so a replica's
lag is measured in time: the age of the oldest primary position it has not replayed (0 when
it has replayed everything the primary had at the last check). A replica is chosen only when

- its last check succeeded (it is up, and still in recovery: a promoted standby is skipped),
- its lag is at most ``DB_REPLICA_MAX_LAG_SECONDS``, and the checks themselves are that fresh,
- it has replayed the client's last commit, when the client sent one (read-your-writes:
  ``api.middleware`` returns the commit's LSN after a mutation and the client sends it back).

Otherwise the primary serves the read (``choose`` returns None), so all replicas down or
behind only moves reads to the primary.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
import time
from collections import deque
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from db import metrics
from db.engine import DB, Engine
from db.settings import DatabaseSettings

_log = logging.getLogger("taskql.replicas")

PRIMARY_LSN_SQL = "SELECT pg_current_wal_lsn()::text"
REPLICA_STATE_SQL = "SELECT pg_is_in_recovery(), pg_last_wal_replay_lsn()::text"


def parse_lsn(text: str) -> int:
    """``16/B374D848`` as a number; ValueError if it is not an LSN."""
    high, sep, low = text.strip().partition("/")
    if not sep or not (0 < len(high) <= 8 and 0 < len(low) <= 8):
        raise ValueError(f"not an LSN: {text!r}")
    return (int(high, 16) << 32) | int(low, 16)


def format_lsn(value: int) -> str:
    return f"{value >> 32:X}/{value & 0xFFFFFFFF:X}"


def _name(dsn: str) -> str:
    """Where a replica is, for logs: host, port and database, never a password."""
    parts = urlsplit(dsn)
    host = parts.hostname or ""
    if "host=" in parts.query:
        host = parts.query.split("host=", 1)[1].split("&", 1)[0]
    return f"{host}:{parts.port or ''}{parts.path}"


@dataclass(eq=False)
class Replica:
    engine: Engine
    name: str
    #: The last check succeeded and the server is a standby.
    up: bool = False
    #: Its replayed LSN at the last check.
    replayed: int = 0
    #: When (monotonic) the oldest primary position it had not replayed was read; None: none.
    behind_since: float | None = None
    checked_at: float = -math.inf
    failures: int = field(default=0, repr=False)

    def lag(self, now: float) -> float:
        return 0.0 if self.behind_since is None else now - self.behind_since


class Replicas:
    """The replica set of this process (``REPLICAS``); empty until ``configure``."""

    def __init__(self, primary: Engine = DB) -> None:
        self.primary = primary
        self.replicas: list[Replica] = []
        self.max_lag = 5.0
        self.interval = 0.5
        #: (monotonic time, primary LSN) of recent checks, oldest first.
        self._history: deque[tuple[float, int]] = deque()
        self._task: asyncio.Task[None] | None = None
        self._turn = itertools.count()
        #: The last check read the primary's position (logged on the change only).
        self._primary_read = True

    @property
    def enabled(self) -> bool:
        return bool(self.replicas)

    def configure(self, settings: DatabaseSettings, urls: tuple[str, ...] | None = None) -> None:
        """One pool per replica URL, with the primary's settings (not opened yet)."""
        self.max_lag = settings.db_replica_max_lag_seconds
        self.interval = settings.db_replica_check_interval
        self.replicas = []
        self._history.clear()
        for url in settings.replica_urls if urls is None else urls:
            engine = Engine()
            engine.configure(
                url,
                settings.model_copy(update={"db_application_name": "taskql-replica"}),
            )
            self.replicas.append(Replica(engine, _name(url)))

    async def start(self) -> None:
        """Open the pools (a replica that is down now is retried by every check), check once,
        and keep checking in the background."""
        if not self.replicas:
            return
        await self.check()
        self._task = asyncio.create_task(self._keep_checking(), name="taskql-replica-checks")

    async def stop(self, grace: float = 5) -> None:
        """Stop the checks and close the replicas' pools, each within ``grace`` seconds:
        a check stuck on an unresponsive replica is abandoned and a pool that does not
        close is terminated (``asyncio.wait``, unlike ``wait_for``, never waits for a
        cancelled task to finish: a CI run once hung here)."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            _, pending = await asyncio.wait({task}, timeout=grace)
            if pending:
                _log.warning("replica checks did not stop within %s s: abandoned", grace)
        for replica in self.replicas:
            replica.up = False
            await replica.engine.close_pool_within(grace)

    async def _keep_checking(self) -> None:
        # The flag as well as the cancellation: a cancellation that lands as a check's
        # timeout fires can be lost, and the loop must still end.
        while self._task is asyncio.current_task():
            await asyncio.sleep(self.interval)
            try:
                await self.check()
            except Exception:  # never let the checks die: replicas would go stale (unused)
                _log.exception("replica check failed")

    async def check(self) -> None:
        """Read the primary's position, then every replica's (concurrently)."""
        now = time.monotonic()
        try:
            async with asyncio.timeout(self.interval * 4):
                primary_lsn = await self._primary_lsn()
        except Exception as exc:  # the primary is away (or its pool busy): keep the history
            if self._primary_read:
                _log.warning("replica check: primary position unreadable: %s", exc)
            self._primary_read = False
        else:
            self._primary_read = True
            self._history.append((now, primary_lsn))
            # Keep what measures a lag up to max_lag; anything older is "too far" anyway.
            horizon = now - self.max_lag - 2 * self.interval
            while len(self._history) > 1 and self._history[1][0] < horizon:
                self._history.popleft()
        await asyncio.gather(*(self._check(replica) for replica in self.replicas))
        self._export()

    def _export(self) -> None:
        now = time.monotonic()
        usable = set(map(id, self.usable()))
        for replica in self.replicas:
            metrics.REPLICA_USABLE.labels(replica.name).set(int(id(replica) in usable))
            if replica.up:
                metrics.REPLICA_LAG.labels(replica.name).set(replica.lag(now))

    async def _primary_lsn(self) -> int:
        pool = self.primary.pool
        if pool is None:
            raise RuntimeError("the primary's pool is not open")
        async with pool.acquire(timeout=self.interval * 4) as connection:
            return parse_lsn(await connection.fetchval(PRIMARY_LSN_SQL))

    async def _check(self, replica: Replica) -> None:
        try:
            async with asyncio.timeout(self.interval * 4):
                in_recovery, replayed = await self._state(replica)
        except Exception as exc:
            self.mark_down(replica.engine, exc)
            return
        now = time.monotonic()
        if not in_recovery or replayed is None:
            if replica.up or replica.failures == 0:
                _log.error("replica %s is not a streaming standby: not used", replica.name)
            replica.up = False
            replica.failures += 1
            return
        if not replica.up:
            _log.info("replica %s is up", replica.name)
        replica.up = True
        replica.failures = 0
        replica.replayed = parse_lsn(replayed)
        replica.behind_since = next(
            (at for at, lsn in self._history if lsn > replica.replayed), None
        )
        replica.checked_at = now

    async def _state(self, replica: Replica) -> tuple[bool, str | None]:
        engine = replica.engine
        if engine.pool is None:
            await engine.start_connection_pool(
                session_reset=bool(engine.settings and engine.settings.db_session_reset)
            )
        assert engine.pool is not None
        async with engine.pool.acquire(timeout=self.interval * 4) as connection:
            row = await connection.fetchrow(REPLICA_STATE_SQL)
        return bool(row[0]), row[1]

    def mark_down(self, engine: Engine, exc: BaseException) -> None:
        """Stop using the replica of ``engine`` until a check succeeds again."""
        for replica in self.replicas:
            if replica.engine is engine:
                if replica.up or replica.failures == 0:
                    _log.warning("replica %s is down: %s", replica.name, str(exc) or type(exc))
                replica.up = False
                replica.failures += 1

    def usable(self, min_lsn: int | None = None) -> list[Replica]:
        now = time.monotonic()
        return [
            replica
            for replica in self.replicas
            if replica.up
            and now - replica.checked_at <= self.max_lag
            and replica.lag(now) <= self.max_lag
            and (min_lsn is None or replica.replayed >= min_lsn)
        ]

    def choose(self, min_lsn: int | None = None) -> Engine | None:
        """A replica's engine for a read (round robin over the usable ones), or None: the
        primary must serve it."""
        candidates = self.usable(min_lsn)
        if not candidates:
            return None
        return candidates[next(self._turn) % len(candidates)].engine

    def cookie_max_age(self) -> int:
        """Seconds after a commit when every usable replica has replayed it anyway: a usable
        replica has replayed what the primary had ``max_lag`` (at the checks' resolution) ago."""
        return math.ceil(self.max_lag + 2 * self.interval)


REPLICAS = Replicas()
