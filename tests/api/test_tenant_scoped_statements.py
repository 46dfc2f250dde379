"""Every statement the API sends scopes each tenant table by ``organization_id`` itself, not
only through RLS: what Citus needs to route a statement to one tenant's shards
(docs/operations/sharding.md).

The statements are the real ones: a sweep of operations (compiled and on the resolvers) runs
through the app while every pooled connection logs what it sends; each statement is then
planned (``EXPLAIN (VERBOSE)``, with its own parameters) as the superuser, for whom RLS does
not apply, so the plan shows only the statement's own predicates. Every scan of a tenant table
must have a condition on its ``organization_id`` (its own, or the join's that reaches it).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import pytest

from tests.api.conftest import Api
from tests.api.world import Org
from tests.conftest import ScratchDatabase, admin_url
from tests.db.test_distributable import tables

SWEEP: list[tuple[str, Callable[[Org], dict[str, Any]]]] = [
    (
        "query($id: ID!) { project(id: $id) { name tasks(first: 20) { edges { node { id title "
        "status priority assignee { id displayName } comments(first: 3) { nodes { id content "
        "author { id displayName } } } } } } } }",
        lambda org: {"id": org.project},
    ),
    (
        "query($id: ID!) { project(id: $id) { tasks(first: 20, orderBy: PRIORITY, "
        "direction: DESC) { totalCount nodes { id title } } } }",
        lambda org: {"id": org.project},
    ),
    (
        "query($t: ID!) { task(id: $t) { title ancestors { title } subtasks(first: 10) "
        "{ nodes { title } } history(first: 5) { nodes { action } } } }",
        lambda org: {"t": org.task(1)},
    ),
    ('{ search(text: "task", first: 5) { totalCount nodes { rank } } }', lambda org: {}),
    (
        "{ viewer { user { email } memberships(first: 10) { nodes { role organization "
        "{ slug } } } } }",
        lambda org: {},
    ),
    (
        "{ organization { name members(first: 10) { nodes { role user { displayName } } } "
        "projects(first: 5) { nodes { name } } } }",
        lambda org: {},
    ),
    (
        "{ auditLog(first: 10) { edges { node { action actor { displayName } } } } }",
        lambda org: {},
    ),
    ("query($id: ID!) { node(id: $id) { id } }", lambda org: {"id": org.task(0)}),
]


#: Statements that read across tenants by design, and why (a sharded database fans them out
#: to every shard: docs/operations/sharding.md).
ACROSS_TENANTS = {
    # The viewer's memberships span tenants (api.loaders PageKey.tenant_scoped=False).
    ("organization_members", "FROM organization_members AS t WHERE t.user_id = $1::uuid"),
}


@pytest.fixture
async def logged(pool: asyncpg.Pool) -> AsyncIterator[list[tuple[str, tuple[Any, ...]]]]:
    """What every pooled connection sends while the test runs."""
    sent: list[tuple[str, tuple[Any, ...]]] = []

    def log(record: Any) -> None:
        sent.append((record.query, tuple(record.args or ())))

    connections = [await pool.acquire() for _ in range(pool.get_max_size())]
    try:
        for connection in connections:
            connection.add_query_logger(log)
    finally:
        for connection in connections:
            await pool.release(connection)
    yield sent
    connections = [await pool.acquire() for _ in range(pool.get_max_size())]
    for connection in connections:
        connection.remove_query_logger(log)
        await pool.release(connection)


def _scans(node: dict[str, Any], inherited: str = "") -> Iterator[tuple[dict[str, Any], str]]:
    """Each scan node with the conditions that reach it (its own, its joins')."""
    here = " ".join(
        str(node.get(key, ""))
        for key in ("Hash Cond", "Merge Cond", "Join Filter", "Index Cond", "Filter")
    )
    if "Relation Name" in node:
        own = " ".join(str(node.get(key, "")) for key in ("Index Cond", "Recheck Cond", "Filter"))
        yield node, f"{inherited} {own}"
    for child in node.get("Plans", []):
        yield from _scans(child, f"{inherited} {here}")


async def test_every_statement_scopes_its_tenant_tables_by_organization_id(
    api: Api,
    org_a: Org,
    org_b: Org,
    test_database: ScratchDatabase,
    logged: list[tuple[str, tuple[Any, ...]]],
) -> None:
    admin = admin_url(test_database)
    for org in (org_a, org_b):
        for query, variables in SWEEP:
            body = await api(query, variables(org), as_=(org, "owner"))
            assert "errors" not in body, (query, body)
    # The test database, whatever its name (taskql_test on the embedded server, the CI
    # run's own on a service), as the superuser.
    database = urlsplit(test_database.owner_dsn).path.lstrip("/")
    superuser = await asyncpg.connect(admin, database=database)
    try:
        tenant, _ = await tables(superuser)
        unscoped = []
        planned = 0
        distinct = {(sql, repr(args)): (sql, args) for sql, args in logged}
        for sql, args in distinct.values():
            head = sql.lstrip().split(None, 1)[0].upper() if sql.strip() else ""
            if head not in ("SELECT", "WITH") or not any(t in sql for t in tenant):
                continue
            plan = json.loads(
                await superuser.fetchval(f"EXPLAIN (VERBOSE, FORMAT JSON) {sql}", *args)
            )[0]["Plan"]
            planned += 1
            for scan, conditions in _scans(plan):
                relation = scan["Relation Name"]
                if relation not in tenant or any(
                    relation == table and part in sql for table, part in ACROSS_TENANTS
                ):
                    continue
                if f"{scan['Alias']}.organization_id" not in conditions:
                    unscoped.append(f"{relation} AS {scan['Alias']} in: {' '.join(sql.split())}")
    finally:
        await superuser.close()
    assert planned >= len(SWEEP), f"only {planned} statements planned: is the logger on?"
    assert not unscoped, "tenant tables scanned without organization_id:\n" + "\n".join(unscoped)
