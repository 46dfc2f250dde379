"""Issue 11's findings 1, 2, 4 and 9 (and issue 13's fragment fan-out), each a regression test
that failed on c5174a4: the audit actor cannot be forged, the node cost cannot be dodged, a
rolled-back operation never reports a write, and the smaller holes stay closed. Both read
paths are exercised where a query is involved (compiled and resolvers)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import httpx
import pytest
from graphql import GraphQLList, GraphQLNonNull, GraphQLObjectType

from api.app import create_app
from api.cost import LIST_BOUNDS
from api.ids import from_global_id
from api.schema import schema
from api.settings import Settings
from db.tenancy import TenantContext, tenant_transaction
from tests.api.conftest import Api
from tests.api.world import Org


@pytest.fixture(params=["compiled", "resolvers"])
async def both(request: pytest.FixtureRequest, pool: asyncpg.Pool) -> AsyncIterator[Api]:
    """The API with the compiler on, and with it off: a bound must hold on both paths."""
    settings = Settings(taskql_sql_stats=True, taskql_compiled_queries=request.param == "compiled")
    transport = httpx.ASGITransport(app=create_app(settings), client=("198.51.100.7", 50000))
    async with httpx.AsyncClient(transport=transport, base_url="http://taskql.test") as client:
        yield Api(client)


def codes(body: dict[str, Any]) -> list[str]:
    return [e["extensions"]["code"] for e in body.get("errors", [])]


async def audit_actors(org: Org, entity_id: uuid.UUID) -> list[uuid.UUID]:
    async with tenant_transaction(
        TenantContext(organization_id=org.id, user_id=org.users["owner"], role="owner")
    ) as tx:
        rows = await tx.connection.fetch(
            "SELECT actor_id FROM audit_logs WHERE entity_id = $1 ORDER BY created_at", entity_id
        )
    return [r["actor_id"] for r in rows]


# --- finding 1: the audit actor is the authenticated caller, always ----------------------


async def test_sign_up_beside_another_mutation_is_refused_and_writes_nothing(
    api: Api, org_a: Org, org_b: Org
) -> None:
    email = f"throwaway-{uuid.uuid4().hex[:8]}@example.test"
    task_id = from_global_id(org_a.task(0))[1]
    before = await audit_actors(org_a, task_id)
    body = await api(
        """mutation($t: ID!, $e: String!) {
            a: signUp(input: {email: $e, password: "long enough password", displayName: "X"}) {
                token }
            b: updateTask(input: {id: $t, title: "Forged"}) { task { title } }
        }""",
        {"t": org_a.task(0), "e": email},
        as_=(org_a, "member"),
    )
    assert codes(body) == ["BAD_USER_INPUT"]
    assert "only field of its operation" in body["errors"][0]["message"]
    assert body.get("data") is None
    assert await audit_actors(org_a, task_id) == before
    # Nothing was created, and the other tenant's task is untouched too.
    again = await api(
        'mutation($e: String!) { logIn(input: {email: $e, password: "long enough password"}) '
        "{ token errors { code } } }",
        {"e": email},
    )
    assert again["data"]["logIn"]["token"] is None
    task_b = await api(
        "query($id: ID!) { task(id: $id) { title } }", {"id": org_b.task(0)}, as_=(org_b, "owner")
    )
    assert task_b["data"]["task"]["title"] != "Forged"


@pytest.mark.parametrize(
    "document",
    [
        'mutation { logIn(input: {email: "x@example.test", password: "0123456789"}) { token } '
        "logOut { ok } }",
        'mutation { ...F } fragment F on Mutation { a: logIn(input: {email: "x@example.test", '
        'password: "0123456789"}) { token } b: logIn(input: {email: "y@example.test", '
        'password: "0123456789"}) { token } }',
    ],
)
async def test_log_in_is_alone_in_its_operation_even_through_fragments(
    api: Api, org_a: Org, document: str
) -> None:
    body = await api(document, as_=(org_a, "member"))
    assert codes(body) == ["BAD_USER_INPUT"]


async def test_an_authenticated_request_cannot_log_in_as_someone_else(
    api: Api, org_a: Org, org_b: Org
) -> None:
    body = await api(
        'mutation($e: String!) { logIn(input: {email: $e, password: "whatever-password"}) '
        "{ token errors { message code } } }",
        {"e": org_b.emails["owner"]},
        as_=(org_a, "member"),
    )
    assert body["data"]["logIn"]["token"] is None
    assert body["data"]["logIn"]["errors"][0]["code"] == "BAD_USER_INPUT"
    assert "already signed in" in body["data"]["logIn"]["errors"][0]["message"]


async def test_the_database_refuses_to_change_the_acting_user(org_a: Org, org_b: Org) -> None:
    """As the server role: once a user acts in a transaction, app_act_as() refuses another,
    and the audit row of a later write still names the first."""
    member, intruder = org_a.users["member"], org_b.users["owner"]
    task_id = from_global_id(org_a.task(1))[1]
    context = TenantContext(organization_id=org_a.id, user_id=member, role="member")
    async with tenant_transaction(context) as tx:
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="already set"):
            async with tx.connection.transaction():
                await tx.connection.execute("SELECT app_act_as($1)", intruder)
        await tx.connection.execute("UPDATE tasks SET title = 'Kept actor' WHERE id = $1", task_id)
    assert (await audit_actors(org_a, task_id))[-1] == member
    # An anonymous transaction may name its actor once (sign-up, log-in), not twice.
    async with tenant_transaction(TenantContext()) as tx:
        await tx.connection.execute("SELECT app_act_as($1)", member)
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await tx.connection.execute("SELECT app_act_as($1)", intruder)


# --- finding 2: the node cost from coerced variables, defaults and ancestors -------------

DEEP = """query($id: ID!, $n: Int = 100) { project(id: $id) { tasks(first: $n) { nodes {
    subtasks(first: $n) { nodes { comments(first: $n) { nodes { id } } } } } } } }"""


@pytest.mark.parametrize(
    "variables",
    [{}, {"n": 100.0}, {"n": 100}],
    ids=["variable-default", "float", "int"],
)
async def test_the_node_limit_counts_defaults_and_floats(
    both: Api, org_a: Org, org_b: Org, variables: dict[str, Any]
) -> None:
    for org in (org_a, org_b):
        body = await both(DEEP, {"id": org.project, **variables}, as_=(org, "viewer"))
        assert codes(body) == ["BAD_USER_INPUT"], body
        assert body["errors"][0]["extensions"]["cost"] == 100 + 100 * 100 + 100 * 100 * 100
        assert body.get("data") is None


async def test_search_counts_its_default_page_size(both: Api, org_a: Org) -> None:
    """`search(first:)` defaults to 20: omitted, it still counts (it counted 0 before)."""
    inner = "tasks(first: 100) { nodes { comments(first: 100) { nodes { id } } } }"
    query = (
        '{ search(text: "task") { nodes { node { ... on Project { '
        + inner
        + " } ... on Task { subtasks(first: 100) { nodes { id } } } } } } }"
    )
    body = await both(query, as_=(org_a, "viewer"))
    assert codes(body) == ["BAD_USER_INPUT"]
    assert body["errors"][0]["extensions"]["cost"] == 20 + 20 * (100 + 100 * 100 + 100)


async def test_ancestors_count_toward_the_node_cost(both: Api, org_a: Org, org_b: Org) -> None:
    depth = Settings().taskql_max_task_depth
    query = "query($id: ID!) { task(id: $id) { ancestors { ancestors { ancestors { id } } } } }"
    for org in (org_a, org_b):
        body = await both(query, {"id": org.task(0)}, as_=(org, "viewer"))
        assert codes(body) == ["BAD_USER_INPUT"]
        assert body["errors"][0]["extensions"]["cost"] == depth + depth**2 + depth**3
    fine = await both(
        "query($id: ID!) { task(id: $id) { ancestors { title } } }",
        {"id": org_a.task(0)},
        as_=(org_a, "viewer"),
    )
    assert "errors" not in fine
    assert fine["data"]["task"]["ancestors"] == []


def test_every_list_of_objects_has_a_declared_bound() -> None:
    """A list field outside a connection's edges/nodes multiplies what is nested in it: the
    cost must know its bound, so a new one cannot be added uncounted."""
    missing = []
    for type_ in schema._schema.type_map.values():
        if not isinstance(type_, GraphQLObjectType) or type_.name.startswith("__"):
            continue
        for name, field in type_.fields.items():
            field_type = field.type
            if isinstance(field_type, GraphQLNonNull):
                field_type = field_type.of_type
            if not isinstance(field_type, GraphQLList):
                continue
            element = field_type.of_type
            while isinstance(element, GraphQLNonNull | GraphQLList):
                element = element.of_type
            if not isinstance(element, GraphQLObjectType) and not hasattr(element, "fields"):
                continue
            if type_.name.endswith("Connection") and name in ("edges", "nodes"):
                continue
            if name == "errors":
                continue  # mutation payload errors: leaves
            if (type_.name, name) not in LIST_BOUNDS:
                missing.append(f"{type_.name}.{name}")
    assert missing == []


# --- issue 13: fragment fan-out is refused before validation -----------------------------


def fan_out(depth: int) -> str:
    fragments = [f"fragment F{i} on Query {{ ...F{i + 1} ...F{i + 1} }}" for i in range(depth)]
    fragments.append(f"fragment F{depth} on Query {{ __typename }}")
    return "query { ...F0 }\n" + "\n".join(fragments)


@pytest.mark.parametrize("who", ["anonymous", "viewer"])
async def test_fragment_fan_out_is_refused_before_validation(
    both: Api, org_a: Org, who: str
) -> None:
    """2^40 fields after expansion: refused at once with the figure (it took seconds at 16)."""
    as_ = (org_a, "viewer") if who == "viewer" else None
    body = await both(fan_out(40), as_=as_)
    assert codes(body) == ["BAD_USER_INPUT"]
    assert body["errors"][0]["extensions"]["fields"] == 2**40
    small = await both(fan_out(4), as_=as_)
    assert "errors" not in small
    assert small["data"] == {"__typename": "Query"}


# --- finding 4: a rolled-back operation never reports a write ----------------------------


async def test_every_payload_of_a_rolled_back_operation_says_so(
    api: Api, org_a: Org, org_b: Org
) -> None:
    body = await api(
        """mutation($p: ID!) {
            a: createTask(input: {projectId: $p, title: "Reported then undone"}) {
                task { id title } errors { __typename message code path } }
            b: createProject(input: {name: "Members cannot"}) { project { id } errors { code } }
        }""",
        {"p": org_a.project},
        as_=(org_a, "member"),
    )
    assert body["data"]["a"] == {
        "task": None,
        "errors": [
            {
                "__typename": "RolledBackError",
                "message": "not saved: another mutation of this operation failed, so the "
                "whole operation was rolled back",
                "code": "ROLLED_BACK",
                "path": [],
            }
        ],
    }
    assert body["data"]["b"] == {"project": None, "errors": [{"code": "FORBIDDEN"}]}
    for org in (org_a, org_b):
        found = await api(
            'query { search(text: "Reported then undone", first: 5) { totalCount } }',
            as_=(org, "owner"),
        )
        assert found["data"]["search"]["totalCount"] == 0


async def test_a_payload_without_errors_selected_still_hides_the_undone_write(
    api: Api, org_a: Org
) -> None:
    body = await api(
        """mutation($p: ID!, $t: ID!) {
            a: createTasks(input: {projectId: $p, tasks: [{title: "One"}, {title: "Two"}]}) {
                tasks { id } }
            b: moveTask(input: {id: $t, parentId: $t}) { task { id } }
        }""",
        {"p": org_a.project, "t": org_a.task(0)},
        as_=(org_a, "member"),
    )
    assert body["data"]["a"] == {"tasks": []}


# --- finding 9: the smaller ones ---------------------------------------------------------


async def test_two_operations_without_an_operation_name_are_an_error(both: Api, org_a: Org) -> None:
    document = "query A { viewer { user { id } } } query B { viewer { user { email } } }"
    body = await both(document, as_=(org_a, "viewer"))
    assert codes(body) == ["BAD_USER_INPUT"]
    assert "operationName" in body["errors"][0]["message"]
    assert body.get("data") is None
    named = await both.client.post(
        "/graphql",
        json={"query": document, "operationName": "B"},
        headers={"Authorization": f"Bearer {org_a.tokens['viewer']}"},
    )
    assert set(named.json()["data"]["viewer"]["user"]) == {"email"}


@pytest.mark.parametrize("title", ["\u200b\u200b", " \u2060\ufeff ", "\u00a0\u3000", "\u200d"])
async def test_invisible_titles_are_refused_by_the_api_and_the_database(
    api: Api, org_a: Org, org_b: Org, title: str
) -> None:
    body = await api(
        "mutation($p: ID!, $t: String!) { createTask(input: {projectId: $p, title: $t}) "
        "{ task { id } errors { code path } } }",
        {"p": org_a.project, "t": title},
        as_=(org_a, "member"),
    )
    assert body["data"]["createTask"] == {
        "task": None,
        "errors": [{"code": "BAD_USER_INPUT", "path": ["input", "title"]}],
    }
    context = TenantContext(organization_id=org_b.id, user_id=org_b.users["member"], role="member")
    with pytest.raises(asyncpg.CheckViolationError, match="tasks_title_visible"):
        async with tenant_transaction(context) as tx:
            await tx.connection.execute(
                "UPDATE tasks SET title = $1 WHERE id = $2", title, org_b.task_ids[0]
            )


async def test_introspection_and_graphiql_can_be_closed_to_anonymous_callers(
    pool: asyncpg.Pool, org_a: Org
) -> None:
    introspect = {"query": "{ __schema { queryType { name } } }"}
    for public in (True, False):
        settings = Settings(taskql_public_introspection=public)
        transport = httpx.ASGITransport(app=create_app(settings), client=("198.51.100.7", 1))
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            anonymous = (await client.post("/graphql", json=introspect)).json()
            signed_in = (
                await client.post(
                    "/graphql",
                    json=introspect,
                    headers={"Authorization": f"Bearer {org_a.tokens['viewer']}"},
                )
            ).json()
            page = await client.get("/graphql", headers={"Accept": "text/html"})
        assert signed_in["data"]["__schema"]["queryType"]["name"] == "Query"
        if public:
            assert anonymous["data"]["__schema"]["queryType"]["name"] == "Query"
            assert page.status_code == 200
            assert "graphiql" in page.text.lower()
        else:
            assert codes(anonymous) == ["UNAUTHENTICATED"]
            assert page.status_code == 404
