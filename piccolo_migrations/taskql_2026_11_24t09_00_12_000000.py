"""Search: GIN keys per tenant, sample bucket and word, so a search reads only what it ranks.

With the tenant-leading index of migration 9 (btree_gin: ``organization_id, search_vector``),
the tenant and each word are separate GIN keys: a search intersects the word's posting list
over EVERY tenant with the tenant's own (250,000 entries for the largest). 13.6 ms of index
scan for "billing export" on the seeded dataset, however few rows it then ranks.

Here every lexeme of the index is prefixed with its tenant and the task's sample bucket (the
last hex digit of its id, random in a UUIDv7): ``<organization id>/<0-f>/bill``, and the
search's query gets the same prefix. A search reads bucket 0 first: a sixteenth of the
tenant's matches, an unbiased sample. When that sample has at least 100 matches (the words
are in some 1,600 of the tenant's tasks or more), it is what gets ranked (at most 500);
otherwise every bucket is read (one scan, the query OR'ed over the 16 prefixes), and every
match is a candidate as before. "billing export" on the largest tenant (2,897 matches):
index scan 13.6 ms -> 0.3 ms, the whole search 18 -> about 2 ms.

Positions and weights are kept in the index, and every candidate is also checked with the
plain ``search_vector @@ query`` (and its tenant) on the row: the query language means
exactly what it means on ``search_vector`` (a negation matches keys of other buckets, so
that check is what makes it exact). The tenant check is written so that it is not an index
condition (the planner otherwise ANDs the bitmap with a scan of the tenant's whole trigram
posting list).

Built concurrently; the old index is dropped concurrently once the search uses the new one.
"""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager

from db.migrate.toolkit import CreateIndex, DropIndex, RawSql, toolkit_migration
from piccolo_migrations.taskql_2026_11_24t09_00_11_000000 import FORWARDS as SEARCH_V2

ID = "2026-11-24T09:00:12:000000"
VERSION = "1.38.0"
DESCRIPTION = (
    "search: lexemes keyed by tenant and sample bucket (concurrently); search_hits uses them"
)

# A lexeme in the text form of a tsvector or tsquery: quoted, a quote doubled inside.
_LEXEME = r"""$r$'((?:[^']|'')*)'$r$"""

HELPERS = rf"""
CREATE FUNCTION search_lexemes(organization_id uuid, id uuid, lexemes tsvector) RETURNS tsvector
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
RETURN pg_catalog.regexp_replace(
    lexemes::text, {_LEXEME},
    '''' || organization_id::text || '/' || pg_catalog.right(id::text, 1) || '/\1''', 'g'
)::tsvector;

CREATE FUNCTION search_tsquery(organization_id uuid, bucket text, query tsquery) RETURNS tsquery
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
RETURN pg_catalog.regexp_replace(
    query::text, {_LEXEME}, '''' || organization_id::text || '/' || bucket || '/\1''', 'g'
)::tsquery;

CREATE FUNCTION search_tsquery_all(organization_id uuid, query tsquery) RETURNS tsquery
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
RETURN CASE WHEN pg_catalog.numnode(query) = 0 THEN query ELSE (
    SELECT pg_catalog.string_agg('(' || search_tsquery(organization_id, b, query)::text || ')', ' | ')
    FROM pg_catalog.unnest(pg_catalog.string_to_array('0123456789abcdef', NULL)) AS b
)::tsquery END;

COMMENT ON FUNCTION search_lexemes(uuid, uuid, tsvector) IS
    'A task''s search lexemes prefixed with its tenant and sample bucket: GIN keys per tenant.';
COMMENT ON FUNCTION search_tsquery(uuid, text, tsquery) IS
    'A tsquery with the prefix search_lexemes() gives one bucket of a tenant.';
COMMENT ON FUNCTION search_tsquery_all(uuid, tsquery) IS
    'A tsquery matching search_lexemes() of every bucket of a tenant.';
GRANT EXECUTE ON FUNCTION search_lexemes(uuid, uuid, tsvector) TO taskql_server, taskql_maintenance;
GRANT EXECUTE ON FUNCTION search_tsquery(uuid, text, tsquery) TO taskql_server, taskql_maintenance;
GRANT EXECUTE ON FUNCTION search_tsquery_all(uuid, tsquery) TO taskql_server, taskql_maintenance;
"""

DROP_HELPERS = """
DROP FUNCTION search_tsquery_all(uuid, tsquery);
DROP FUNCTION search_tsquery(uuid, text, tsquery);
DROP FUNCTION search_lexemes(uuid, uuid, tsvector);
"""

_WORD_HITS_V2 = """    word_hits AS MATERIALIZED (
        SELECT 'task'::text AS kind, t.id, ts_rank_cd(t.search_vector, query.q) AS rank
        FROM tasks AS t, query, tenant
        WHERE t.search_vector @@ query.q AND t.organization_id = tenant.id
        LIMIT 500
    ),"""

_WORD_HITS_V3 = """    -- Bucket 0 of the tenant's keys: a sixteenth of its matches (see migration 12).
    sample_hits AS MATERIALIZED (
        SELECT 'task'::text AS kind, t.id, ts_rank_cd(t.search_vector, query.q) AS rank
        FROM tasks AS t, query, tenant
        WHERE search_lexemes(t.organization_id, t.id, t.search_vector)
              @@ query.sample_q
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
           AND search_lexemes(t.organization_id, t.id, t.search_vector)
               @@ query.all_q
           AND t.search_vector @@ query.q
           AND t.organization_id IS NOT DISTINCT FROM tenant.id
         LIMIT 500)
    ),"""

_QUERY_V2 = """    query AS (SELECT websearch_to_tsquery('english', words) AS q),"""

# The prefixed queries are computed once here: written inline, a phrase's recheck would
# compute them again for every candidate row (280 ms instead of 35 for a common phrase).
_QUERY_V3 = """    query AS MATERIALIZED (
        SELECT w.q, search_tsquery(tenant.id, '0', w.q) AS sample_q,
               search_tsquery_all(tenant.id, w.q) AS all_q
        FROM tenant, websearch_to_tsquery('english', words) AS w(q)
    ),"""

SEARCH_V3 = SEARCH_V2.replace(_QUERY_V2, _QUERY_V3).replace(_WORD_HITS_V2, _WORD_HITS_V3)
for _part in (_QUERY_V2, _WORD_HITS_V2):
    assert _part in SEARCH_V2, "migration 11's search_hits changed: update the replacements"

STEPS = [
    RawSql(HELPERS, DROP_HELPERS),
    CreateIndex(
        "tasks_tenant_lexemes_idx",
        "tasks",
        "USING gin (search_lexemes(organization_id, id, search_vector))",
    ),
    RawSql(SEARCH_V3, SEARCH_V2),
    DropIndex(
        "tasks_tenant_search_idx",
        CreateIndex(
            "tasks_tenant_search_idx", "tasks", "USING gin (organization_id, search_vector)"
        ),
    ),
]


async def forwards() -> MigrationManager:
    return toolkit_migration(ID, DESCRIPTION, STEPS)
