"""Issue 13, "one caller must not stall the server": string maxima on every argument, the task
tree's depth limit as the API reports it, on both read paths where a query is involved."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import httpx
import pytest
from graphql import GraphQLInputObjectType

from api.app import create_app
from api.cost import MAX_STRING, STRING_LIMITS
from api.schema import schema
from api.settings import Settings
from db import passwords
from tests.api.conftest import Api
from tests.api.world import Org


@pytest.fixture(params=["compiled", "resolvers"])
async def both(request: pytest.FixtureRequest, pool: asyncpg.Pool) -> AsyncIterator[Api]:
    settings = Settings(taskql_compiled_queries=request.param == "compiled")
    transport = httpx.ASGITransport(app=create_app(settings), client=("198.51.100.9", 50000))
    async with httpx.AsyncClient(transport=transport, base_url="http://taskql.test") as client:
        yield Api(client)


def codes(body: dict[str, Any]) -> list[str]:
    return [e["extensions"]["code"] for e in body.get("errors", [])]


@pytest.mark.parametrize("where", ["tasks", "projects"])
async def test_a_long_filter_search_is_refused_before_the_database(
    both: Api, org_a: Org, org_b: Org, where: str
) -> None:
    """400 KB in `filter.search` held a connection for the whole statement timeout."""
    text = "billing " * 50_000
    if where == "tasks":
        query = """query($id: ID!, $s: String!) { project(id: $id) {
            tasks(first: 5, filter: {search: $s}) { totalCount } } }"""
        variables: dict[str, Any] = {"id": org_a.project, "s": text}
    else:
        query = """query($s: String!) { organization {
            projects(first: 5, filter: {search: $s}) { totalCount } } }"""
        variables = {"s": text}
    body = await both(query, variables, as_=(org_a, "viewer"))
    assert codes(body) == ["BAD_USER_INPUT"]
    assert "at most 200" in body["errors"][0]["message"]
    assert body.get("data") is None
    # A sane search still runs, in the other tenant too.
    fine = {**variables, "s": "billing"}
    if where == "tasks":
        fine["id"] = org_b.project
    assert "errors" not in await both(query, fine, as_=(org_b, "viewer"))


async def test_literal_strings_and_nested_inputs_are_bounded_too(api: Api, org_a: Org) -> None:
    long = "x" * (MAX_STRING + 1)
    body = await api(
        f'mutation($p: ID!) {{ createTask(input: {{projectId: $p, title: "t", description: "{long}"}}) '
        "{ task { id } } }",
        {"p": org_a.project},
        as_=(org_a, "member"),
    )
    assert codes(body) == ["BAD_USER_INPUT"]
    assert body["errors"][0]["extensions"]["argument"] == "CreateTaskInput.description"
    ids = await api(
        "query($id: ID!) { node(id: $id) { id } }", {"id": "A" * 5000}, as_=(org_a, "viewer")
    )
    assert codes(ids) == ["BAD_USER_INPUT"]


def test_the_string_limits_name_real_fields() -> None:
    """A limit on a field that was renamed would silently stop applying."""
    for where in STRING_LIMITS:
        if "(" in where:
            type_name, rest = where.split(".", 1)
            field, argument = rest.rstrip(")").split("(")
            found = schema._schema.get_type(type_name)
            assert argument in found.fields[field].args, where  # type: ignore[union-attr]
        else:
            type_name, field = where.split(".")
            found = schema._schema.get_type(type_name)
            assert isinstance(found, GraphQLInputObjectType), where
            assert field in found.fields, where


async def test_the_tree_depth_limit_is_a_typed_error(api: Api, org_a: Org, org_b: Org) -> None:
    depth = Settings().taskql_max_task_depth
    created = await api(
        """mutation($p: ID!, $tasks: [BulkTaskInput!]!) {
            createTasks(input: {projectId: $p, tasks: $tasks}) { tasks { id } errors { code path } } }""",
        {
            "p": org_a.project,
            "tasks": [{"title": "root"}]
            + [{"title": f"level {n}", "parentIndex": n - 1} for n in range(1, depth)],
        },
        as_=(org_a, "member"),
    )
    assert created["data"]["createTasks"]["errors"] == []
    tip = created["data"]["createTasks"]["tasks"][-1]["id"]
    deeper = await api(
        """mutation($p: ID!, $parent: ID!) {
            createTask(input: {projectId: $p, title: "too deep", parentId: $parent}) {
                task { id } errors { code path message } } }""",
        {"p": org_a.project, "parent": tip},
        as_=(org_a, "member"),
    )
    error = deeper["data"]["createTask"]["errors"][0]
    assert error["code"] == "BAD_USER_INPUT"
    assert error["path"] == ["input", "parentId"]
    assert "deeper than its limit" in error["message"]
    moved = await api(
        """mutation($id: ID!, $parent: ID!) { moveTask(input: {id: $id, parentId: $parent}) {
            task { id } errors { code path } } }""",
        {"id": org_a.task(0), "parent": tip},
        as_=(org_a, "member"),
    )
    assert moved["data"]["moveTask"]["errors"][0]["path"] == ["input", "parentId"]
    # The other tenant's tree is its own: a chain there starts at depth 1.
    other = await api(
        """mutation($p: ID!) { createTasks(input: {projectId: $p, tasks: [{title: "r"},
            {title: "c", parentIndex: 0}]}) { errors { code } } }""",
        {"p": org_b.project},
        as_=(org_b, "member"),
    )
    assert other["data"]["createTasks"]["errors"] == []


async def test_argon2_runs_with_no_pooled_connection_held(
    api: Api, org_a: Org, org_b: Org, pool: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Log-in held a pooled connection idle in its transaction for the ~150 ms of argon2:
    8 log-ins on a pool of 4 starved every other request. Recorded while the hash runs."""
    in_use: list[int] = []
    verify, hash_ = passwords.verify_password, passwords.hash_password

    def recording_verify(stored: str, password: str) -> bool:
        in_use.append(pool.get_size() - pool.get_idle_size())
        return verify(stored, password)

    def recording_hash(password: str) -> str:
        in_use.append(pool.get_size() - pool.get_idle_size())
        return hash_(password)

    monkeypatch.setattr(passwords, "verify_password", recording_verify)
    monkeypatch.setattr(passwords, "hash_password", recording_hash)
    email = f"argon-{org_a.slug}@example.test"
    signed_up = await api(
        'mutation($e: String!) { signUp(input: {email: $e, password: "long enough password", '
        'displayName: "A"}) { token errors { code } } }',
        {"e": email},
    )
    assert signed_up["data"]["signUp"]["errors"] == []
    for address, password in ((email, "long enough password"), (org_b.emails["owner"], "wrong")):
        logged_in = await api(
            "mutation($e: String!, $p: String!) { logIn(input: {email: $e, password: $p}) "
            "{ token } }",
            {"e": address, "p": password},
        )
        assert (logged_in["data"]["logIn"]["token"] is not None) == (address == email)
    assert in_use == [0, 0, 0]
