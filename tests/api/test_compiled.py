"""Compiled queries (``api/compiler``) answer exactly as the resolvers do.

Two apps on the same database: one compiles what it can, one always runs the resolvers (the
reference). Every query of the corpus is sent to both, as several callers of two tenants;
the responses must be equal, key order included, and the compiled one must have taken ONE
statement after the tenant settings.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
import pytest

from api.app import create_app
from api.pagination import encode_cursor
from api.settings import Settings
from db import tables
from db.tenancy import TenantContext, request_transaction
from db.uuid7 import uuid7
from tests.api.world import Org

pytestmark = pytest.mark.asyncio(loop_scope="session")
Clients = tuple[httpx.AsyncClient, httpx.AsyncClient]

TASK_BITS = """
fragment TaskBits on Task { id title status priority dueDate completedAt createdAt updatedAt description }"""
USER_BITS = """
fragment UserBits on User { id displayName email createdAt __typename }"""

#: (query, variables builder, roles) — variables get the org under test.
CORPUS: list[tuple[str, Any]] = [
    (
        """query($id: ID!) { project(id: $id) { name tasks(first: 50) { edges { node {
          id title status priority assignee { id displayName }
          comments(first: 3) { nodes { id content author { id displayName } } } } } } } }""",
        lambda o: {"id": o.project},
    ),
    (
        """query($id: ID!) { project(id: $id) { tasks(first: 5, orderBy: PRIORITY, direction: DESC) {
          totalCount nodes { id title priority status } pageInfo { hasNextPage hasPreviousPage startCursor endCursor }
          edges { cursor } } } }""",
        lambda o: {"id": o.project},
    ),
    (
        """query($id: ID!, $n: Int) { project(id: $id) { a: tasks(last: $n, orderBy: DUE_DATE) {
          edges { cursor node { ...TaskBits } } pageInfo { hasNextPage hasPreviousPage startCursor endCursor } }
          b: tasks(first: 2, orderBy: UPDATED_AT, direction: DESC, filter: {status: [TODO, DONE], priorityMin: 0, priorityMax: 4}) {
          totalCount nodes { title status } }
          c: tasks(first: 10, filter: {rootOnly: true, unassigned: false}) { totalCount nodes { title subtasks(first: 5) { totalCount nodes { title } } } }
          d: tasks(first: 10, filter: {search: "task"}) { totalCount nodes { title } }
          e: tasks(last: 3, orderBy: PRIORITY) { nodes { title priority } edges { cursor } }
          f: tasks(first: 4, orderBy: DUE_DATE, direction: DESC) { edges { cursor node { title dueDate } } } } }"""
        + TASK_BITS,
        lambda o: {"id": o.project, "n": 3},
    ),
    (
        """query($t: ID!) { task(id: $t) { title ancestors { title } parent { title } project { name archived }
          subtasks(first: 10) { nodes { title ancestors { id title } } }
          history(first: 5) { totalCount nodes { id action entityType entityId createdAt requestId ipAddress userAgent changes actor { ...UserBits } } }
          createdBy { ...UserBits } assignee { ...UserBits }
          comments(first: 10) { totalCount edges { cursor node { id content createdAt updatedAt editedAt deletedAt author { displayName } task { title } } } } } }"""
        + USER_BITS,
        lambda o: {"t": o.task(3)},
    ),
    (
        """query($id: ID!) { project(id: $id) { tasks(first: 2) { totalCount } subtotal: tasks(last: 2) {
          pageInfo { hasPreviousPage } } } }""",
        lambda o: {"id": o.project},
    ),
    (
        "{ viewer { user { email displayName id } memberships(first: 10) { totalCount nodes { role createdAt organization { slug name } user { email } } } } }",
        lambda o: {},
    ),
    (
        """{ organization { id name slug createdAt updatedAt __typename
          members(first: 10) { totalCount nodes { role user { email } invitedBy { email } organization { slug } } }
          projects(first: 5) { nodes { id name description status createdAt archivedAt archived createdBy { email }
            organization { slug } taskCountsByStatus { status count __typename } } } } }""",
        lambda o: {},
    ),
    (
        """query($id: ID!, $skip: Boolean!, $after: String) { project(id: $id) {
          ... on Project { name }
          ... on Node { id }
          tasks(first: 2, after: $after) @skip(if: $skip) { nodes { title } }
          more: tasks(first: 2) @include(if: $skip) { nodes { id } }
          __typename } }""",
        lambda o: {"id": o.project, "skip": False, "after": None},
    ),
    (
        """query($id: ID!) { project(id: $id) { tasks(first: 3, orderBy: DUE_DATE, direction: DESC) {
          edges { node { title dueDate } cursor } } }
          other: organization(slug: "no-such-org") { id } }""",
        lambda o: {"id": o.project},
    ),
    (
        """query($t: String!) { search(text: $t, first: 4) { totalCount
          edges { cursor node { rank node { __typename ... on Task { id title status } ... on Project { id name } } } }
          pageInfo { hasNextPage hasPreviousPage startCursor endCursor } }
          typo: search(text: "Level 1 undr a") { nodes { rank node { ...Hit } } }
          project: search(text: "launch", first: 2) { nodes { node { ... on Project { name taskCountsByStatus { status count } } } } } }
        fragment Hit on SearchResult { __typename ... on Node { id } ... on Task { title project { name } } }""",
        lambda o: {"t": "task or level"},
    ),
]


@pytest.fixture
async def apps(pool: asyncpg.Pool) -> AsyncIterator[tuple[httpx.AsyncClient, httpx.AsyncClient]]:
    clients = []
    for compiled in (True, False):
        app = create_app(Settings(taskql_sql_stats=True, taskql_compiled_queries=compiled))
        transport = httpx.ASGITransport(app=app, client=("198.51.100.7", 50000))
        clients.append(httpx.AsyncClient(transport=transport, base_url="http://taskql.test"))
    try:
        yield clients[0], clients[1]
    finally:
        for client in clients:
            await client.aclose()


async def enrich(org: Org) -> None:
    """Subtasks three levels deep, due dates (some with microseconds), a done task, an
    edited and a deleted comment: the values whose rendering could differ."""
    member = org.users["member"]
    context = TenantContext(organization_id=org.id, user_id=member, role="member")
    async with request_transaction(context) as (_, executor):
        parent = org.task_ids[0]
        for depth in range(3):
            child = uuid7()
            await tables.Task.insert(
                tables.Task(
                    id=child,
                    organization_id=org.id,
                    project_id=org.project_id,
                    parent_task_id=parent,
                    title=f"Level {depth + 1} under {org.label}",
                    due_date=datetime(2027, 1, 2 + depth, 3, 4, 5, 120000 * depth, tzinfo=UTC),
                )
            )
            org.task_ids.append(child)
            parent = child
        await executor.execute(
            "UPDATE tasks SET status = 'done', due_date = $2 WHERE id = $1",
            org.task_ids[1],
            datetime.now(UTC) + timedelta(days=3),
        )
        await executor.execute(
            "UPDATE task_comments SET content = 'edited' WHERE id = $1", org.comment_ids[0]
        )
        await executor.execute(
            "UPDATE task_comments SET deleted_at = now() WHERE id = $1", org.comment_ids[1]
        )


def ordered(text: str) -> Any:
    """JSON with every object as its list of (key, value) pairs: key order is compared too."""
    return json.loads(text, object_pairs_hook=list)


async def both(
    clients: tuple[httpx.AsyncClient, httpx.AsyncClient],
    query: str,
    variables: dict[str, Any],
    token: str,
    org: str | None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    headers = {"Authorization": f"Bearer {token}"}
    if org is not None:
        headers["X-Organization"] = org
    answers = []
    for client in clients:
        response = await client.post(
            "/graphql", json={"query": query, "variables": variables}, headers=headers
        )
        assert response.status_code == 200, response.text
        answers.append(response)
    compiled, reference = answers
    assert ordered(compiled.text)[0] == ordered(reference.text)[0], (
        f"{query}\ncompiled:  {compiled.text}\nresolvers: {reference.text}"
    )
    return compiled.json(), reference.json()


async def test_corpus_answers_as_the_resolvers_do_for_every_caller(
    apps: Clients, org_a: Org, org_b: Org
) -> None:
    await enrich(org_a)
    await enrich(org_b)
    for query, variables in CORPUS:
        for org in (org_a, org_b):
            for role in ("owner", "viewer"):
                compiled, reference = await both(
                    apps, query, variables(org), org.tokens[role], org.slug
                )
                assert "errors" not in compiled, compiled
                assert compiled["data"], compiled
                assert compiled["extensions"]["sqlStatements"] == 2, query
                assert reference["extensions"]["sqlStatements"] >= 2


async def test_the_compiled_answer_has_the_data_it_should(
    apps: Clients, org_a: Org, org_b: Org
) -> None:
    await enrich(org_a)
    query, variables = CORPUS[3]
    compiled, _ = await both(apps, query, variables(org_a), org_a.tokens["member"], org_a.slug)
    task = compiled["data"]["task"]
    assert task["title"] == "Level 1 under a"
    assert [a["title"] for a in task["ancestors"]] == ["Task 0 of a"]
    assert [s["title"] for s in task["subtasks"]["nodes"]] == ["Level 2 under a"]
    assert task["subtasks"]["nodes"][0]["ancestors"][1]["title"] == "Task 0 of a"
    assert task["history"]["nodes"][0]["action"] == "INSERT"
    assert task["history"]["nodes"][0]["entityType"] == "TASK"
    assert task["history"]["nodes"][0]["entityId"] == org_a.task(3)
    assert task["history"]["nodes"][0]["actor"]["id"] == org_a.user("member")
    assert task["project"] == {"name": "Launch a", "archived": False}


async def test_a_tenant_sees_nothing_of_the_other_through_compiled_queries(
    apps: Clients, org_a: Org, org_b: Org
) -> None:
    # org_b's project and task asked for with org_a's tenant: null, as with the resolvers.
    query = "query($p: ID!, $t: ID!) { project(id: $p) { name } task(id: $t) { title } }"
    compiled, _ = await both(
        apps, query, {"p": org_b.project, "t": org_b.task(0)}, org_a.tokens["owner"], org_a.slug
    )
    assert compiled["data"] == {"project": None, "task": None}
    assert compiled["extensions"]["sqlStatements"] == 2
    # Each tenant's main query lists only its own tasks and its own people.
    query, variables = CORPUS[0]
    for org, other in ((org_a, org_b), (org_b, org_a)):
        compiled, _ = await both(apps, query, variables(org), org.tokens["viewer"], org.slug)
        text = json.dumps(compiled)
        assert f"of {org.label}" in text
        assert f"of {other.label}" not in text
        assert other.slug not in text


@pytest.mark.parametrize(
    ("query", "variables"),
    [
        # Bad ids, bad page sizes, wrong argument combinations: the resolvers' errors.
        ('{ project(id: "nope") { name } }', {}),
        ("query($id: ID!) { project(id: $id) { tasks(first: 500) { nodes { id } } } }", None),
        ("query($id: ID!) { project(id: $id) { tasks { nodes { id } } } }", None),
        (
            'query($id: ID!) { project(id: $id) { tasks(first: 2, after: "bad") { nodes { id } } } }',
            None,
        ),
        # Variables that do not match their definitions.
        ("query($n: Int!) { viewer { memberships(first: $n) { nodes { role } } } }", {"n": "x"}),
        # Well-formed cursors whose keys PostgreSQL could not read as the order's type:
        # BAD_USER_INPUT before any statement (it used to be a failed statement, a 500).
        *(
            (
                "query($id: ID!, $c: String) { project(id: $id) { tasks("
                + page
                + ") { nodes { id } } } }",
                lambda o, key=key: {"id": o.project, "c": encode_cursor(key, uuid7())},
            )
            for page, key in (
                ("first: 2, after: $c", "not a time"),
                ("first: 2, after: $c", "2025-13-01 00:00:00+00"),
                ("last: 2, before: $c", "2025-01-01"),
                ("first: 2, after: $c, orderBy: PRIORITY", "high"),
                ("first: 2, after: $c, orderBy: PRIORITY", "99999"),
                ("first: 2, after: $c, orderBy: DUE_DATE", "infinity\u0000"),
            )
        ),
        (
            '{ search(text: "task", after: $c) { nodes { rank } } }'.replace(
                "{", "query($c: String) {", 1
            ),
            lambda o: {"c": encode_cursor("not a rank", uuid7())},
        ),
        # Search arguments the resolver refuses.
        ('{ search(text: "task", first: 0) { nodes { rank } } }', {}),
        ('{ search(text: "   ", first: 5) { nodes { rank } } }', {}),
        ('{ search(text: "task", after: "bad") { nodes { rank } } }', {}),
        # The audit log asked for by a viewer (it needs admin): the resolvers' FORBIDDEN.
        ("{ auditLog(first: 2) { nodes { action } } }", {}),
        ('{ auditLog(first: 2, entityId: "nope") { nodes { action } } }', {}),
        # Not compiled at all: node, comment history.
        ("query($id: ID!) { node(id: $id) { id } }", None),
        # Invalid documents and limits (100 x 100 x 100 nodes is over the node limit).
        (
            """query($id: ID!) { project(id: $id) { tasks(first: 100) { nodes { subtasks(first: 100) {
              nodes { comments(first: 100) { nodes { id } } } } } } } }""",
            None,
        ),
        ("{ project { name } }", {}),
        ("{ viewer { user { nope } } }", {}),
    ],
)
async def test_what_is_not_compiled_is_answered_by_the_resolvers(
    apps: Clients, org_a: Org, org_b: Org, query: str, variables: Any
) -> None:
    bad_cursor = callable(variables)
    if bad_cursor:
        variables = variables(org_a)
    compiled, reference = await both(
        apps,
        query,
        variables if variables is not None else {"id": org_a.project},
        org_a.tokens["viewer"],
        org_a.slug,
    )
    for answer in (compiled, reference):
        for error in answer.get("errors", ()):
            error["extensions"].pop("requestId", None)
    assert compiled == reference
    if bad_cursor:
        assert compiled["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT", compiled
        assert "malformed cursor" in compiled["errors"][0]["message"]


async def test_viewer_queries_need_no_tenant_and_tenant_queries_fall_back_without_one(
    apps: Clients, org_a: Org, org_b: Org
) -> None:
    query = (
        "{ viewer { user { email } memberships(first: 5) { nodes { organization { slug } } } } }"
    )
    compiled, _ = await both(apps, query, {}, org_a.tokens["owner"], None)
    assert compiled["data"]["viewer"]["user"]["email"] == org_a.emails["owner"]
    assert compiled["extensions"]["sqlStatements"] == 2
    compiled, _ = await both(apps, "{ organization { slug } }", {}, org_a.tokens["owner"], None)
    assert compiled["errors"][0]["extensions"]["code"] == "FORBIDDEN"


async def test_search_pages_as_the_resolvers_do(apps: Clients, org_a: Org, org_b: Org) -> None:
    """Page after page of a search, compiled and by the resolvers: the same hits, ranks and
    cursors, and never a hit of the other tenant."""
    await enrich(org_a)
    await enrich(org_b)
    query = """query($after: String) { search(text: "task or level", first: 2, after: $after) {
      edges { cursor node { rank node { ... on Task { id title } ... on Project { id name } } } }
      pageInfo { hasNextPage endCursor } } }"""
    for org, other in ((org_a, org_b), (org_b, org_a)):
        after, seen = None, []
        for _ in range(10):
            compiled, _ = await both(apps, query, {"after": after}, org.tokens["viewer"], org.slug)
            assert compiled["extensions"]["sqlStatements"] == 2
            page = compiled["data"]["search"]
            seen += [edge["node"]["node"]["id"] for edge in page["edges"]]
            if not page["pageInfo"]["hasNextPage"]:
                break
            after = page["pageInfo"]["endCursor"]
        assert len(seen) > 2  # more than one page
        assert len(seen) == len(set(seen))
        text = json.dumps(seen)
        assert org.task(0) in text or org.project in text
        assert other.task(0) not in text


AUDIT_PAGE = """query($first: Int, $after: String, $type: AuditEntityType, $entity: ID) {
  auditLog(first: $first, after: $after, entityType: $type, entityId: $entity) {
    totalCount edges { cursor node { id action entityType entityId changes requestId ipAddress
      userAgent createdAt actor { id displayName } } }
    pageInfo { hasNextPage hasPreviousPage startCursor endCursor } } }"""


async def test_the_audit_log_compiles_for_admins_and_pages_as_the_resolvers_do(
    apps: Clients, org_a: Org, org_b: Org
) -> None:
    """auditLog, compiled for admins and owners: page after page, filtered by entity type or
    by entity, the same as the resolvers' answer, and only the caller's own tenant."""
    await enrich(org_a)
    await enrich(org_b)
    for org, other in ((org_a, org_b), (org_b, org_a)):
        for role in ("owner", "admin"):
            after, seen = None, []
            for _ in range(20):
                compiled, _ = await both(
                    apps, AUDIT_PAGE, {"first": 4, "after": after}, org.tokens[role], org.slug
                )
                assert "errors" not in compiled, compiled
                assert compiled["extensions"]["sqlStatements"] == 2
                page = compiled["data"]["auditLog"]
                seen += [edge["node"]["entityId"] for edge in page["edges"]]
                if not page["pageInfo"]["hasNextPage"]:
                    break
                after = page["pageInfo"]["endCursor"]
            assert len(seen) == page["totalCount"] > 4  # several pages, all of them read
            assert org.task(0) in seen
            assert other.task(0) not in seen
            assert other.project not in seen
        for variables, expected in (
            ({"first": 50, "type": "COMMENT"}, {"COMMENT"}),
            ({"first": 50, "entity": org.task(1)}, {"TASK"}),
            ({"first": 50, "entity": other.task(1)}, set()),  # another tenant's task: nothing
        ):
            compiled, _ = await both(apps, AUDIT_PAGE, variables, org.tokens["admin"], org.slug)
            assert compiled["extensions"]["sqlStatements"] == 2
            entries = compiled["data"]["auditLog"]["edges"]
            assert {e["node"]["entityType"] for e in entries} == expected
            if "entity" in variables and expected:
                assert {e["node"]["entityId"] for e in entries} == {org.task(1)}
                assert [e["node"]["action"] for e in entries] == ["UPDATE", "INSERT"]


async def test_a_compiled_audit_log_is_never_served_to_a_role_below_admin(
    apps: Clients, org_a: Org, org_b: Org
) -> None:
    """The rendered statement is cached per query and variables, not per caller: an owner's
    compiled audit page must not be what a member or viewer of the tenant gets next."""
    variables = {"first": 5}
    for org in (org_a, org_b):
        compiled, _ = await both(apps, AUDIT_PAGE, variables, org.tokens["owner"], org.slug)
        assert compiled["extensions"]["sqlStatements"] == 2
        for role in ("member", "viewer"):
            compiled, _ = await both(apps, AUDIT_PAGE, variables, org.tokens[role], org.slug)
            assert compiled["data"] is None
            assert compiled["errors"][0]["extensions"]["code"] == "FORBIDDEN"
