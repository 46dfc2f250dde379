"""Database settings, read from the environment (12-factor).

With neither ``DATABASE_URL`` nor ``MIGRATION_DATABASE_URL`` set, taskql starts an embedded
PostgreSQL in ``TASKQL_DATA_DIR`` and derives both URLs itself (see ``db.embedded``).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

PROJECT_ROOT = Path(__file__).resolve().parent.parent


class DatabaseSettings(BaseSettings):
    """Everything the database layer reads from the environment."""

    model_config = SettingsConfigDict(env_prefix="", extra="ignore", frozen=True)

    #: Server role (owns nothing, NOBYPASSRLS). Unset: embedded PostgreSQL.
    database_url: str | None = None
    #: Owner role, used only to run migrations and maintenance.
    migration_database_url: str | None = None
    #: Where the embedded PostgreSQL keeps its data (git-ignored).
    taskql_data_dir: Path = Field(default=PROJECT_ROOT / ".taskql" / "pgdata")
    #: Database name used on the embedded server.
    taskql_database: str = "taskql"

    db_pool_min_size: int = Field(default=2, ge=0)
    db_pool_max_size: int = Field(default=10, ge=1)
    #: Seconds to wait for a free pooled connection before failing the request.
    db_acquire_timeout: float = Field(default=5.0, gt=0)
    #: Seconds to wait for the TCP connection and PostgreSQL start-up.
    db_connect_timeout: float = Field(default=5.0, gt=0)
    #: Per-statement ceiling: our p95 goal is 100 ms, so a statement over 5 s is a bug.
    db_statement_timeout_ms: int = Field(default=5000, ge=0)
    db_lock_timeout_ms: int = Field(default=2000, ge=0)
    db_idle_in_transaction_timeout_ms: int = Field(default=10000, ge=0)
    db_application_name: str = "taskql"
    #: Deepest task tree: the database refuses deeper (``taskql.max_task_depth``, set on every
    #: server connection from this; migration 18), and the node cost assumes it for
    #: ``Task.ancestors`` (api.cost).
    taskql_max_task_depth: int = Field(default=100, ge=1, le=10_000)
    #: asyncpg's prepared-statement cache; 0 disables it (needed behind PgBouncer < 1.21, which
    #: has no prepared statements in transaction mode). Unset: 100, or 0 with DB_PGBOUNCER.
    db_statement_cache_size: int | None = Field(default=None, ge=0)
    #: DATABASE_URL points at PgBouncer in transaction (or statement) pooling: taskql then
    #: sends no start-up setting PgBouncer would refuse, and sets statement_timeout,
    #: lock_timeout, idle_in_transaction_session_timeout and taskql.max_task_depth in every
    #: transaction instead (transaction-locally). See docs/operations/deploy.md, "PgBouncer".
    db_pgbouncer: bool = False
    #: Reset each API connection's session state when the pool takes it back (asyncpg's
    #: reset query: advisory locks, cursors, LISTENs, RESET ALL; four statements a request).
    #: Off: nothing after a transaction taskql ended cleanly, for everything taskql sets is
    #: transaction-local (db.engine._reset_if_needed); the full reset after anything else.
    db_session_reset: bool = False
    #: Streaming read replicas (one URL, or several separated by commas), as the server role.
    #: Read-only operations of authenticated callers go to one that is up and close enough
    #: (``db.replicas``); mutations, and reads of a client that just wrote, to the primary.
    #: See docs/operations/deploy.md, "Read replicas".
    database_replica_url: str | None = None
    #: A replica that has not replayed what the primary had this many seconds ago is skipped.
    db_replica_max_lag_seconds: float = Field(default=5.0, gt=0)
    #: How often each replica's state (up, replayed LSN) and the primary's LSN are read.
    db_replica_check_interval: float = Field(default=0.5, gt=0)

    @property
    def replica_urls(self) -> tuple[str, ...]:
        return tuple(u.strip() for u in (self.database_replica_url or "").split(",") if u.strip())

    @property
    def statement_cache_size(self) -> int:
        if self.db_statement_cache_size is not None:
            return self.db_statement_cache_size
        return 0 if self.db_pgbouncer else 100

    @property
    def embedded(self) -> bool:
        return self.database_url is None and self.migration_database_url is None


def pool_size_for(database_cores: int, processes: int) -> int:
    """``DB_POOL_MAX_SIZE`` per process so that all of them together keep about two
    connections busy per PostgreSQL core (at least 2 each).

    More active connections than that do not add throughput on a CPU-bound database, they
    add run-queue waits: measured at concurrency 32 on 2 cores (docs/operations/deploy.md,
    "Sizing the pool"), the main query's p95 was 120 ms with 10 connections per worker, 80 ms
    with 4 and 64-66 ms with 2-3, at the same throughput.
    """
    return max(2, -(-2 * max(database_cores, 1) // max(processes, 1)))


@lru_cache(maxsize=1)
def get_database_settings() -> DatabaseSettings:
    return DatabaseSettings()
