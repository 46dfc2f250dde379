"""Search: phrases and rarer words read the 16 buckets as 16 small index scans, without recheck.

Two costs were left in ``search_hits`` (migration 12) when the sample bucket has fewer than
100 matches (rarer words, and phrases, whose exact matches are few):

- Every bucket was read with ONE index condition, the query OR'ed over the 16 prefixes: GIN
  then evaluates that 16-branch query for every task holding any of the prefixed words
  (20-25 ms of index scan for "billing export" on the largest tenant). Sixteen conditions,
  one per bucket, give a BitmapOr of sixteen scans that each intersect two short posting
  lists: 3 ms.
- A phrase (``<->``) is lossy in a GIN index (positions are not in it): every candidate was
  rechecked by computing ``search_lexemes()`` for its row again (a regular expression over
  its tsvector): 38 ms for the 2,897 rows holding both words. The index now gets the phrase
  relaxed to AND (``search_tsquery_relaxed``: every phrase match holds all its words, so
  nothing is lost), which needs no recheck; the exact query is still checked on the row's
  own ``search_vector`` (cheap), as before. A query with a negation is not relaxed
  (``!a <-> b`` is a phrase that a row containing ``a`` elsewhere can match).

A common phrase on the largest tenant: 47-57 ms -> about 10 ms. Words in the sample bucket
are read as before (bucket 0 only).
"""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager

from db.migrate import sql_migration
from piccolo_migrations.taskql_2026_11_24t09_00_12_000000 import SEARCH_V3

ID = "2026-11-24T09:00:14:000000"
VERSION = "1.38.0"
DESCRIPTION = "search: phrases relaxed to AND for the index, one index scan per bucket"

BUCKETS = "0123456789abcdef"

RELAXED = r"""
CREATE FUNCTION search_tsquery_relaxed(query tsquery) RETURNS tsquery
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
RETURN CASE
    -- Lexemes never hold spaces, so ' <N> ' is always an operator; with a negation anywhere
    -- the phrase is kept (relaxing it could lose matches).
    WHEN pg_catalog.strpos(query::text, '!') > 0 THEN query
    ELSE pg_catalog.regexp_replace(query::text, ' <(-|[0-9]+)> ', ' & ', 'g')::tsquery
END;
COMMENT ON FUNCTION search_tsquery_relaxed(tsquery) IS
    'The query with its phrase operators made AND (a superset, exact in a GIN index); unchanged when it has a negation.';
GRANT EXECUTE ON FUNCTION search_tsquery_relaxed(tsquery) TO taskql_server, taskql_maintenance;
"""

_QUERY_V3 = """    query AS MATERIALIZED (
        SELECT w.q, search_tsquery(tenant.id, '0', w.q) AS sample_q,
               search_tsquery_all(tenant.id, w.q) AS all_q
        FROM tenant, websearch_to_tsquery('english', words) AS w(q)
    ),"""

_BUCKET_QUERIES = ",\n".join(
    f"               search_tsquery(tenant.id, '{b}', w.r) AS q{b}" for b in BUCKETS
)
_QUERY_V4 = f"""    query AS MATERIALIZED (
        SELECT w.q,
{_BUCKET_QUERIES}
        FROM tenant,
             (SELECT q, search_tsquery_relaxed(q) AS r
              FROM websearch_to_tsquery('english', words) AS q) AS w
    ),"""

_ANY_BUCKET = "\n                OR ".join(
    f"search_lexemes(t.organization_id, t.id, t.search_vector) @@ query.q{b}" for b in BUCKETS
)

_SAMPLE_V3 = """        WHERE search_lexemes(t.organization_id, t.id, t.search_vector)
              @@ query.sample_q"""
_SAMPLE_V4 = """        WHERE search_lexemes(t.organization_id, t.id, t.search_vector)
              @@ query.q0"""
_ALL_V3 = """           AND search_lexemes(t.organization_id, t.id, t.search_vector)
               @@ query.all_q"""
_ALL_V4 = f"""           -- One condition per bucket: a BitmapOr of 16 small index scans.
           AND ({_ANY_BUCKET})"""

SEARCH_V4 = (
    SEARCH_V3.replace(_QUERY_V3, _QUERY_V4)
    .replace(_SAMPLE_V3, _SAMPLE_V4)
    .replace(_ALL_V3, _ALL_V4)
)
for _part in (_QUERY_V3, _SAMPLE_V3, _ALL_V3):
    assert _part in SEARCH_V3, "migration 12's search_hits changed: update the replacements"

FORWARDS = RELAXED + SEARCH_V4
BACKWARDS = SEARCH_V3 + "\nDROP FUNCTION search_tsquery_relaxed(tsquery);\n"


async def forwards() -> MigrationManager:
    return sql_migration(ID, DESCRIPTION, FORWARDS, BACKWARDS)
