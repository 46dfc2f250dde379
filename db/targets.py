"""Which PostgreSQL this process talks to, and as whom.

``DATABASE_URL`` (server role) and ``MIGRATION_DATABASE_URL`` (owner role) name an existing
server; with neither set, the embedded PostgreSQL is started and bootstrapped here.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

from db import embedded, roles
from db.settings import DatabaseSettings, get_database_settings

T = TypeVar("T")


@dataclass(frozen=True)
class Targets:
    #: URL of the server role (what the API connects as); None if only migrating.
    server_dsn: str | None
    #: URL of the owner role (migrations, maintenance); None if only serving.
    owner_dsn: str | None
    #: The embedded server, when one was started.
    embedded: embedded.EmbeddedServer | None = None
    #: Superuser URL: only for the embedded server (tests use it to create scratch databases).
    admin_dsn: str | None = None

    def require_owner(self) -> str:
        if self.owner_dsn is None:
            raise roles_missing("MIGRATION_DATABASE_URL")
        return self.owner_dsn

    def require_server(self) -> str:
        if self.server_dsn is None:
            raise roles_missing("DATABASE_URL")
        return self.server_dsn


def roles_missing(variable: str) -> RuntimeError:
    return RuntimeError(
        f"{variable} is not set: with an external PostgreSQL set both DATABASE_URL (server "
        "role) and MIGRATION_DATABASE_URL (owner role); unset both to use the embedded server"
    )


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine from sync code, even when called inside a running event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


_lock = threading.Lock()
_resolved: Targets | None = None


async def _start_embedded(settings: DatabaseSettings) -> Targets:
    server = await asyncio.to_thread(embedded.start, settings.taskql_data_dir)
    admin = server.dsn(embedded.SUPERUSER, "postgres")
    names = roles.RoleNames.for_database(settings.taskql_database)
    await roles.bootstrap(admin, settings.taskql_database, names, reclaim=True)
    return Targets(
        server_dsn=server.dsn(names.server_login, settings.taskql_database),
        owner_dsn=server.dsn(names.owner, settings.taskql_database),
        embedded=server,
        admin_dsn=admin,
    )


def resolve(settings: DatabaseSettings | None = None) -> Targets:
    """The process's targets; starts the embedded server at most once per process."""
    global _resolved
    settings = settings or get_database_settings()
    with _lock:
        if _resolved is None:
            if settings.embedded:
                _resolved = run_sync(_start_embedded(settings))
            else:
                _resolved = Targets(
                    server_dsn=settings.database_url, owner_dsn=settings.migration_database_url
                )
        return _resolved


async def scratch_database(name: str, settings: DatabaseSettings | None = None) -> Targets:
    """A database for tests and benchmarks: on the embedded server, created afresh (dropped
    first) with the usual roles; with DATABASE_URL/MIGRATION_DATABASE_URL set, those (the
    caller must dedicate that database to the run)."""
    settings = settings or get_database_settings()
    if not settings.embedded:
        if not (settings.database_url and settings.migration_database_url):
            raise roles_missing(
                "DATABASE_URL" if not settings.database_url else "MIGRATION_DATABASE_URL"
            )
        return Targets(server_dsn=settings.database_url, owner_dsn=settings.migration_database_url)
    server = await asyncio.to_thread(embedded.start, settings.taskql_data_dir)
    admin = server.dsn(embedded.SUPERUSER, "postgres")
    names = roles.RoleNames.for_database(name)
    await roles.drop_database(admin, name)
    await roles.bootstrap(admin, name, names)
    return Targets(
        server_dsn=server.dsn(names.server_login, name),
        owner_dsn=server.dsn(names.owner, name),
        embedded=server,
        admin_dsn=admin,
    )
