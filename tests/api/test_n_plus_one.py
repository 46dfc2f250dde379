"""The number of SQL statements per operation depends on the query's shape, never on the
number of rows: every relation is loaded by a DataLoader, one statement per batch."""

from __future__ import annotations

import pytest

from tests.api.conftest import Api
from tests.api.world import Org, add_tasks, seed_org

PROJECT_TASKS = """
query($id: ID!) {
  project(id: $id) {
    name
    tasks(first: 100) {
      edges { node {
        title
        assignee { displayName }
        comments(first: 10) { nodes { content author { displayName } } }
      } }
    }
  }
}"""
#: The resolvers: at most one statement per relation level, plus the tenant set-up: set-up,
#: project, tasks page, assignees, comments page, comment authors (users of both levels may
#: share a batch). Compiled: the set-up and ONE statement.
MAX_STATEMENTS = 6
COMPILED_STATEMENTS = 2


@pytest.fixture
def api(read_api: Api) -> Api:
    """Every test of this module runs on both read paths (compiled, and the resolvers)."""
    return read_api


async def test_project_tasks_with_assignee_comments_and_authors(api: Api, org_b: Org) -> None:
    counts = []
    for tasks in (5, 50):
        org = await seed_org("n", tasks=tasks, comments_per_task=3)
        body = await api(PROJECT_TASKS, {"id": org.project}, as_=(org, "viewer"))
        edges = body["data"]["project"]["tasks"]["edges"]
        assert len(edges) == tasks
        assert all(len(e["node"]["comments"]["nodes"]) == 3 for e in edges)
        assert all(e["node"]["assignee"] is not None for e in edges)
        counts.append(body["extensions"]["sqlStatements"])
    assert counts[0] == counts[1]
    if api.compiled:
        assert counts[0] == COMPILED_STATEMENTS
    else:
        # The loaders are what is measured here: more than the compiled statement, and
        # bounded by the query's shape.
        assert COMPILED_STATEMENTS < counts[0] <= MAX_STATEMENTS


async def test_nested_connections_batch_across_parents(api: Api, org_a: Org) -> None:
    """Subtasks of every task on the page come from one statement, not one per task."""
    query = """query($id: ID!) { project(id: $id) { tasks(first: 100) { nodes {
        subtasks(first: 5) { totalCount nodes { title parent { title } } } } } } }"""
    small = await api(query, {"id": org_a.project}, as_=(org_a, "viewer"))
    await add_tasks(org_a, 30, 0)
    large = await api(query, {"id": org_a.project}, as_=(org_a, "viewer"))
    assert len(large["data"]["project"]["tasks"]["nodes"]) == 33
    assert small["extensions"]["sqlStatements"] == large["extensions"]["sqlStatements"]
    assert (small["extensions"]["sqlStatements"] == COMPILED_STATEMENTS) == api.compiled
