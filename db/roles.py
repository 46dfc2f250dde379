"""The roles taskql runs as, and the one-time bootstrap that creates them.

- ``taskql_owner`` (login): owns the database, the schema objects, runs migrations.
- ``taskql_server`` (NOLOGIN group): every privilege the API needs is granted to it by the
  migrations; it owns nothing and cannot bypass row-level security.
- ``taskql_app`` (login, member of ``taskql_server``): what the API connects as.

Roles are per database. The group is shared by every database of the cluster (migrations
grant to it by name), so it must never hold CONNECT: a login of database A is a member of the
same group as B's, and CONNECT on B would give it B's tables. CONNECT is granted to each
database's own two logins only (and revoked from the group and from PUBLIC), and a login
that already has CONNECT on another database is refused: one login, one database.
- ``taskql_maintenance`` (NOLOGIN, BYPASSRLS): what the owner becomes (``SET ROLE``) for
  cross-tenant maintenance that RLS would otherwise hide: backfills, bulk loads (COPY).
  The server role is not a member, so the API can never become it.

- Monitoring (``taskql db health``): the owner is granted ``pg_monitor`` (every session's
  activity, replication state, statistics), and bootstrap creates the pg_stat_statements
  extension, when the server offers it, in a schema of its own (``monitoring``, usable by
  the owner only; the server role never sees other sessions' statements). Its statistics
  are only collected when the server preloads it (``shared_preload_libraries``).

Login role names are configurable (several databases on one cluster, as in CI); the group
name is fixed because migrations grant to it.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import quote, urlsplit, urlunsplit

import asyncpg

from db.errors import unavailable

_log = logging.getLogger(__name__)

SERVER_GROUP = "taskql_server"
MONITORING_SCHEMA = "monitoring"
MAINTENANCE = "taskql_maintenance"
DEFAULT_OWNER = "taskql_owner"
DEFAULT_SERVER_LOGIN = "taskql_app"
DEFAULT_DATABASE = "taskql"

_IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


@dataclass(frozen=True)
class RoleNames:
    owner: str = DEFAULT_OWNER
    server_login: str = DEFAULT_SERVER_LOGIN

    def __post_init__(self) -> None:
        for name in (self.owner, self.server_login):
            if not _IDENTIFIER.match(name):
                raise ValueError(f"invalid role name {name!r}: use lower-case letters, digits, _")

    @classmethod
    def for_database(cls, database: str) -> RoleNames:
        """The default names of a database's logins: ``taskql_owner``/``taskql_app`` for the
        default database, ``<database>_owner``/``<database>_app`` for any other (scratch,
        test and benchmark databases on the embedded server; CI names its own likewise)."""
        if database == DEFAULT_DATABASE:
            return cls()
        return cls(owner=f"{database}_owner", server_login=f"{database}_app")


class RoleInUse(ValueError):
    """A login role already serves another database."""


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


async def _other_databases(conn: asyncpg.Connection, role: str, database: str) -> list[str]:
    """Databases other than ``database`` on which ``role`` holds CONNECT itself (directly
    granted, or as the owner), not through PUBLIC or a group."""
    rows = await conn.fetch(
        "SELECT d.datname FROM pg_database d, pg_roles r "
        "WHERE r.rolname = $1 AND d.datname <> $2 AND NOT d.datistemplate "
        "AND d.datname <> 'postgres' "
        "AND (d.datdba = r.oid OR EXISTS (SELECT FROM aclexplode(d.datacl) a "
        "     WHERE a.grantee = r.oid AND a.privilege_type = 'CONNECT')) ORDER BY 1",
        role,
        database,
    )
    return [r["datname"] for r in rows]


async def bootstrap(
    admin_dsn: str,
    database: str,
    roles: RoleNames,
    owner_password: str | None = None,
    server_password: str | None = None,
    reclaim: bool = False,
) -> None:
    """Create the roles and the database if missing (idempotent). Needs a superuser URL.

    ``reclaim`` (the embedded developer server only): a login that still has CONNECT on
    another database (one bootstrapped before roles were per database, e.g. an old benchmark
    database) loses it there, with a warning, instead of RoleInUse.

    CONNECT on the database goes to its owner and server login only; it is revoked from
    PUBLIC and from the shared server group (which databases bootstrapped before roles were
    per database had given it). Raises RoleInUse when either login already serves another
    database: two databases sharing a login could read each other."""
    try:
        conn = await asyncpg.connect(admin_dsn, timeout=10)
    except (OSError, TimeoutError, asyncpg.PostgresError) as exc:
        raise unavailable(admin_dsn, exc) from None
    try:
        for role in (roles.owner, roles.server_login):
            others = await _other_databases(conn, role, database)
            if others and reclaim:
                for other in others:
                    _log.warning(
                        "database %s was bootstrapped before roles were per database: %s no "
                        "longer connects to it (drop it, or seed it again, to use it)",
                        other,
                        role,
                    )
                    await _execute_formatted(
                        conn, "REVOKE CONNECT ON DATABASE %I FROM %I", other, role
                    )
            elif others:
                raise RoleInUse(
                    f"role {role} already has CONNECT on database {', '.join(others)}: "
                    f"give database {database} its own login roles (--owner, --server-login)"
                )
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
        await _execute_formatted(conn, "REVOKE ALL ON DATABASE %I FROM %I", database, SERVER_GROUP)
        await _execute_formatted(
            conn,
            "GRANT CONNECT ON DATABASE %I TO %I, %I",
            database,
            roles.server_login,
            roles.owner,
        )
        await _execute_formatted(conn, "GRANT pg_monitor TO %I", roles.owner)
        # The server's statements are planned once per connection, not per execution:
        # PostgreSQL's "auto" mode kept custom plans for the compiled statements, re-planning
        # each (0.7 ms for a page of 10 tasks; 2 ms for the partitioned audit log), and every
        # compiled operation measured cheaper generic (docs/performance.md, 2026-12-02).
        await _execute_formatted(
            conn,
            "ALTER ROLE %I IN DATABASE %I SET plan_cache_mode = 'force_generic_plan'",
            roles.server_login,
            database,
        )
    finally:
        await conn.close()
    await _create_monitoring(database_url(admin_dsn, database), roles.owner)


def database_url(url: str, database: str) -> str:
    """``url`` naming another database (same user, password, host and options)."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + quote(database), parts.query, ""))


async def _create_monitoring(admin_dsn: str, owner: str) -> None:
    """pg_stat_statements in its own schema, for the owner (skipped when the server does not
    ship the extension: ``taskql db health`` then says it is missing)."""
    try:
        conn = await asyncpg.connect(admin_dsn, timeout=10)
    except (OSError, TimeoutError, asyncpg.PostgresError) as exc:
        raise unavailable(admin_dsn, exc) from None
    try:
        if not await conn.fetchval(
            "SELECT 1 FROM pg_available_extensions WHERE name = 'pg_stat_statements'"
        ):
            _log.warning("pg_stat_statements is not available on this server: not created")
            return
        await _execute_formatted(conn, "CREATE SCHEMA IF NOT EXISTS %I", MONITORING_SCHEMA)
        await _execute_formatted(conn, "REVOKE ALL ON SCHEMA %I FROM PUBLIC", MONITORING_SCHEMA)
        await _execute_formatted(conn, "GRANT USAGE ON SCHEMA %I TO %I", MONITORING_SCHEMA, owner)
        await _execute_formatted(
            conn, "CREATE EXTENSION IF NOT EXISTS pg_stat_statements SCHEMA %I", MONITORING_SCHEMA
        )
    finally:
        await conn.close()


async def drop_database(admin_dsn: str, database: str, logins: Sequence[str] = ()) -> None:
    """Drop a database (terminating its sessions) and then each of the named login roles
    (any of them: the owner, the server login, or both). Needs a superuser URL.

    The database's CONNECT grants go with it. Its logins serve no other database (bootstrap
    refuses that), so dropping them cannot cut another database off; DROP ROLE fails, and
    says why, if one still holds privileges elsewhere (a login from before roles were per
    database)."""
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
