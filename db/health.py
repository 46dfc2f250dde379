"""``taskql db health``: one look at the database an operator (or cron) can act on.

Every check reads catalogs and statistics views only (no table scan, no lock beyond
AccessShare on catalogs), on a connection of its own as the owner role (granted
``pg_monitor`` by ``db.roles.bootstrap``, so it sees every session and the replication
state). Each check returns its rows and its findings; a finding is a ``problem`` (the
command exits 1, for cron), a ``warning`` (look at it this week) or a ``notice``.

Checks: pg_stat_statements' top statements by total time, unused and duplicate indexes,
table and index bloat estimates, dead tuples and the last (auto)vacuum, long transactions,
audit partitions present ahead, sequences near exhaustion, replication slots and lag.
``docs/operations/health.md`` says what to do about each finding.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import asyncpg

from db.errors import unavailable
from db.metrics import PARTITIONS_AHEAD_SQL

PROBLEM, WARNING, NOTICE = "problem", "warning", "notice"


@dataclass(frozen=True)
class Limits:
    """Where a finding becomes a problem (the command's options)."""

    long_transaction_seconds: float = 300.0
    partitions_ahead: int = 1
    sequence_used_fraction: float = 0.75
    replication_lag_seconds: float = 60.0
    slot_retained_bytes: int = 1 << 30
    #: Bloat is reported above this many wasted bytes and this fraction of the relation.
    bloat_bytes: int = 64 << 20
    bloat_fraction: float = 0.5
    top: int = 10


@dataclass(frozen=True)
class Finding:
    check: str
    severity: str
    message: str


@dataclass
class Report:
    database: str
    server_version: str
    checked_at: str
    checks: dict[str, dict[str, Any]] = field(default_factory=dict)
    findings: list[Finding] = field(default_factory=list)

    @property
    def problems(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == PROBLEM]

    @property
    def ok(self) -> bool:
        return not self.problems

    def add(self, check: str, severity: str, message: str) -> None:
        self.findings.append(Finding(check, severity, message))

    def as_json(self) -> dict[str, Any]:
        return {
            "database": self.database,
            "server_version": self.server_version,
            "checked_at": self.checked_at,
            "ok": self.ok,
            "problems": [asdict(f) for f in self.problems],
            "findings": [asdict(f) for f in self.findings],
            "checks": self.checks,
        }


def _plain(value: Any) -> Any:
    """A JSON-ready value."""
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, datetime | date):
        return value.isoformat()
    return value


def _rows(records: list[asyncpg.Record]) -> list[dict[str, Any]]:
    return [{k: _plain(v) for k, v in r.items()} for r in records]


def _size(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(n) < 1024 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"


# ------------------------------------------------------------------------- statements

STATEMENTS_SQL = """
SELECT queryid::text AS queryid, calls, round(total_exec_time::numeric, 1) AS total_ms,
       round(mean_exec_time::numeric, 2) AS mean_ms, rows,
       round((100 * total_exec_time / nullif(sum(total_exec_time) OVER (), 0))::numeric, 1)
           AS percent, left(regexp_replace(query, '\\s+', ' ', 'g'), 300) AS query
FROM {schema}.pg_stat_statements
WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
ORDER BY total_exec_time DESC LIMIT $1
"""


async def statements(conn: asyncpg.Connection, report: Report, limits: Limits) -> None:
    schema = await conn.fetchval(
        "SELECT quote_ident(n.nspname) FROM pg_extension e "
        "JOIN pg_namespace n ON n.oid = e.extnamespace WHERE e.extname = 'pg_stat_statements'"
    )
    preload = await conn.fetchval("SELECT current_setting('shared_preload_libraries')")
    loaded = "pg_stat_statements" in [p.strip() for p in preload.split(",")]
    check: dict[str, Any] = {"installed": schema is not None, "loaded": loaded, "rows": []}
    report.checks["statements"] = check
    if schema is None or not loaded:
        missing = []
        if schema is None:
            missing.append("the extension is not created (CREATE EXTENSION pg_stat_statements)")
        if not loaded:
            missing.append("it is not in shared_preload_libraries (needs a restart)")
        report.add(
            "statements",
            NOTICE,
            "pg_stat_statements is missing: " + "; ".join(missing) + " (docs/operations/health.md)",
        )
        return
    check["rows"] = _rows(await conn.fetch(STATEMENTS_SQL.format(schema=schema), limits.top))


# ---------------------------------------------------------------------------- indexes

#: Indexes never scanned since the statistics were reset, not backing a constraint (unique,
#: primary key, exclusion: those work without scans). Partitions' indexes are counted on
#: the partitioned index's behalf, so child indexes are left out.
UNUSED_INDEXES_SQL = """
SELECT s.relname AS table, s.indexrelname AS index, pg_relation_size(s.indexrelid) AS bytes
FROM pg_stat_user_indexes s
JOIN pg_index i ON i.indexrelid = s.indexrelid
WHERE s.idx_scan = 0 AND NOT i.indisunique AND NOT i.indisprimary
  AND NOT EXISTS (SELECT FROM pg_constraint c WHERE c.conindid = s.indexrelid)
  AND NOT EXISTS (SELECT FROM pg_inherits h WHERE h.inhrelid = s.indexrelid)
ORDER BY bytes DESC, 1, 2
"""

#: Two indexes of one table on the same keys, operator classes, expressions and predicate:
#: one of them is pure write cost.
DUPLICATE_INDEXES_SQL = """
SELECT t.relname AS table, array_agg(c.relname::text ORDER BY c.relname) AS indexes,
       sum(pg_relation_size(c.oid)) AS bytes
FROM pg_index i
JOIN pg_class c ON c.oid = i.indexrelid
JOIN pg_class t ON t.oid = i.indrelid
JOIN pg_namespace n ON n.oid = t.relnamespace
WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname !~ '^pg_toast'
GROUP BY t.relname, i.indrelid, i.indkey::text, i.indclass::text, i.indcollation::text,
         coalesce(pg_get_expr(i.indexprs, i.indrelid), ''),
         coalesce(pg_get_expr(i.indpred, i.indrelid), ''), c.relam
HAVING count(*) > 1
ORDER BY 1
"""

STATS_RESET_SQL = "SELECT stats_reset FROM pg_stat_database WHERE datname = current_database()"


async def indexes(conn: asyncpg.Connection, report: Report, limits: Limits) -> None:
    unused = _rows(await conn.fetch(UNUSED_INDEXES_SQL))
    since = await conn.fetchval(STATS_RESET_SQL)
    report.checks["unused_indexes"] = {"since": _plain(since), "rows": unused}
    if unused:
        total = sum(r["bytes"] for r in unused)
        report.add(
            "unused_indexes",
            NOTICE,
            f"{len(unused)} index(es) never scanned since "
            f"{since.isoformat() if since else 'the cluster started'} ({_size(total)}): "
            "judge them after a representative period, on the primary and every replica",
        )
    duplicates = _rows(await conn.fetch(DUPLICATE_INDEXES_SQL))
    report.checks["duplicate_indexes"] = {"rows": duplicates}
    for row in duplicates:
        report.add(
            "duplicate_indexes",
            PROBLEM,
            f"{row['table']}: indexes {', '.join(row['indexes'])} are identical; drop all but one",
        )


# ------------------------------------------------------------------------------ bloat

#: Estimates from the planner's statistics (pg_class, pg_stats), not a scan: the expected
#: size of the live rows (tuple header, null bitmap and average row width, packed to the
#: fill factor) against the pages the relation holds. Accurate to tens of percent; the
#: pgstattuple extension measures exactly, at the cost of reading the relation.
TABLE_BLOAT_SQL = """
WITH t AS (
    SELECT c.oid, c.relname, c.relpages::bigint AS pages, greatest(c.reltuples, 0) AS tuples,
           current_setting('block_size')::int AS bs,
           coalesce((SELECT (regexp_match(o, 'fillfactor=(\\d+)'))[1]::int
                     FROM unnest(c.reloptions) o WHERE o LIKE 'fillfactor=%'), 100) AS ff,
           (SELECT 24 + 8 + coalesce(sum((1 - s.null_frac) * s.avg_width), 0)
              FROM pg_stats s WHERE s.schemaname = n.nspname AND s.tablename = c.relname)
               AS width
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE n.nspname = 'public' AND c.relkind IN ('r', 'm') AND c.relpages > 0
)
SELECT relname AS table, pages * bs AS bytes,
       greatest(pages - ceil(tuples * width / ((bs - 24) * ff / 100.0)), 0)::bigint * bs
           AS wasted_bytes
FROM t ORDER BY wasted_bytes DESC, 1 LIMIT $1
"""

#: B-tree indexes: entries of (8-byte index tuple header + 6-byte heap pointer, rounded) plus
#: the keys' average widths, packed at the default fill factor of 90 %.
INDEX_BLOAT_SQL = """
WITH i AS (
    SELECT ic.relname AS index, tc.relname AS table, ic.relpages::bigint AS pages,
           greatest(ic.reltuples, 0) AS tuples, current_setting('block_size')::int AS bs,
           16 + (SELECT coalesce(sum(coalesce(s.avg_width, nullif(a.attlen, -1), 32)), 0)
                   FROM pg_attribute a
                   LEFT JOIN pg_stats s ON s.schemaname = n.nspname AND s.tablename = tc.relname
                                        AND s.attname = a.attname
                  WHERE a.attrelid = ic.oid AND a.attnum > 0) AS width
    FROM pg_index x
    JOIN pg_class ic ON ic.oid = x.indexrelid
    JOIN pg_class tc ON tc.oid = x.indrelid
    JOIN pg_namespace n ON n.oid = tc.relnamespace
    JOIN pg_am am ON am.oid = ic.relam AND am.amname = 'btree'
    WHERE n.nspname = 'public' AND ic.relpages > 1
)
SELECT "table", index, pages * bs AS bytes,
       greatest(pages - 1 - ceil(tuples * width / ((bs - 24 - 16) * 0.9)), 0)::bigint * bs
           AS wasted_bytes
FROM i ORDER BY wasted_bytes DESC, 2 LIMIT $1
"""


async def bloat(conn: asyncpg.Connection, report: Report, limits: Limits) -> None:
    for check, sql, name in (
        ("table_bloat", TABLE_BLOAT_SQL, "table"),
        ("index_bloat", INDEX_BLOAT_SQL, "index"),
    ):
        rows = _rows(await conn.fetch(sql, limits.top))
        report.checks[check] = {"estimate": True, "rows": rows}
        for row in rows:
            wasted, size = row["wasted_bytes"], row["bytes"]
            if wasted >= limits.bloat_bytes and wasted >= limits.bloat_fraction * size:
                report.add(
                    check,
                    WARNING,
                    f"{name} {row[name]}: about {_size(wasted)} of {_size(size)} is free space "
                    f"(estimate); {'pg_repack or VACUUM FULL' if name == 'table' else 'REINDEX INDEX CONCURRENTLY'}"
                    " in a quiet hour",
                )


# ----------------------------------------------------------------------------- vacuum

#: Dead tuples against the threshold autovacuum would vacuum at; twice over it means
#: autovacuum is not keeping up (blocked by a long transaction, or throttled).
VACUUM_SQL = """
SELECT s.relname AS table, s.n_live_tup AS live, s.n_dead_tup AS dead,
       (current_setting('autovacuum_vacuum_threshold')::float
        + current_setting('autovacuum_vacuum_scale_factor')::float * greatest(c.reltuples, 0)
       )::bigint AS autovacuum_at,
       s.last_autovacuum, s.last_vacuum, s.last_autoanalyze, s.autovacuum_count
FROM pg_stat_user_tables s JOIN pg_class c ON c.oid = s.relid
WHERE s.schemaname = 'public'
ORDER BY s.n_dead_tup DESC, 1
"""


async def vacuum(conn: asyncpg.Connection, report: Report, limits: Limits) -> None:
    rows = _rows(await conn.fetch(VACUUM_SQL))
    report.checks["dead_tuples"] = {"rows": rows}
    for row in rows:
        if row["dead"] > 1000 and row["dead"] > 2 * row["autovacuum_at"]:
            report.add(
                "dead_tuples",
                WARNING,
                f"table {row['table']}: {row['dead']:,} dead tuples, over twice autovacuum's "
                f"threshold ({row['autovacuum_at']:,}); last autovacuum "
                f"{row['last_autovacuum'] or 'never'}: look for a long transaction",
            )


# ----------------------------------------------------------------------- transactions

LONG_TRANSACTIONS_SQL = """
SELECT pid, usename AS role, application_name, state,
       round(extract(epoch FROM now() - xact_start)::numeric, 1) AS seconds,
       left(regexp_replace(query, '\\s+', ' ', 'g'), 200) AS query
FROM pg_stat_activity
WHERE datname = current_database() AND xact_start IS NOT NULL AND pid <> pg_backend_pid()
  AND backend_type = 'client backend' AND now() - xact_start > make_interval(secs => $1)
ORDER BY xact_start
"""


async def transactions(conn: asyncpg.Connection, report: Report, limits: Limits) -> None:
    rows = _rows(await conn.fetch(LONG_TRANSACTIONS_SQL, limits.long_transaction_seconds))
    report.checks["long_transactions"] = {
        "over_seconds": limits.long_transaction_seconds,
        "rows": rows,
    }
    for row in rows:
        report.add(
            "long_transactions",
            PROBLEM,
            f"pid {row['pid']} ({row['role']}, {row['state']}) has been in a transaction for "
            f"{row['seconds']} s: it holds back vacuum and may hold locks; "
            f"SELECT pg_terminate_backend({row['pid']}) if it is stuck",
        )


# ------------------------------------------------------------------------- partitions

PARTITIONS_SQL = r"""
SELECT c.relname AS partition, pg_get_expr(c.relpartbound, c.oid) AS bounds,
       c.reltuples::bigint AS rows_estimate
FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
WHERE i.inhparent = to_regclass('public.audit_logs')
ORDER BY c.relname
"""


async def partitions(conn: asyncpg.Connection, report: Report, limits: Limits) -> None:
    if await conn.fetchval("SELECT to_regclass('public.audit_logs')") is None:
        report.checks["audit_partitions"] = {"ahead": 0, "rows": []}
        report.add("audit_partitions", PROBLEM, "audit_logs does not exist: not migrated")
        return
    ahead = int(await conn.fetchval(PARTITIONS_AHEAD_SQL))
    rows = _rows(await conn.fetch(PARTITIONS_SQL))
    report.checks["audit_partitions"] = {"ahead": ahead, "rows": rows}
    if ahead < limits.partitions_ahead:
        report.add(
            "audit_partitions",
            PROBLEM,
            f"audit_logs has {ahead} month(s) of partitions ahead (wanted "
            f"{limits.partitions_ahead}): next month's partition is missing, its rows would go "
            "to audit_logs_default; run `taskql db maintain`",
        )
    in_default = (
        await conn.fetchval(
            "SELECT count(*) FROM (SELECT 1 FROM public.audit_logs_default LIMIT 1) d"
        )
        if await conn.fetchval("SELECT to_regclass('public.audit_logs_default')")
        else 0
    )
    if in_default:
        report.add(
            "audit_partitions",
            WARNING,
            "audit_logs_default holds rows: a month had no partition when they were written",
        )


# -------------------------------------------------------------------------- sequences

SEQUENCES_SQL = """
SELECT schemaname || '.' || sequencename AS sequence, data_type::text AS type,
       last_value, max_value,
       round((coalesce(last_value, start_value)::numeric - min_value)
             / nullif(max_value::numeric - min_value, 0), 6) AS used
FROM pg_sequences
WHERE schemaname NOT IN ('pg_catalog', 'information_schema') AND increment_by > 0
ORDER BY used DESC NULLS LAST, 1
"""


async def sequences(conn: asyncpg.Connection, report: Report, limits: Limits) -> None:
    rows = _rows(await conn.fetch(SEQUENCES_SQL))
    report.checks["sequences"] = {"rows": rows}
    for row in rows:
        if row["used"] is not None and row["used"] >= limits.sequence_used_fraction:
            report.add(
                "sequences",
                PROBLEM,
                f"sequence {row['sequence']} ({row['type']}) has used {row['used']:.0%} of its "
                "range: widen it (ALTER SEQUENCE … AS bigint, and the column) before it runs out",
            )


# ------------------------------------------------------------------------ replication

SLOTS_SQL = """
SELECT slot_name AS slot, slot_type AS type, active, wal_status,
       CASE WHEN pg_is_in_recovery() THEN NULL
            ELSE pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::bigint END
           AS retained_bytes
FROM pg_replication_slots ORDER BY 1
"""

REPLICAS_SQL = """
SELECT application_name AS replica, client_addr::text AS address, state,
       extract(epoch FROM replay_lag)::float AS replay_lag_seconds,
       pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn)::bigint AS replay_lag_bytes
FROM pg_stat_replication ORDER BY 1
"""


async def replication(conn: asyncpg.Connection, report: Report, limits: Limits) -> None:
    in_recovery = bool(await conn.fetchval("SELECT pg_is_in_recovery()"))
    slots = _rows(await conn.fetch(SLOTS_SQL))
    replicas = [] if in_recovery else _rows(await conn.fetch(REPLICAS_SQL))
    own_lag = (
        await conn.fetchval(
            "SELECT extract(epoch FROM now() - pg_last_xact_replay_timestamp())::float"
        )
        if in_recovery
        else None
    )
    report.checks["replication"] = {
        "in_recovery": in_recovery,
        "replay_lag_seconds": own_lag,
        "slots": slots,
        "replicas": replicas,
    }
    for slot in slots:
        retained = slot["retained_bytes"] or 0
        if not slot["active"] or slot["wal_status"] in ("unreserved", "lost"):
            report.add(
                "replication",
                PROBLEM,
                f"replication slot {slot['slot']} is "
                f"{'inactive' if not slot['active'] else slot['wal_status']}, retaining "
                f"{_size(retained)} of WAL: reconnect its consumer or pg_drop_replication_slot",
            )
        elif retained > limits.slot_retained_bytes:
            report.add(
                "replication",
                PROBLEM,
                f"replication slot {slot['slot']} retains {_size(retained)} of WAL",
            )
    for replica in replicas:
        lag = replica["replay_lag_seconds"]
        if lag is not None and lag > limits.replication_lag_seconds:
            report.add(
                "replication",
                PROBLEM,
                f"replica {replica['replica'] or replica['address']} replays {lag:.0f} s behind",
            )
    if own_lag is not None and own_lag > limits.replication_lag_seconds:
        report.add(
            "replication",
            WARNING,
            f"this standby's last replayed transaction is {own_lag:.0f} s old "
            "(no writes on the primary, or replication is stuck)",
        )


CHECKS = (statements, indexes, bloat, vacuum, transactions, partitions, sequences, replication)


async def check(dsn: str, limits: Limits | None = None) -> Report:
    """Run every check on ``dsn`` (the owner's URL)."""
    limits = limits or Limits()
    try:
        conn = await asyncpg.connect(dsn, timeout=10)
    except (OSError, TimeoutError, asyncpg.PostgresError) as exc:
        raise unavailable(dsn, exc) from None
    try:
        await conn.execute("SET statement_timeout = '30s'; SET lock_timeout = '1s'")
        row = await conn.fetchrow(
            "SELECT current_database() AS db, current_setting('server_version') AS version"
        )
        assert row is not None
        report = Report(row["db"], row["version"], datetime.now(UTC).isoformat(timespec="seconds"))
        for run in CHECKS:
            await run(conn, report, limits)
        return report
    finally:
        await conn.close()


def render_json(report: Report) -> str:
    return json.dumps(report.as_json(), indent=2, default=str)


def render(report: Report, console: Any) -> None:
    """The human-readable report, on a rich Console."""
    from rich.markup import escape
    from rich.table import Table

    def table(title: str, rows: list[dict[str, Any]], columns: list[str]) -> None:
        if not rows:
            console.print(f"[bold]{title}[/bold]: none")
            return
        t = Table(title=title, title_justify="left", title_style="bold")
        for column in columns:
            t.add_column(column, overflow="fold")
        for row in rows:
            t.add_row(*(_cell(row.get(c)) for c in columns))
        console.print(t)

    c = report.checks
    console.print(
        f"[bold]taskql db health[/bold]: {report.database} on PostgreSQL "
        f"{report.server_version}, {report.checked_at}"
    )
    if c["statements"]["rows"]:
        table(
            "Top statements by total time (pg_stat_statements)",
            c["statements"]["rows"],
            ["calls", "total_ms", "mean_ms", "percent", "query"],
        )
    table(
        "Long transactions",
        c["long_transactions"]["rows"],
        ["pid", "role", "state", "seconds", "query"],
    )
    table("Duplicate indexes", c["duplicate_indexes"]["rows"], ["table", "indexes", "bytes"])
    table("Unused indexes", c["unused_indexes"]["rows"][:20], ["table", "index", "bytes"])
    table("Table bloat (estimate)", c["table_bloat"]["rows"], ["table", "bytes", "wasted_bytes"])
    table(
        "Index bloat (estimate)",
        c["index_bloat"]["rows"],
        ["index", "table", "bytes", "wasted_bytes"],
    )
    table(
        "Dead tuples and vacuum",
        c["dead_tuples"]["rows"][:10],
        ["table", "live", "dead", "autovacuum_at", "last_autovacuum"],
    )
    console.print(f"[bold]Audit partitions ahead[/bold]: {c['audit_partitions']['ahead']} month(s)")
    table("Sequences", c["sequences"]["rows"][:10], ["sequence", "type", "last_value", "used"])
    repl = c["replication"]
    table(
        "Replication slots",
        repl["slots"],
        ["slot", "type", "active", "wal_status", "retained_bytes"],
    )
    table(
        "Replicas", repl["replicas"], ["replica", "state", "replay_lag_seconds", "replay_lag_bytes"]
    )
    colours = {PROBLEM: "red", WARNING: "yellow", NOTICE: "cyan"}
    for finding in report.findings:
        colour = colours[finding.severity]
        console.print(
            f"[{colour}]{finding.severity.upper():8}[/{colour}] {finding.check}: "
            + escape(finding.message),
            highlight=False,
        )
    if report.ok:
        console.print("[green]healthy[/green]: no problem found")
    else:
        console.print(f"[red]{len(report.problems)} problem(s)[/red]")


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, list):
        return ", ".join(map(str, value))
    return str(value)
