"""The database layer's exceptions: low-level driver errors are mapped to these at one boundary."""

from __future__ import annotations

import asyncio
import socket
from urllib.parse import urlsplit

import asyncpg


class DatabaseError(Exception):
    """Base of every error the database layer raises on purpose."""


class DatabaseUnavailableError(DatabaseError):
    """PostgreSQL cannot be reached or refuses us; the message names the host and the cause."""


class PoolTimeoutError(DatabaseError):
    """No pooled connection became free within the acquire timeout."""


class MigrationStateError(DatabaseError):
    """The database's migration history does not match the migrations in this checkout."""


def describe_target(dsn: str) -> str:
    """``host:port/database`` of a URL, for messages; never the password."""
    parts = urlsplit(dsn)
    host = parts.hostname or ""
    if not host and "host=" in parts.query:
        host = parts.query.split("host=", 1)[1].split("&", 1)[0]
    port = f":{parts.port}" if parts.port else ""
    return f"{host or 'localhost'}{port}{parts.path or '/'}"


def unavailable(dsn: str, exc: BaseException) -> DatabaseUnavailableError:
    """Turn a connection failure into one clear line naming the host and the cause."""
    target = describe_target(dsn)
    if isinstance(exc, socket.gaierror):
        cause = f"host name not resolved ({exc.strerror})"
    elif isinstance(exc, ConnectionRefusedError):
        cause = "connection refused (is PostgreSQL running and listening there?)"
    elif isinstance(exc, (TimeoutError, asyncio.TimeoutError)):
        cause = "timed out while connecting"
    elif isinstance(
        exc, asyncpg.InvalidPasswordError | asyncpg.InvalidAuthorizationSpecificationError
    ):
        cause = f"authentication failed: {exc}"
    elif isinstance(exc, asyncpg.InvalidCatalogNameError):
        cause = f"database does not exist: {exc}"
    elif isinstance(exc, OSError):
        cause = exc.strerror or str(exc)
    else:
        cause = str(exc) or type(exc).__name__
    return DatabaseUnavailableError(f"cannot connect to PostgreSQL at {target}: {cause}")
