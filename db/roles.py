"""The roles taskql runs as, and the one-time bootstrap that creates them.

- ``taskql_owner`` (login): owns the database, the schema objects, runs migrations.
- ``taskql_server`` (NOLOGIN group): every privilege the API needs is granted to it by the
  migrations; it owns nothing and cannot bypass row-level security.
- ``taskql_app`` (login, member of ``taskql_server``): what the API connects as.
- ``taskql_maintenance`` (NOLOGIN, BYPASSRLS): what the owner becomes (``SET ROLE``) for
  cross-tenant maintenance that RLS would otherwise hide: backfills, bulk loads (COPY).
  The server role is not a member, so the API can never become it.

Login role names are configurable (several databases on one cluster, as in CI); the group
name is fixed because migrations grant to it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import quote, urlsplit, urlunsplit

import asyncpg

from db.errors import unavailable

SERVER_GROUP = "taskql_server"
MAINTENANCE = "taskql_maintenance"
DEFAULT_OWNER = "taskql_owner"
DEFAULT_SERVER_LOGIN = "taskql_app"

_IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


@dataclass(frozen=True)
class RoleNames:
    owner: str = DEFAULT_OWNER
    server_login: str = DEFAULT_SERVER_LOGIN

    def __post_init__(self) -> None:
        for name in (self.owner, self.server_login):
            if not _IDENTIFIER.match(name):
                raise ValueError(f"invalid role name {name!r}: use lower-case letters, digits, _")


def role_url(admin_url: str, user: str, password: str | None, database: str) -> str:
    """``admin_url`` with another user, password and database (same host, port, options)."""
    parts = urlsplit(admin_url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    credentials = quote(user, safe="") + (f":{quote(password, safe='')}" if password else "")
    netloc = f"{credentials}@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, "/" + quote(database), parts.query, ""))


async def _exists(conn: asyncpg.Connection, role: str) -> bool:
    return bool(await conn.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", role))


async def _execute_formatted(conn: asyncpg.Connection, template: str, *args: str | None) -> None:
    """Run a utility statement whose identifiers/literals are quoted by PostgreSQL's format()."""
    statement = await conn.fetchval("SELECT format($1, VARIADIC $2::text[])", template, list(args))
    await conn.execute(statement)


async def bootstrap(
    admin_dsn: str,
    database: str,
    roles: RoleNames,
    owner_password: str | None = None,
    server_password: str | None = None,
) -> None:
    """Create the roles and the database if missing (idempotent). Needs a superuser URL."""
    try:
        conn = await asyncpg.connect(admin_dsn, timeout=10)
    except (OSError, TimeoutError, asyncpg.PostgresError) as exc:
        raise unavailable(admin_dsn, exc) from None
    try:
        if not await _exists(conn, SERVER_GROUP):
            await _execute_formatted(
                conn,
                "CREATE ROLE %I NOLOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOBYPASSRLS",
                SERVER_GROUP,
            )
        if not await _exists(conn, MAINTENANCE):
            await _execute_formatted(
                conn,
                "CREATE ROLE %I NOLOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE BYPASSRLS",
                MAINTENANCE,
            )
        if not await _exists(conn, roles.owner):
            await _execute_formatted(
                conn, "CREATE ROLE %I LOGIN NOSUPERUSER NOCREATEROLE NOBYPASSRLS", roles.owner
            )
        if not await _exists(conn, roles.server_login):
            await _execute_formatted(
                conn,
                "CREATE ROLE %I LOGIN INHERIT NOSUPERUSER NOCREATEDB NOCREATEROLE NOBYPASSRLS "
                "NOREPLICATION IN ROLE %I",
                roles.server_login,
                SERVER_GROUP,
            )
        await _execute_formatted(conn, "GRANT %I TO %I", MAINTENANCE, roles.owner)
        if owner_password is not None:
            await _execute_formatted(conn, "ALTER ROLE %I PASSWORD %L", roles.owner, owner_password)
        if server_password is not None:
            await _execute_formatted(
                conn, "ALTER ROLE %I PASSWORD %L", roles.server_login, server_password
            )
        if not await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", database):
            await _execute_formatted(conn, "CREATE DATABASE %I OWNER %I", database, roles.owner)
        await _execute_formatted(conn, "REVOKE ALL ON DATABASE %I FROM PUBLIC", database)
        await _execute_formatted(
            conn, "GRANT CONNECT ON DATABASE %I TO %I, %I", database, SERVER_GROUP, roles.owner
        )
    finally:
        await conn.close()


async def drop_database(admin_dsn: str, database: str, logins: Sequence[str] = ()) -> None:
    """Drop a database (terminating its sessions) and then each of the named login roles
    (any of them: the owner, the server login, or both). Needs a superuser URL."""
    for name in logins:
        if not _IDENTIFIER.match(name):
            raise ValueError(f"invalid role name {name!r}: use lower-case letters, digits, _")
        if name in (SERVER_GROUP, MAINTENANCE):
            raise ValueError(f"{name} is shared by every taskql database: it is never dropped")
    try:
        conn = await asyncpg.connect(admin_dsn, timeout=10)
    except (OSError, TimeoutError, asyncpg.PostgresError) as exc:
        raise unavailable(admin_dsn, exc) from None
    try:
        await conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1", database
        )
        await _execute_formatted(conn, "DROP DATABASE IF EXISTS %I", database)
        for role in logins:
            await _execute_formatted(conn, "DROP ROLE IF EXISTS %I", role)
    finally:
        await conn.close()
