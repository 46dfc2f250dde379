"""Taking locks without taking the site down.

DDL needs strong locks (most ALTER TABLE forms take ACCESS EXCLUSIVE). The danger is not
holding one for a millisecond; it is *waiting* for one behind a long query while every
other query queues behind us. So every DDL statement runs under a short ``lock_timeout``:
if the lock is not granted quickly we give up, let the queue drain, and try again after a
jittered back-off, up to a ceiling on the total wait.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import asyncpg

_log = logging.getLogger("taskql.migrate")

#: Key of the session advisory lock held while migrating ("taskql" in ASCII).
MIGRATION_LOCK_KEY = 0x7461736B716C


@dataclass(frozen=True)
class LockPolicy:
    """How long one attempt may wait for a lock, and how long all attempts together."""

    lock_timeout_ms: int = 1000
    statement_timeout_ms: int = 60_000
    max_total_wait_s: float = 60.0
    base_backoff_s: float = 0.1
    max_backoff_s: float = 5.0


DEFAULT_POLICY = LockPolicy()


class LockNotGranted(Exception):
    """The DDL could not get its lock within the policy's ceiling."""


def _backoff(attempt: int, policy: LockPolicy) -> float:
    """Full jitter: a random wait up to an exponentially growing cap."""
    cap = min(policy.max_backoff_s, policy.base_backoff_s * 2**attempt)
    return random.uniform(policy.base_backoff_s / 2, cap)


async def run_ddl(
    connection: asyncpg.Connection, sql: str, policy: LockPolicy = DEFAULT_POLICY
) -> None:
    """Run ``sql`` under ``lock_timeout``, retrying on lock timeouts (SQLSTATE 55P03).

    Lock: whatever ``sql`` takes, held until the surrounding transaction ends (or, outside
    one, the statement). Each attempt waits at most ``lock_timeout_ms`` for it. Inside a
    transaction each attempt is a savepoint, so a timed-out attempt does not abort the rest.
    """
    in_transaction = connection.is_in_transaction()
    started = time.monotonic()
    attempt = 0
    while True:
        try:
            if in_transaction:
                async with connection.transaction():  # a savepoint
                    await _with_timeouts(connection, sql, policy, local=True)
            else:
                await _with_timeouts(connection, sql, policy, local=False)
            return
        except asyncpg.LockNotAvailableError:
            waited = time.monotonic() - started
            pause = _backoff(attempt, policy)
            if waited + pause > policy.max_total_wait_s:
                raise LockNotGranted(
                    f"gave up after {attempt + 1} attempts ({waited:.1f} s): {sql.strip()[:120]}"
                ) from None
            _log.warning("lock not granted (attempt %d), retrying in %.2f s", attempt + 1, pause)
            await asyncio.sleep(pause)
            attempt += 1


async def _with_timeouts(
    connection: asyncpg.Connection, sql: str, policy: LockPolicy, local: bool
) -> None:
    scope = "LOCAL " if local else ""
    await connection.execute(
        f"SET {scope}lock_timeout = {int(policy.lock_timeout_ms)}; "
        f"SET {scope}statement_timeout = {int(policy.statement_timeout_ms)}"
    )
    try:
        await connection.execute(sql)
    finally:
        if not local and not connection.is_closed():
            with contextlib.suppress(asyncpg.PostgresError):
                await connection.execute("RESET lock_timeout; RESET statement_timeout")


@contextlib.asynccontextmanager
async def migration_lock(
    connection: asyncpg.Connection, wait_s: float = 300.0
) -> AsyncIterator[None]:
    """Hold the session advisory lock that makes migration runners take turns.

    Lock: a session-level advisory lock on MIGRATION_LOCK_KEY, from entry to exit; blocks
    only other runners, never the application.
    """
    deadline = time.monotonic() + wait_s
    while not await connection.fetchval("SELECT pg_try_advisory_lock($1)", MIGRATION_LOCK_KEY):
        if time.monotonic() > deadline:
            raise LockNotGranted("another migration runner holds the migration lock")
        await asyncio.sleep(0.5)
    try:
        yield
    finally:
        await connection.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK_KEY)
