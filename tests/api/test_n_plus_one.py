"""The number of SQL statements per operation depends on the query's shape, never on the
number of rows: every relation is loaded by a DataLoader, one statement per batch."""

from __future__ import annotations

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
#: At most one statement per relation level, plus the tenant set-up: set-up, project, tasks
#: page, assignees, comments page, comment authors (users of both levels may share a batch).
MAX_STATEMENTS = 6


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
    assert counts[0] <= MAX_STATEMENTS


async def test_nested_connections_batch_across_parents(api: Api, org_a: Org) -> None:
    """Subtasks of every task on the page come from one statement, not one per task."""
    query = """query($id: ID!) { project(id: $id) { tasks(first: 100) { nodes {
        subtasks(first: 5) { totalCount nodes { title parent { title } } } } } } }"""
    small = await api(query, {"id": org_a.project}, as_=(org_a, "viewer"))
    await add_tasks(org_a, 30, 0)
    large = await api(query, {"id": org_a.project}, as_=(org_a, "viewer"))
    assert len(large["data"]["project"]["tasks"]["nodes"]) == 33
    assert small["extensions"]["sqlStatements"] == large["extensions"]["sqlStatements"]
