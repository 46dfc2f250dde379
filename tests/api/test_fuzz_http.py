"""Issue 13's property test: generated bodies, documents, variables and headers thrown at the
app (in-process, both read paths), as members of two tenants, strangers and anonymous
callers. Whatever arrives: no 5xx other than a deliberate 503, never INTERNAL_SERVER_ERROR,
never a stack trace or driver text, always GraphQL JSON, and no partial write (audit rows
for the request id only when the response reported success)."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from api.app import create_app
from api.settings import Settings
from tests.api.world import Org

FORBIDDEN_TEXT = (
    "INTERNAL_SERVER_ERROR",
    "Traceback",
    'File "',
    "asyncpg",
    "codec",
    "query argument",
    "SQLSTATE",
    "Unexpected error",
)

DOCUMENTS = [
    "{ __typename }",
    "{ viewer { user { id displayName } } }",
    "query($p: ID!) { project(id: $p) { name tasks(first: 3) { totalCount nodes { title } } } }",
    "query($t: String!, $n: Int!) { search(text: $t, first: $n) { totalCount } }",
    "query($p: ID!, $d: DateTime, $s: String) { project(id: $p) { tasks(first: 2, "
    "filter: {dueBefore: $d, search: $s}) { totalCount } } }",
    "query($id: ID!) { node(id: $id) { id ... on Task { title } } }",
    "query($id: ID!) { task(id: $id) { title ancestors { id } } }",
    "mutation($id: ID!, $t: String) { updateTask(input: {id: $id, title: $t}) "
    "{ task { title } errors { message code } } }",
    "mutation($p: ID!, $t: String!) { createTask(input: {projectId: $p, title: $t}) "
    "{ task { id } errors { message code } } }",
    "mutation($id: ID!, $c: String!) { addComment(input: {taskId: $id, content: $c}) "
    "{ comment { id } errors { message code } } }",
    "mutation($e: String!, $w: String!) { logIn(input: {email: $e, password: $w}) "
    "{ token errors { code } } }",
    "query($s: Boolean!) { viewer @skip(if: $s) { user { id } } }",
    "{ ...F } fragment F on Query { viewer { user { id } } }",
    "{ ...Missing }",
]

JSON_LEAVES = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
    | st.sampled_from(["a\u0000b", "\ud800", "2026-13-45T99:00:00Z", "", " ", "9" * 80])
)
JSON = st.recursive(
    JSON_LEAVES,
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3)
    ),
    max_leaves=8,
)


def mangled(document: str) -> st.SearchStrategy[str]:
    """The document as is, cut short, or with random text spliced in."""
    return st.one_of(
        st.just(document),
        st.integers(0, len(document)).map(lambda n: document[:n]),
        st.tuples(st.integers(0, len(document)), st.text(max_size=8)).map(
            lambda cut: document[: cut[0]] + cut[1] + document[cut[0] :]
        ),
    )


@st.composite
def requests(draw: st.DrawFn, orgs: tuple[Org, Org]) -> dict[str, Any]:
    org_a, org_b = orgs
    ids = [
        org_a.project,
        org_b.project,
        org_a.task(0),
        org_b.task(1),
        org_a.user("member"),
        "garbage",
        "",
    ]
    document = draw(st.sampled_from(DOCUMENTS).flatmap(mangled))
    variables = draw(
        st.dictionaries(
            st.sampled_from(["p", "id", "t", "n", "d", "s", "c", "e", "w", "x"]),
            st.sampled_from(ids) | JSON,
            max_size=5,
        )
    )
    operation: Any = {"query": document, "variables": variables}
    extra = draw(st.sampled_from(["none", "operationName", "extensions", "junk"]))
    if extra != "none":
        operation[extra if extra != "junk" else draw(st.text(max_size=5))] = draw(JSON)
    kind = draw(st.sampled_from(["operation"] * 6 + ["json", "bytes", "get"]))
    body: bytes | None
    if kind == "operation":
        body = json.dumps(operation).encode()
    elif kind == "json":
        body = json.dumps(draw(JSON)).encode()
    elif kind == "bytes":
        body = draw(st.binary(max_size=60))
    else:
        body = None
    sender = draw(
        st.sampled_from(
            [(org, role) for org in orgs for role in ("owner", "member", "viewer")]
            + [None, "stranger", "garbage"]
        )
    )
    headers: dict[str, bytes] = {}
    if isinstance(sender, tuple):
        org, role = sender
        headers["authorization"] = f"Bearer {org.tokens[role]}".encode()
        other = org_b if org is org_a else org_a
        headers["x-organization"] = draw(
            st.sampled_from([org.slug, other.slug, "", "x\u00e9"])
        ).encode("latin-1")
    elif sender == "stranger":
        headers["x-organization"] = org_a.slug.encode()
    elif sender == "garbage":
        headers["authorization"] = draw(st.sampled_from([b"Bearer", b"Basic abc", b"Bearer \xff"]))
    headers["content-type"] = draw(
        st.sampled_from(
            [
                b"application/json",
                b"application/json; charset=utf-8",
                b"application/json; charset=latin-1",
                b"text/plain",
                b"application/graphql",
                b"",
            ]
        )
    )
    headers["accept"] = draw(
        st.sampled_from(
            [
                b"application/json",
                b"application/graphql-response+json",
                b"application/graphql-response+json, application/json;q=0.9",
                b"*/*",
                b"text/html;q=0.1",
                b"",
            ]
        )
    )
    headers["user-agent"] = draw(
        st.binary(max_size=30).map(lambda b: bytes(c for c in b if c >= 0x20 and c != 0x7F))
    )
    return {"kind": kind, "body": body, "operation": operation, "headers": headers}


@pytest.fixture(params=["compiled", "resolvers"])
async def client(
    request: pytest.FixtureRequest, pool: asyncpg.Pool
) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(Settings(taskql_compiled_queries=request.param == "compiled"))
    transport = httpx.ASGITransport(app=app, client=("198.51.100.7", 50000))
    async with httpx.AsyncClient(transport=transport, base_url="http://taskql.test") as client:
        yield client


def succeeded(body: Any) -> bool:
    """The response reports every write it asked for as done."""
    if not isinstance(body, dict) or body.get("errors") or not isinstance(body.get("data"), dict):
        return False
    return all(
        not (isinstance(payload, dict) and payload.get("errors"))
        for payload in body["data"].values()
    )


@settings(
    max_examples=150,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
async def test_generated_requests_never_break_the_server(
    client: httpx.AsyncClient,
    org_a: Org,
    org_b: Org,
    maintenance: asyncpg.Connection,
    data: st.DataObject,
) -> None:
    generated = data.draw(requests((org_a, org_b)))
    request_id = uuid.uuid4().hex
    headers = {**generated["headers"], "x-request-id": request_id.encode()}
    if generated["kind"] == "get":
        operation = generated["operation"]
        params = {"query": operation["query"], "variables": json.dumps(operation["variables"])}
        response = await client.get("/graphql", params=params, headers=headers)
    else:
        response = await client.post("/graphql", content=generated["body"], headers=headers)

    assert response.status_code < 500 or response.status_code == 503, response.text
    for text in FORBIDDEN_TEXT:
        assert text not in response.text, response.text
    if response.headers.get("content-type", "").startswith("text/html"):
        assert generated["kind"] == "get"  # GraphiQL, for a browser's GET without a query
        return
    assert response.headers["content-type"] in (
        "application/json",
        "application/graphql-response+json",
    ), response.text
    body = response.json()
    if response.status_code == 503:
        assert body["errors"][0]["extensions"]["code"] == "SERVICE_UNAVAILABLE"
        assert "retry-after" in response.headers
    if response.status_code != 200:
        assert "data" not in body or body["data"] is None
        assert all(e["extensions"]["code"] for e in body["errors"])

    rows = await maintenance.fetchval(
        "SELECT count(*) FROM audit_logs WHERE request_id = $1", request_id
    )
    if rows:
        assert response.status_code == 200, (rows, body)
        assert succeeded(body), (rows, body)
