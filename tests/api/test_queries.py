"""Every query field over HTTP, each checked against the seeded data of two tenants."""

from __future__ import annotations

from typing import Any

import pytest

from tests.api.conftest import Api
from tests.api.world import Org

CREATE_TASK = """
mutation($input: CreateTaskInput!) { createTask(input: $input) { task { id title } errors { message path } } }
"""


@pytest.fixture
def api(read_api: Api) -> Api:
    """Every test of this module runs on both read paths (compiled, and the resolvers)."""
    return read_api


async def create_task(api: Api, org: Org, **fields: Any) -> str:
    body = await api(
        CREATE_TASK, {"input": {"projectId": org.project, **fields}}, as_=(org, "member")
    )
    payload = body["data"]["createTask"]
    assert payload["errors"] == [], payload
    return str(payload["task"]["id"])


async def test_organization_by_header_slug_and_id(api: Api, org_a: Org, org_b: Org) -> None:
    query = "query($slug: String, $id: ID) { organization(slug: $slug, id: $id) { id slug name } }"
    by_header = (await api(query, as_=(org_a, "viewer")))["data"]["organization"]
    by_slug = (await api(query, {"slug": org_a.slug}, as_=(org_a, "viewer")))["data"][
        "organization"
    ]
    by_id = (await api(query, {"id": by_header["id"]}, as_=(org_a, "viewer")))["data"][
        "organization"
    ]
    assert by_header == by_slug == by_id
    assert by_header["slug"] == org_a.slug
    other = (await api(query, {"slug": org_b.slug}, as_=(org_a, "owner")))["data"]["organization"]
    assert other is None


async def test_members_with_roles_and_users(api: Api, org_a: Org, org_b: Org) -> None:
    body = await api(
        "{ organization { members(first: 10) { totalCount nodes { role user { email } } } } }",
        as_=(org_a, "viewer"),
    )
    members = body["data"]["organization"]["members"]
    assert members["totalCount"] == 4
    assert {(m["role"], m["user"]["email"]) for m in members["nodes"]} == {
        (role.upper(), org_a.emails[role]) for role in ("owner", "admin", "member", "viewer")
    }


async def test_projects_filter_search_order_and_archive(api: Api, org_a: Org, org_b: Org) -> None:
    create = "mutation($n: String!, $d: String) { createProject(input: {name: $n, description: $d, status: PLANNED}) { project { id } errors { message } } }"
    other = await api(create, {"n": "Zebra migration", "d": "Move the herd"}, as_=(org_a, "admin"))
    other_id = other["data"]["createProject"]["project"]["id"]
    query = """query($f: ProjectFilter, $o: ProjectOrderField!, $d: Direction!) {
      organization { projects(first: 10, filter: $f, orderBy: $o, direction: $d) { totalCount nodes { name status archived } } } }"""

    async def names(**variables: Any) -> list[str]:
        body = await api(
            query, {"o": "CREATED_AT", "d": "DESC", **variables}, as_=(org_a, "viewer")
        )
        return [p["name"] for p in body["data"]["organization"]["projects"]["nodes"]]

    assert await names() == ["Zebra migration", "Launch a"]
    assert await names(o="NAME", d="ASC") == ["Launch a", "Zebra migration"]
    assert await names(f={"status": ["PLANNED"]}) == ["Zebra migration"]
    assert await names(f={"search": "herd"}) == ["Zebra migration"]
    await api(
        "mutation($id: ID!) { archiveProject(input: {id: $id}) { errors { message } } }",
        {"id": other_id},
        as_=(org_a, "admin"),
    )
    assert await names() == ["Launch a"]
    assert await names(f={"includeArchived": True}) == ["Zebra migration", "Launch a"]
    assert "Launch b" not in await names(f={"includeArchived": True})


TASKS = """
query($id: ID!, $first: Int, $after: String, $last: Int, $before: String, $f: TaskFilter, $o: TaskOrderField!, $d: Direction!) {
  project(id: $id) {
    tasks(first: $first, after: $after, last: $last, before: $before, filter: $f, orderBy: $o, direction: $d) {
      totalCount
      pageInfo { hasNextPage hasPreviousPage startCursor endCursor }
      edges { cursor node { title priority dueDate status } }
    }
  }
}"""


async def tasks_page(api: Api, org: Org, **variables: Any) -> dict[str, Any]:
    body = await api(
        TASKS,
        {"id": org.project, "o": "CREATED_AT", "d": "ASC", "first": 50, **variables},
        as_=(org, "viewer"),
    )
    assert "errors" not in body, body
    return body["data"]["project"]["tasks"]  # type: ignore[no-any-return]


def titles(page: dict[str, Any]) -> list[str]:
    return [e["node"]["title"] for e in page["edges"]]


async def test_task_filters(api: Api, org_a: Org, org_b: Org) -> None:
    parent = await create_task(
        api, org_a, title="Parent with a due date", priority=4, dueDate="2030-01-01T00:00:00Z"
    )
    await create_task(
        api,
        org_a,
        title="Child needs review",
        parentId=parent,
        status="BLOCKED",
        assigneeId=org_a.user("viewer"),
        dueDate="2031-06-01T00:00:00Z",
    )
    assert titles(await tasks_page(api, org_a, f={"status": ["BLOCKED"]})) == ["Child needs review"]
    assert titles(await tasks_page(api, org_a, f={"assignee": org_a.user("viewer")})) == [
        "Child needs review"
    ]
    assert titles(await tasks_page(api, org_a, f={"priorityMin": 4})) == ["Parent with a due date"]
    assert titles(await tasks_page(api, org_a, f={"priorityMin": 1, "priorityMax": 2})) == [
        "Task 1 of a",
        "Task 2 of a",
    ]
    assert titles(await tasks_page(api, org_a, f={"dueBefore": "2030-06-01T00:00:00Z"})) == [
        "Parent with a due date"
    ]
    assert titles(await tasks_page(api, org_a, f={"dueAfter": "2030-06-01T00:00:00Z"})) == [
        "Child needs review"
    ]
    assert "Child needs review" not in titles(await tasks_page(api, org_a, f={"rootOnly": True}))
    assert titles(await tasks_page(api, org_a, f={"search": "review"})) == ["Child needs review"]
    assert titles(await tasks_page(api, org_a, f={"unassigned": True})) == [
        "Parent with a due date"
    ]


@pytest.mark.parametrize("order", ["CREATED_AT", "UPDATED_AT", "PRIORITY", "DUE_DATE"])
@pytest.mark.parametrize("direction", ["ASC", "DESC"])
async def test_keyset_pagination_walks_every_task_once_both_ways(
    api: Api, org_a: Org, org_b: Org, order: str, direction: str
) -> None:
    from tests.api.world import add_tasks

    await add_tasks(org_a, 9, 0)
    await create_task(api, org_a, title="Due soon", dueDate="2029-01-01T00:00:00Z", priority=2)
    everything = titles(await tasks_page(api, org_a, o=order, d=direction))
    assert len(everything) == 13
    seen: list[str] = []
    after = None
    while True:
        page = await tasks_page(api, org_a, o=order, d=direction, first=4, after=after)
        seen += titles(page)
        assert page["totalCount"] == 13
        if not page["pageInfo"]["hasNextPage"]:
            break
        after = page["pageInfo"]["endCursor"]
    assert seen == everything
    backwards: list[str] = []
    before = None
    while True:
        page = await tasks_page(api, org_a, o=order, d=direction, first=None, last=5, before=before)
        backwards = titles(page) + backwards
        if not page["pageInfo"]["hasPreviousPage"]:
            break
        before = page["pageInfo"]["startCursor"]
    assert backwards == everything
    key = {"PRIORITY": "priority", "DUE_DATE": "dueDate"}.get(order)
    if key:
        values = [
            e["node"][key] for e in (await tasks_page(api, org_a, o=order, d=direction))["edges"]
        ]
        present = [v for v in values if v is not None]
        assert present == sorted(present, reverse=direction == "DESC")
        if key == "dueDate":  # tasks without a due date sort last ascending, first descending
            assert (values[-1] is None) == (direction == "ASC")


async def test_task_counts_by_status_lists_every_status(api: Api, org_a: Org, org_b: Org) -> None:
    await api(
        "mutation($id: ID!) { completeTask(input: {id: $id}) { errors { message } } }",
        {"id": org_a.task(0)},
        as_=(org_a, "member"),
    )
    body = await api(
        "query($id: ID!) { project(id: $id) { taskCountsByStatus { status count } } }",
        {"id": org_a.project},
        as_=(org_a, "viewer"),
    )
    counts = {c["status"]: c["count"] for c in body["data"]["project"]["taskCountsByStatus"]}
    assert counts == {"TODO": 2, "IN_PROGRESS": 0, "BLOCKED": 0, "DONE": 1, "CANCELLED": 0}


async def test_task_relations(api: Api, org_a: Org, org_b: Org) -> None:
    root = await create_task(api, org_a, title="Root")
    child = await create_task(
        api, org_a, title="Child", parentId=root, assigneeId=org_a.user("admin")
    )
    grandchild = await create_task(api, org_a, title="Grandchild", parentId=child)
    await api(
        'mutation($t: ID!) { addComment(input: {taskId: $t, content: "first!"}) { errors { message } } }',
        {"t": child},
        as_=(org_a, "member"),
    )
    body = await api(
        """query($id: ID!) { task(id: $id) {
            title parent { title } ancestors { title } project { name }
            subtasks(first: 10) { totalCount nodes { title } }
            assignee { email } createdBy { email }
            comments(first: 10) { totalCount nodes { content author { email } task { title } } }
            history(first: 10) { totalCount nodes { action entityType actor { email } changes } }
        } }""",
        {"id": child},
        as_=(org_a, "viewer"),
    )
    task = body["data"]["task"]
    assert task["parent"] == {"title": "Root"}
    assert task["ancestors"] == [{"title": "Root"}]
    assert task["project"] == {"name": "Launch a"}
    assert task["subtasks"] == {"totalCount": 1, "nodes": [{"title": "Grandchild"}]}
    assert task["assignee"] == {"email": org_a.emails["admin"]}
    assert task["createdBy"] == {"email": org_a.emails["member"]}
    assert task["comments"]["nodes"] == [
        {
            "content": "first!",
            "author": {"email": org_a.emails["member"]},
            "task": {"title": "Child"},
        }
    ]
    assert task["history"]["nodes"][0]["action"] == "INSERT"
    assert task["history"]["nodes"][0]["actor"] == {"email": org_a.emails["member"]}
    assert task["history"]["nodes"][0]["changes"]["after"]["title"] == "Child"
    deep = await api(
        "query($id: ID!) { task(id: $id) { ancestors { title } } }",
        {"id": grandchild},
        as_=(org_a, "viewer"),
    )
    assert deep["data"]["task"]["ancestors"] == [{"title": "Child"}, {"title": "Root"}]


async def test_search_is_ranked_and_forgives_typos(api: Api, org_a: Org, org_b: Org) -> None:
    await create_task(api, org_a, title="Calibrate the spectrometer", description="laser alignment")
    await create_task(api, org_a, title="Order coffee")
    query = "query($t: String!) { search(text: $t, first: 10) { totalCount nodes { rank node { __typename ... on Task { title } ... on Project { name } } } } }"
    exact = (await api(query, {"t": "spectrometer"}, as_=(org_a, "viewer")))["data"]["search"]
    assert [n["node"].get("title") for n in exact["nodes"]] == ["Calibrate the spectrometer"]
    typo = (await api(query, {"t": "spectromter"}, as_=(org_a, "viewer")))["data"]["search"]
    assert typo["nodes"][0]["node"]["title"] == "Calibrate the spectrometer"
    by_description = (await api(query, {"t": "laser"}, as_=(org_a, "viewer")))["data"]["search"]
    assert by_description["totalCount"] == 1
    project = (await api(query, {"t": "Launch"}, as_=(org_a, "viewer")))["data"]["search"]
    assert {"__typename": "Project", "name": "Launch a"} in [n["node"] for n in project["nodes"]]
    assert all(n["node"].get("name") != "Launch b" for n in project["nodes"])


async def test_audit_log_is_for_admins_and_filters_by_entity(
    api: Api, org_a: Org, org_b: Org
) -> None:
    query = "query($t: AuditEntityType, $e: ID) { auditLog(first: 50, entityType: $t, entityId: $e) { totalCount nodes { action entityType entityId actor { email } ipAddress } } }"
    denied = await api(query, as_=(org_a, "member"))
    assert denied["errors"][0]["extensions"]["code"] == "FORBIDDEN"
    everything = (await api(query, as_=(org_a, "admin")))["data"]["auditLog"]
    assert everything["totalCount"] >= 1 + 4 + 1 + 3 + 6
    projects = (await api(query, {"t": "PROJECT"}, as_=(org_a, "admin")))["data"]["auditLog"]
    assert {n["entityType"] for n in projects["nodes"]} == {"PROJECT"}
    one_task = (await api(query, {"e": org_a.task(0)}, as_=(org_a, "admin")))["data"]["auditLog"]
    assert [(n["action"], n["entityId"]) for n in one_task["nodes"]] == [("INSERT", org_a.task(0))]
    await create_task(api, org_a, title="Audited through HTTP")
    latest = (await api(query, {"t": "TASK"}, as_=(org_a, "admin")))["data"]["auditLog"]["nodes"][0]
    assert latest["ipAddress"] == "198.51.100.7"
    assert latest["actor"] == {"email": org_a.emails["member"]}


async def test_node_refetches_every_type(api: Api, org_a: Org, org_b: Org) -> None:
    ids = {
        "Task": org_a.task(0),
        "Project": org_a.project,
        "User": org_a.user("admin"),
        "Comment": org_a.gid("Comment", org_a.comment_ids[0]),
        "Organization": org_a.gid("Organization", org_a.id),
    }
    members = await api(
        "{ organization { members(first: 1) { nodes { id } } } }", as_=(org_a, "viewer")
    )
    ids["Member"] = members["data"]["organization"]["members"]["nodes"][0]["id"]
    for kind, global_id in ids.items():
        body = await api(
            "query($id: ID!) { node(id: $id) { __typename id } }",
            {"id": global_id},
            as_=(org_a, "viewer"),
        )
        assert body["data"]["node"] == {"__typename": kind, "id": global_id}, kind
