"""Tenant isolation through the API: nothing a member of one organization sends ever reads
or changes another's data, forged ids and concurrency included."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import asyncpg
import pytest

from api.ids import to_global_id
from db.engine import DB
from tests.api.conftest import Api
from tests.api.test_queries import create_task
from tests.api.world import Org
from tests.conftest import ScratchDatabase


@pytest.fixture
def api(read_api: Api) -> Api:
    """Every test of this module runs on both read paths (compiled, and the resolvers)."""
    return read_api


async def test_node_never_returns_another_tenants_objects(api: Api, org_a: Org, org_b: Org) -> None:
    members = await api(
        "{ organization { members(first: 1) { nodes { id } } } }", as_=(org_b, "viewer")
    )
    foreign = [
        org_b.task(0),
        org_b.project,
        org_b.gid("Comment", org_b.comment_ids[0]),
        members["data"]["organization"]["members"]["nodes"][0]["id"],
        org_b.user("owner"),
        org_b.gid("Organization", org_b.id),
    ]
    for global_id in foreign:
        body = await api(
            "query($id: ID!) { node(id: $id) { id } }", {"id": global_id}, as_=(org_a, "owner")
        )
        assert body == {"data": {"node": None}, "extensions": body["extensions"]}, global_id


async def test_queries_by_id_and_search_see_nothing_of_another_tenant(
    api: Api, org_a: Org, org_b: Org
) -> None:
    body = await api(
        "query($p: ID!, $t: ID!) { project(id: $p) { id } task(id: $t) { id } }",
        {"p": org_b.project, "t": org_b.task(0)},
        as_=(org_a, "owner"),
    )
    assert body["data"] == {"project": None, "task": None}
    await create_task(api, org_b, title="Xylophone quartz calibration")
    query = '{ search(text: "xylophone quartz", first: 10) { totalCount nodes { rank } } }'
    assert (await api(query, as_=(org_b, "viewer")))["data"]["search"]["totalCount"] == 1
    found = await api(query, as_=(org_a, "owner"))
    assert found["data"]["search"] == {"totalCount": 0, "nodes": []}
    log = await api(
        "query($e: ID!) { auditLog(first: 10, entityId: $e) { totalCount } }",
        {"e": org_b.task(0)},
        as_=(org_a, "owner"),
    )
    assert log["data"]["auditLog"]["totalCount"] == 0


@pytest.mark.parametrize(
    ("mutation", "input_of"),
    [
        ("updateTask", lambda b: {"id": b.task(0), "title": "pwned"}),
        ("completeTask", lambda b: {"id": b.task(0)}),
        ("deleteTask", lambda b: {"id": b.task(0)}),
        ("assignTask", lambda b: {"id": b.task(0), "assigneeId": None}),
        ("moveTask", lambda b: {"id": b.task(0), "parentId": b.task(1)}),
        ("updateProject", lambda b: {"id": b.project, "name": "pwned"}),
        ("archiveProject", lambda b: {"id": b.project}),
        ("addComment", lambda b: {"taskId": b.task(0), "content": "pwned"}),
        ("editComment", lambda b: {"id": b.gid("Comment", b.comment_ids[0]), "content": "pwned"}),
        ("deleteComment", lambda b: {"id": b.gid("Comment", b.comment_ids[0])}),
        ("changeMemberRole", lambda b: {"userId": b.user("member"), "role": "VIEWER"}),
        ("removeMember", lambda b: {"userId": b.user("member")}),
        ("createTask", lambda b: {"projectId": b.project, "title": "smuggled"}),
    ],
)
async def test_mutations_cannot_reach_another_tenant(
    api: Api, org_a: Org, org_b: Org, mutation: str, input_of: Callable[[Org], dict[str, Any]]
) -> None:
    input_type = mutation[0].upper() + mutation[1:] + "Input"
    body = await api(
        f"mutation($input: {input_type}!) {{ {mutation}(input: $input) {{ errors {{ code }} }} }}",
        {"input": input_of(org_b)},
        as_=(org_a, "owner"),
    )
    assert body["data"][mutation]["errors"][0]["code"] in ("NOT_FOUND", "BAD_USER_INPUT")
    check = await api(
        """query($p: ID!, $t: ID!) { project(id: $p) { name archived tasks(first: 10) { totalCount }
             } task(id: $t) { title status assignee { id } parent { id } comments(first: 5) { nodes { content } } }
             organization { members(first: 10) { nodes { role } } } }""",
        {"p": org_b.project, "t": org_b.task(0)},
        as_=(org_b, "owner"),
    )
    data = check["data"]
    assert data["project"] == {"name": "Launch b", "archived": False, "tasks": {"totalCount": 3}}
    assert data["task"]["title"] == "Task 0 of b"
    assert data["task"]["status"] == "TODO"
    assert data["task"]["assignee"] is not None
    assert data["task"]["parent"] is None
    assert [c["content"] for c in data["task"]["comments"]["nodes"]] == [
        "Comment 0 on Task 0 of b",
        "Comment 1 on Task 0 of b",
    ]
    assert sorted(m["role"] for m in data["organization"]["members"]["nodes"]) == [
        "ADMIN",
        "MEMBER",
        "OWNER",
        "VIEWER",
    ]


@pytest.mark.parametrize(
    "forged",
    [
        "not-base64!!",
        "VGFzaw",
        to_global_id("Project", __import__("uuid").uuid4()).replace("UHJv", "WHJv"),
        "",
    ],
)
async def test_forged_ids_are_bad_input_not_errors(api: Api, org_a: Org, forged: str) -> None:
    body = await api(
        "query($id: ID!) { task(id: $id) { id } }", {"id": forged}, as_=(org_a, "owner")
    )
    assert body["data"] == {"task": None}
    assert body["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"


async def test_an_id_of_the_wrong_type_is_bad_input(api: Api, org_a: Org) -> None:
    body = await api(
        "query($id: ID!) { task(id: $id) { id } }", {"id": org_a.project}, as_=(org_a, "owner")
    )
    assert body["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"
    assert "is a Project, not a Task" in body["errors"][0]["message"]


@pytest.fixture
async def tiny_pool(
    test_database: ScratchDatabase, pool: asyncpg.Pool
) -> AsyncIterator[asyncpg.Pool]:
    """Swap the engine's pool for one of two connections for the duration of a test."""
    small = await asyncpg.create_pool(**{**DB.config, "min_size": 1, "max_size": 2})
    assert small is not None
    DB.pool = small
    try:
        yield small
    finally:
        DB.pool = pool
        await small.close()


async def test_fifty_concurrent_mixed_tenant_requests_on_two_connections(
    api: Api, org_a: Org, org_b: Org, tiny_pool: asyncpg.Pool
) -> None:
    query = """{ organization { slug projects(first: 5) { nodes { name tasks(first: 10) {
                 nodes { title comments(first: 5) { nodes { content author { email } } } } } } } } }"""

    async def ask(org: Org, role: str) -> tuple[Org, dict]:  # type: ignore[type-arg]
        return org, await api(query, as_=(org, role))

    calls = [
        ask(org_a if i % 2 else org_b, ("owner", "admin", "member", "viewer")[i % 4])
        for i in range(50)
    ]
    results = await asyncio.gather(*calls)
    assert tiny_pool.get_max_size() == 2
    for org, body in results:
        assert "errors" not in body, body
        organization = body["data"]["organization"]
        assert organization["slug"] == org.slug
        projects = organization["projects"]["nodes"]
        assert [p["name"] for p in projects] == [f"Launch {org.label}"]
        tasks = projects[0]["tasks"]["nodes"]
        assert {t["title"] for t in tasks} == {f"Task {i} of {org.label}" for i in range(3)}
        for task in tasks:
            for comment in task["comments"]["nodes"]:
                assert comment["content"].endswith(f"of {org.label}")
                assert comment["author"]["email"] == org.emails["member"]
