from __future__ import annotations

from tests.api.conftest import Api
from tests.api.world import Org

PROJECT_TASKS = """
query($id: ID!, $first: Int!) {
  project(id: $id) {
    name
    tasks(first: $first) {
      totalCount
      pageInfo { hasNextPage endCursor }
      edges { cursor node { id title assignee { displayName } comments(first: 5) { nodes { content author { displayName } } } } }
    }
  }
}
"""


async def test_smoke(api: Api, org_a: Org, org_b: Org) -> None:
    body = await api(PROJECT_TASKS, {"id": org_a.project, "first": 10}, as_=(org_a, "viewer"))
    print(body)
    assert "errors" not in body
