"""Every path that migrates holds the migration advisory lock.

``taskql migrate forwards/backwards`` call Piccolo's runners; ``piccolo migrations forwards
/ backwards`` (pipelines that expect Piccolo's own command) call the same runners through
Piccolo's CLI. Both go through ``ForwardsMigrationManager.run`` and
``BackwardsMigrationManager.run``, which first create Piccolo's ``migration`` table and then
read which migrations ran: ``install()`` wraps those two methods so that the lock is taken
before either, on a connection of its own. ``piccolo_conf`` (imported by Piccolo's CLI
before it runs a command) and ``db.migrate.runner`` install it.

Without it, two concurrent ``piccolo migrations forwards all`` both found every migration
pending, and one failed on ``extension "pg_trgm" already exists``.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import AsyncIterator, Awaitable, Callable
from contextvars import ContextVar
from typing import Any

from db.engine import DB
from db.migrate.locks import migration_lock

#: True in the task that holds the lock: a runner called inside another does not wait for
#: itself (``run_forwards("all")`` runs one manager per app).
_holding: ContextVar[bool] = ContextVar("taskql_migration_lock_held", default=False)
_WRAPPED = "__taskql_migration_lock__"


@contextlib.asynccontextmanager
async def holding_migration_lock() -> AsyncIterator[None]:
    """The migration advisory lock, held on a connection of its own (the engine's role:
    the owner when migrating), unless this task already holds it."""
    if _holding.get():
        yield
        return
    connection = await DB.get_new_connection()
    try:
        async with migration_lock(connection):
            token = _holding.set(True)
            try:
                yield
            finally:
                _holding.reset(token)
    finally:
        await connection.close()


def _locked(run: Callable[[Any], Awaitable[Any]]) -> Callable[[Any], Awaitable[Any]]:
    @functools.wraps(run)
    async def locked_run(self: Any) -> Any:
        async with holding_migration_lock():
            return await run(self)

    setattr(locked_run, _WRAPPED, True)
    return locked_run


def install() -> None:
    """Make Piccolo's forwards and backwards runners take the lock (idempotent)."""
    from piccolo.apps.migrations.commands.backwards import BackwardsMigrationManager
    from piccolo.apps.migrations.commands.forwards import ForwardsMigrationManager

    for manager in (ForwardsMigrationManager, BackwardsMigrationManager):
        if not getattr(manager.run, _WRAPPED, False):
            manager.run = _locked(manager.run)  # type: ignore[method-assign,assignment]
