"""Search: a finer sample for large tenants, 1/256 of their tasks in a small partial index.

``search_hits`` (migrations 12 and 14) reads bucket 0 of the tenant's GIN keys first: the
tasks whose id ends in ``0``, a sixteenth of the tenant. When that sample holds 100 matches
or more it is what gets ranked (at most 500 rows). A GIN scan is a bitmap scan: it reads the
sample's whole posting lists before the first row, however few rows the LIMIT then takes.
The sixteenth of a tenant grows with the tenant: on the 10M-task dataset (2026-12-03; the
largest tenant holds 2.48M tasks) "billing export" has some 150,000 matches in bucket 0 and
the search spent 3.3-3.7 ms of PostgreSQL per request, most of it building that bitmap, to
rank 500 of them; on the 1M-task dataset the same search took about 2 ms.

Here a partial GIN index over the same expression holds only the tasks whose id ends in
``00`` (1/256 of every tenant: the last byte of a UUIDv7 is random), and the search tries
that sample first:

1. The 1/256 sample (this index): 100 matches or more -> rank them (at most 500).
2. Otherwise bucket 0 as before (1/16, the full index): 100 or more -> rank them.
3. Otherwise every bucket (sixteen scans), every match a candidate.

A later level starts only when the earlier found fewer than 100 (one-time filters: its scan
never starts otherwise), so a rare word costs one more, small, index scan than before. The
ranked rows stay a uniform sample of the tenant's matches; at step 1 a large tenant's sample
is also spread over the whole table, where step 2's LIMIT 500 took the first 500 rows in
heap order (its oldest tasks) once the sixteenth held more than 500.

Measured on that dataset (2026-12-04, the largest tenant, "billing export", median of 100
calls): 3.89 ms -> 0.86 ms; the finer sample holds 114 matches (bucket 0: 1,833, of which
500 were ranked), the index scan reads 7 buffers instead of 23 and the heap 114 blocks
instead of 497. The index took 5.9 s to build there. 100 candidates is the rule bucket 0
already had (a tenant with 1,600 to 8,000 matches ranks 100 to 500 of them): the finer
sample keeps it, it does not lower it.

The index is a 1/256 of the full one (built concurrently: writes go on). Its keys are those
of bucket 0 (every id ending in ``00`` ends in ``0``), so the query is the same ``q0``.
"""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager

from db.migrate.toolkit import CreateIndex, RawSql, toolkit_migration
from piccolo_migrations.taskql_2026_11_24t09_00_14_000000 import SEARCH_V4

ID = "2026-11-24T09:00:29:000000"
VERSION = "1.38.0"
DESCRIPTION = "search: a 1/256 sample of each tenant in a partial GIN index, read first"

#: The partial index's predicate, written the same way in the query (the planner proves the
#: index applies by matching this expression).
FINE = "pg_catalog.right(t.id::text, 2) = '00'"

_SAMPLE_V4 = """    -- Bucket 0 of the tenant's keys: a sixteenth of its matches (see migration 12).
    sample_hits AS MATERIALIZED (
        SELECT 'task'::text AS kind, t.id, ts_rank_cd(t.search_vector, query.q) AS rank
        FROM tasks AS t, query, tenant
        WHERE search_lexemes(t.organization_id, t.id, t.search_vector)
              @@ query.q0
          AND t.search_vector @@ query.q
          AND t.organization_id IS NOT DISTINCT FROM tenant.id  -- on the rows, not the index
        LIMIT 500
    ),
    word_hits AS MATERIALIZED (
        SELECT * FROM sample_hits WHERE (SELECT count(*) FROM sample_hits) >= 100
        UNION ALL
        -- Fewer than 100 in the sample: every bucket (a one-time filter: the scan never
        -- starts otherwise).
        (SELECT 'task', t.id, ts_rank_cd(t.search_vector, query.q)
         FROM tasks AS t, query, tenant
         WHERE (SELECT count(*) FROM sample_hits) < 100
"""

_SAMPLE_V5 = f"""    -- 1/256 of the tenant's tasks (ids ending in 00), in the partial index of migration 29.
    fine_hits AS MATERIALIZED (
        SELECT 'task'::text AS kind, t.id, ts_rank_cd(t.search_vector, query.q) AS rank
        FROM tasks AS t, query, tenant
        WHERE search_lexemes(t.organization_id, t.id, t.search_vector)
              @@ query.q0
          AND {FINE}
          AND t.search_vector @@ query.q
          AND t.organization_id IS NOT DISTINCT FROM tenant.id  -- on the rows, not the index
        LIMIT 500
    ),
    -- Bucket 0 of the tenant's keys: a sixteenth of its matches (see migration 12), read
    -- when the finer sample found fewer than 100.
    sample_hits AS MATERIALIZED (
        SELECT 'task'::text AS kind, t.id, ts_rank_cd(t.search_vector, query.q) AS rank
        FROM tasks AS t, query, tenant
        WHERE (SELECT count(*) FROM fine_hits) < 100
          AND search_lexemes(t.organization_id, t.id, t.search_vector)
              @@ query.q0
          AND t.search_vector @@ query.q
          AND t.organization_id IS NOT DISTINCT FROM tenant.id  -- on the rows, not the index
        LIMIT 500
    ),
    word_hits AS MATERIALIZED (
        SELECT * FROM fine_hits WHERE (SELECT count(*) FROM fine_hits) >= 100
        UNION ALL
        SELECT * FROM sample_hits WHERE (SELECT count(*) FROM sample_hits) >= 100
        UNION ALL
        -- Fewer than 100 in both samples: every bucket (one-time filters: the scan never
        -- starts otherwise).
        (SELECT 'task', t.id, ts_rank_cd(t.search_vector, query.q)
         FROM tasks AS t, query, tenant
         WHERE (SELECT count(*) FROM fine_hits) < 100
           AND (SELECT count(*) FROM sample_hits) < 100
"""

assert _SAMPLE_V4 in SEARCH_V4, "migration 14's search_hits changed: update the replacement"
SEARCH_V5 = SEARCH_V4.replace(_SAMPLE_V4, _SAMPLE_V5)

STEPS = [
    CreateIndex(
        "tasks_tenant_lexemes_sample_idx",
        "tasks",
        "USING gin (search_lexemes(organization_id, id, search_vector)) "
        f"WHERE {FINE.replace('t.id', 'id')}",
    ),
    RawSql(SEARCH_V5, SEARCH_V4),
]


async def forwards() -> MigrationManager:
    return toolkit_migration(ID, DESCRIPTION, STEPS)
