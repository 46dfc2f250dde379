"""Prometheus metrics of the database layer: the pool, connections, statement failures, and a
scrape-time snapshot of the database itself (up, version, deadlocks, long transactions,
audit partitions ahead, replication lag).

The pool and connection metrics are kept by every process (with several uvicorn workers in
prometheus-client's multiprocess mode: one memory-mapped file per process, summed at
scrape). The database snapshot is taken by the process that answers the scrape, on a
connection of its own (never a pooled one: a saturated pool is when it matters most).
``docs/operations/monitoring.md`` lists every metric and what to do about it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import asyncpg
from prometheus_client import Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

#: False: the pool's acquire is neither timed nor counted (``TASKQL_METRICS=false``).
enabled = True

#: Acquire waits: sub-millisecond when the pool has an idle connection; the acquire timeout
#: (default 5 s) is the last bucket that matters.
ACQUIRE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)

POOL_ACQUIRE_SECONDS = Histogram(
    "taskql_db_pool_acquire_seconds",
    "Time waited for a pooled connection (successful or not).",
    buckets=ACQUIRE_BUCKETS,
)
POOL_ACQUIRE_TIMEOUTS = Counter(
    "taskql_db_pool_acquire_timeouts",
    "Acquires that found no free connection within DB_ACQUIRE_TIMEOUT.",
)
POOL_WAITING = Gauge(
    "taskql_db_pool_waiting",
    "Callers waiting for a pooled connection right now.",
    multiprocess_mode="livesum",
)
POOL_SIZE = Gauge(
    "taskql_db_pool_size",
    "Connections the pools hold open (in use plus idle).",
    multiprocess_mode="livesum",
)
POOL_IN_USE = Gauge(
    "taskql_db_pool_in_use",
    "Pooled connections checked out by a request.",
    multiprocess_mode="livesum",
)
POOL_IDLE = Gauge(
    "taskql_db_pool_idle", "Pooled connections open and free.", multiprocess_mode="livesum"
)
POOL_MAX = Gauge(
    "taskql_db_pool_max_size",
    "The pools' maximum size (DB_POOL_MAX_SIZE per process, summed).",
    multiprocess_mode="livesum",
)
CONNECTIONS_OPENED = Counter(
    "taskql_db_connections_opened", "Connections opened to PostgreSQL (pooled or not)."
)
CONNECTIONS_CLOSED = Counter(
    "taskql_db_connections_closed", "Connections closed by taskql (pool expiry, shutdown)."
)
CONNECTIONS_LOST = Counter(
    "taskql_db_connections_lost",
    "Connections that ended without taskql closing them (server restart, terminated backend, "
    "network, idle-in-transaction timeout).",
)

#: Read replicas as this process's router sees them (``db.replicas``), per replica.
REPLICA_LAG = Gauge(
    "taskql_db_replica_router_lag_seconds",
    "Age of the oldest primary WAL position the replica had not replayed at the last check "
    "(db.replicas; the worst of the processes).",
    ["replica"],
    multiprocess_mode="max",
)
REPLICA_USABLE = Gauge(
    "taskql_db_replica_usable",
    "1 when reads may go to the replica (up, a standby, within DB_REPLICA_MAX_LAG_SECONDS); "
    "0 if any process finds it otherwise.",
    ["replica"],
    multiprocess_mode="min",
)
READS_ROUTED = Counter(
    "taskql_db_reads_routed",
    "Authenticated read-only requests by where their transaction ran: replica, or primary "
    "(none usable, the client's commit not replayed yet, or the replica failed to begin it).",
    ["target"],
)
for _target in ("replica", "primary"):
    READS_ROUTED.labels(_target)

#: SQLSTATEs counted by kind; everything else is ``other``. A bounded label.
ERROR_KINDS = {
    "57014": "statement_timeout",  # query_canceled: told apart from a cancel by its message
    "55P03": "lock_timeout",
    "40P01": "deadlock",
    "40001": "serialization_failure",
    "25P03": "idle_in_transaction_timeout",
    "25P04": "transaction_timeout",
}
STATEMENT_ERRORS = Counter(
    "taskql_db_statement_errors",
    "Statements that failed in PostgreSQL, by kind (statement_timeout, lock_timeout, deadlock, "
    "serialization_failure, idle_in_transaction_timeout, transaction_timeout, canceled, other).",
    ["kind"],
)
for _kind in (*ERROR_KINDS.values(), "canceled", "other"):
    STATEMENT_ERRORS.labels(_kind)


def error_kind(exc: asyncpg.PostgresError) -> str:
    state = getattr(exc, "sqlstate", None) or ""
    kind = ERROR_KINDS.get(state, "other")
    if kind == "statement_timeout" and "statement timeout" not in str(exc):
        return "canceled"  # a cancel request: the client went away
    return kind


def statement_failed(exc: asyncpg.PostgresError) -> None:
    STATEMENT_ERRORS.labels(error_kind(exc)).inc()


def sample_pool(pool: asyncpg.Pool | None) -> None:
    """Copy the pool's state into the gauges (each process, about every second, and at scrape)."""
    if pool is None:
        for gauge in (POOL_SIZE, POOL_IN_USE, POOL_IDLE, POOL_MAX):
            gauge.set(0)
        return
    size, idle = pool.get_size(), pool.get_idle_size()
    POOL_SIZE.set(size)
    POOL_IDLE.set(idle)
    POOL_IN_USE.set(size - idle)
    POOL_MAX.set(pool.get_max_size())


# ------------------------------------------------------------------------- the database


#: Months with an audit partition after the current one, consecutively (a gap ends the
#: count: rows of a missing month go to the default partition). Catalog reads only.
PARTITIONS_AHEAD_SQL = r"""
WITH months AS (
    SELECT make_date(m[1]::int, m[2]::int, 1) AS month
    FROM pg_inherits i
    JOIN pg_class c ON c.oid = i.inhrelid
    CROSS JOIN LATERAL regexp_match(c.relname, '^audit_logs_y(\d{4})m(\d{2})$') AS m
    WHERE i.inhparent = to_regclass('public.audit_logs')
)
SELECT coalesce(min(g.n) - 1, 120) FROM generate_series(1, 121) AS g(n)
WHERE (date_trunc('month', current_date) + make_interval(months => g.n))::date
      NOT IN (SELECT month FROM months WHERE month IS NOT NULL)
"""

SNAPSHOT_SQL = """
SELECT current_setting('server_version') AS version,
       current_setting('server_version_num')::int AS version_num,
       pg_is_in_recovery() AS in_recovery,
       (SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()) AS deadlocks,
       (SELECT xact_rollback FROM pg_stat_database WHERE datname = current_database())
           AS rollbacks,
       (SELECT coalesce(max(extract(epoch FROM now() - xact_start)), 0)
          FROM pg_stat_activity
         WHERE datname = current_database() AND xact_start IS NOT NULL
           AND pid <> pg_backend_pid() AND backend_type = 'client backend') AS oldest_xact,
       (SELECT count(*) FROM pg_stat_activity
         WHERE datname = current_database() AND state = 'idle in transaction') AS idle_in_xact,
       (SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()
           AND backend_type = 'client backend') AS backends,
       current_setting('max_connections')::int AS max_connections,
       CASE WHEN pg_is_in_recovery()
            THEN extract(epoch FROM now() - pg_last_xact_replay_timestamp()) END AS replay_lag
"""

REPLICATION_SQL = """
SELECT coalesce(application_name, '') AS name, extract(epoch FROM replay_lag) AS lag
FROM pg_stat_replication WHERE replay_lag IS NOT NULL
ORDER BY application_name LIMIT 20
"""


@dataclass
class Snapshot:
    """What one look at the database found; ``up`` False when it could not be reached."""

    up: bool
    seconds: float
    version: str = ""
    version_num: int = 0
    in_recovery: bool = False
    deadlocks: int = 0
    rollbacks: int = 0
    oldest_transaction_seconds: float = 0.0
    idle_in_transaction: int = 0
    backends: int = 0
    max_connections: int = 0
    partitions_ahead: int = 0
    replica_lag: dict[str, float] = field(default_factory=dict)
    #: On a replica: seconds since the last replayed transaction.
    replay_lag: float | None = None


async def snapshot(connect: dict[str, Any], within: float = 3.0) -> Snapshot:
    """Look at the database on a connection of its own (``connect``: asyncpg.connect's
    arguments), within ``within`` seconds."""
    started = time.perf_counter()
    try:
        async with asyncio.timeout(within):
            connection = await asyncpg.connect(**{**connect, "timeout": within})
            try:
                row = await connection.fetchrow(SNAPSHOT_SQL)
                ahead = await connection.fetchval(PARTITIONS_AHEAD_SQL)
                replicas = await connection.fetch(REPLICATION_SQL)
            finally:
                await connection.close()
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError):
        return Snapshot(up=False, seconds=time.perf_counter() - started)
    assert row is not None
    return Snapshot(
        up=True,
        seconds=time.perf_counter() - started,
        version=row["version"],
        version_num=row["version_num"],
        in_recovery=row["in_recovery"],
        deadlocks=int(row["deadlocks"] or 0),
        rollbacks=int(row["rollbacks"] or 0),
        oldest_transaction_seconds=float(row["oldest_xact"] or 0),
        idle_in_transaction=int(row["idle_in_xact"] or 0),
        backends=int(row["backends"] or 0),
        max_connections=int(row["max_connections"] or 0),
        partitions_ahead=int(ahead or 0),
        replica_lag={r["name"]: float(r["lag"]) for r in replicas},
        replay_lag=float(row["replay_lag"]) if row["replay_lag"] is not None else None,
    )


class SnapshotCollector(Collector):
    """Renders one Snapshot as metric families (added to the registry of one scrape)."""

    def __init__(self, found: Snapshot) -> None:
        self.found = found

    def collect(self) -> Iterator[Metric]:
        s = self.found
        yield GaugeMetricFamily(
            "taskql_db_up", "1 when PostgreSQL answered the scrape's queries.", value=int(s.up)
        )
        yield GaugeMetricFamily(
            "taskql_db_scrape_seconds", "Time the database snapshot took.", value=s.seconds
        )
        if not s.up:
            return
        info = GaugeMetricFamily(
            "taskql_db_server_version_info", "PostgreSQL's version (value 1).", labels=["version"]
        )
        info.add_metric([s.version], 1)
        yield info
        yield GaugeMetricFamily(
            "taskql_db_server_version_num", "server_version_num, e.g. 180001.", value=s.version_num
        )
        yield GaugeMetricFamily(
            "taskql_db_in_recovery", "1 on a standby (a read replica).", value=int(s.in_recovery)
        )
        yield CounterMetricFamily(
            "taskql_db_deadlocks",
            "Deadlocks PostgreSQL detected in this database (pg_stat_database).",
            value=s.deadlocks,
        )
        yield CounterMetricFamily(
            "taskql_db_transactions_rolled_back",
            "Transactions rolled back in this database (pg_stat_database.xact_rollback).",
            value=s.rollbacks,
        )
        yield GaugeMetricFamily(
            "taskql_db_oldest_transaction_seconds",
            "Age of the oldest open transaction among the sessions this role can see.",
            value=s.oldest_transaction_seconds,
        )
        yield GaugeMetricFamily(
            "taskql_db_idle_in_transaction_sessions",
            "Sessions idle inside a transaction (holding locks and snapshots).",
            value=s.idle_in_transaction,
        )
        yield GaugeMetricFamily(
            "taskql_db_backends", "Client backends connected to this database.", value=s.backends
        )
        yield GaugeMetricFamily(
            "taskql_db_max_connections", "PostgreSQL's max_connections.", value=s.max_connections
        )
        yield GaugeMetricFamily(
            "taskql_db_audit_partitions_ahead",
            "Months after the current one that have an audit_logs partition (consecutive).",
            value=s.partitions_ahead,
        )
        lag = GaugeMetricFamily(
            "taskql_db_replication_lag_seconds",
            "Replay lag of each streaming replica (pg_stat_replication; needs pg_monitor), "
            "or on a replica its own lag behind the primary (replica='self').",
            labels=["replica"],
        )
        for name, seconds in s.replica_lag.items():
            lag.add_metric([name or "unnamed"], seconds)
        if s.replay_lag is not None:
            lag.add_metric(["self"], s.replay_lag)
        yield lag
