"""The one settings object: the database settings plus what the HTTP layer reads."""

from __future__ import annotations

from functools import lru_cache

from pydantic import Field

from db.settings import DatabaseSettings


class Settings(DatabaseSettings):
    """All configuration, from environment variables (names are the field names, upper-case)."""

    taskql_host: str = "127.0.0.1"
    taskql_port: int = Field(default=8000, ge=1, le=65535)
    #: uvicorn worker processes; more than one needs an external DATABASE_URL or shares the
    #: embedded server started by the parent.
    taskql_workers: int = Field(default=1, ge=1)
    #: Load the demo data at start-up (default: only on the embedded server).
    taskql_demo: bool | None = None
    taskql_log_level: str = "info"

    #: Sessions (bearer tokens) expire after this many seconds.
    taskql_session_ttl_seconds: int = Field(default=30 * 24 * 3600, ge=60)
    #: Invitations to an organization expire after this many seconds (default 7 days).
    taskql_invitation_ttl_seconds: int = Field(default=7 * 24 * 3600, ge=60)
    #: Log-in attempts allowed per e-mail / per client address, per window.
    taskql_login_attempts_per_email: int = Field(default=10, ge=1)
    taskql_login_attempts_per_ip: int = Field(default=50, ge=1)
    taskql_login_window_seconds: int = Field(default=300, ge=1)

    #: Limits on every operation.
    taskql_max_body_bytes: int = Field(default=1_000_000, ge=1024)
    taskql_max_depth: int = Field(default=12, ge=2)
    taskql_max_aliases: int = Field(default=30, ge=1)
    taskql_max_tokens: int = Field(default=5000, ge=100)
    #: GitHub-style node limit: the sum over connections of first x the parents' firsts.
    taskql_max_nodes: int = Field(default=20_000, ge=100)
    #: statement_timeout inside a GraphQL operation's transaction.
    taskql_request_statement_timeout_ms: int = Field(default=3000, ge=0)
    #: Report the operation's SQL statement count in the response's `extensions`.
    taskql_sql_stats: bool = False
    #: Answer the queries api.compiler knows with one SQL statement (resolvers otherwise).
    taskql_compiled_queries: bool = True
    #: Garbage collector generation-0 threshold for server processes (Python's default is
    #: 2,000); 0 leaves the collector alone. See docs/performance.md.
    taskql_gc_threshold: int = Field(default=5_000, ge=0)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
