"""Regressions of issue 12's mismatch classes: what the compiled path and the resolvers
answered differently (or with a 500), each now one rule for both paths. Every test runs on
both paths (``both``) and as members of two tenants."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from typing import Any

import asyncpg
import pytest

from api.app import create_app
from api.pagination import decode_cursor, encode_cursor
from api.settings import Settings
from db.uuid7 import uuid7
from tests.api.conftest import Api, api_client
from tests.api.test_compiled import enrich
from tests.api.world import Org


@pytest.fixture
def both(read_api: Api) -> Api:
    """The API with compiled queries on, and off (``tests/api/conftest.py``)."""
    return read_api


def codes(body: dict[str, Any]) -> list[str]:
    return [e["extensions"]["code"] for e in body.get("errors", ())]


@pytest.mark.parametrize("directive", ["skip", "include"])
async def test_a_null_variable_in_skip_or_include_is_bad_user_input(
    both: Api, org_a: Org, org_b: Org, directive: str
) -> None:
    query = f"query($d: Boolean = true) {{ organization {{ slug @{directive}(if: $d) }} }}"
    for org in (org_a, org_b):
        body = await both(query, {"d": None}, as_=(org, "viewer"))
        assert codes(body) == ["BAD_USER_INPUT"], body
        assert body["data"] is None
        assert "$d" in body["errors"][0]["message"]
        # Omitted, the variable's default applies.
        body = await both(query, {}, as_=(org, "viewer"))
        assert "errors" not in body, body


@pytest.mark.parametrize(
    ("argument", "definition"),
    [
        ("orderBy: $v", "$v: TaskOrderField"),
        ("direction: $v", "$v: Direction"),
        ("filter: {unassigned: $v}", "$v: Boolean"),
        ("filter: {rootOnly: $v}", "$v: Boolean = true"),
    ],
)
async def test_null_for_a_non_null_argument_with_a_default_is_bad_user_input(
    both: Api, org_a: Org, org_b: Org, argument: str, definition: str
) -> None:
    query = (
        f"query($p: ID!, {definition}) {{ project(id: $p) {{ "
        f"tasks(first: 2, {argument}) {{ nodes {{ title }} }} }} }}"
    )
    for org in (org_a, org_b):
        body = await both(query, {"p": org.project, "v": None}, as_=(org, "member"))
        assert codes(body) == ["BAD_USER_INPUT"], body
        assert body["data"] is None
        body = await both(query, {"p": org.project}, as_=(org, "member"))
        assert "errors" not in body, body
        assert len(body["data"]["project"]["tasks"]["nodes"]) == 2


HAND_MADE_KEYS = [
    ("", "2025-01-01 00:00:00+16"),
    ("", "2025-01-01 00:00:00+15:60"),
    ("", "\u0662\u0660\u0662\u0665-01-01 00:00:00+00"),
    ("orderBy: PRIORITY", "\u0661"),
    ("orderBy: PRIORITY", "1_0"),
    ("orderBy: DUE_DATE", "\ud800"),
]


@pytest.mark.parametrize(("order", "key"), HAND_MADE_KEYS)
async def test_hand_made_task_cursors_postgresql_would_refuse_are_bad_user_input(
    both: Api, org_a: Org, org_b: Org, order: str, key: str
) -> None:
    cursor = encode_cursor(key, uuid7()) if key != "\ud800" else _ascii_cursor(key)
    query = (
        "query($p: ID!, $c: String) { project(id: $p) { name "
        f"tasks(first: 2, after: $c {', ' + order if order else ''}) {{ nodes {{ id }} }} }} }}"
    )
    for org in (org_a, org_b):
        body = await both(query, {"p": org.project, "c": cursor}, as_=(org, "viewer"))
        assert codes(body) == ["BAD_USER_INPUT"], body
        assert "malformed cursor" in body["errors"][0]["message"]
        # One field's error, not the whole operation's.
        assert body["data"] == {"project": None} or body["data"]["project"]["name"], body


@pytest.mark.parametrize("key", ["1e-50", "1_0", "\u0661", "3.5e38", "-1e-46"])
async def test_hand_made_search_cursors_postgresql_would_refuse_are_bad_user_input(
    both: Api, org_a: Org, org_b: Org, key: str
) -> None:
    query = 'query($c: String) { search(text: "task", after: $c) { nodes { rank } } }'
    for org in (org_a, org_b):
        body = await both(query, {"c": encode_cursor(key, uuid7())}, as_=(org, "viewer"))
        assert codes(body) == ["BAD_USER_INPUT"], body


def _ascii_cursor(key: str) -> str:
    """A cursor as the old encoding wrote it (``\\u`` escapes): how a lone surrogate can be
    sent at all."""
    text = json.dumps([key, str(uuid7())])
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def test_a_cursor_is_encoded_as_the_compiled_path_encodes_it() -> None:
    row = uuid7()
    cursor = encode_cursor('h\u00e9llo \u2603\n"x"', row)
    padded = cursor + "=" * (-len(cursor) % 4)
    # gql_cursor: '[' || to_json(key) || ', "' || id || '"]', UTF-8, base64url unpadded.
    assert base64.urlsafe_b64decode(padded).decode() == f'["h\u00e9llo \u2603\\n\\"x\\"", "{row}"]'
    assert decode_cursor(cursor, "text") == ('h\u00e9llo \u2603\n"x"', row)


async def test_non_ascii_sort_keys_page_with_the_same_cursors_on_both_paths(
    pool: asyncpg.Pool, org_a: Org, org_b: Org
) -> None:
    """Projects ordered by name, names beyond ASCII: both paths hand out the same cursors,
    and each path continues from the other's."""
    import httpx

    from db import tables
    from db.tenancy import TenantContext, request_transaction

    for org in (org_a, org_b):
        context = TenantContext(organization_id=org.id, user_id=org.users["owner"], role="owner")
        async with request_transaction(context):
            await tables.Project.insert(
                *[
                    tables.Project(
                        id=uuid7(),
                        organization_id=org.id,
                        name=name,
                        created_by=org.users["owner"],
                    )
                    for name in ("\u00c9t\u00e9", "\u65e5\u672c", "Z\u00fcrich \u2603")
                ]
            )
    query = """query($after: String) { organization { projects(first: 1, orderBy: NAME,
      direction: ASC, after: $after) { edges { cursor node { name } } } } }"""
    answers: dict[bool, list[Any]] = {}
    for compiled in (True, False):
        app = create_app(Settings(taskql_compiled_queries=compiled))
        transport = httpx.ASGITransport(app=app, client=("198.51.100.7", 50000))
        async with httpx.AsyncClient(transport=transport, base_url="http://t.test") as client:
            api = Api(client)
            pages, after = [], None
            for _ in range(5):
                body = await api(query, {"after": after}, as_=(org_a, "viewer"))
                edges = body["data"]["organization"]["projects"]["edges"]
                if not edges:
                    break
                pages.append(edges)
                after = edges[0]["cursor"]
            answers[compiled] = pages
    assert answers[True] == answers[False]
    assert [p[0]["node"]["name"] for p in answers[True]] == [
        "Launch a",
        "Z\u00fcrich \u2603",
        "\u00c9t\u00e9",
        "\u65e5\u672c",
    ]


async def test_an_input_error_beside_a_shared_loader_lookup_is_no_500(
    both: Api, org_a: Org, org_b: Org
) -> None:
    """One field fails with an input error while siblings wait on the same DataLoader
    lookup (the project's creator, under two parents): graphql-core cancels the failing
    field's siblings; the shared future must not be cancelled for the other parent."""
    query = """query($p: ID!) {
      one: project(id: $p) { createdBy { id } tasks(first: 2, after: "bad") { nodes { id } } }
      two: project(id: $p) { createdBy { id } } }"""
    for org in (org_a, org_b):
        response = await both.post(
            query, {"p": org.project}, token=org.tokens["viewer"], org=org.slug
        )
        assert response.status_code == 200, response.text
        body = response.json()
        assert codes(body) == ["BAD_USER_INPUT"], body
        assert body["data"]["two"] == {"createdBy": {"id": org.user("owner")}}


@pytest.mark.parametrize(
    "date",
    [
        "0001-01-01T00:00:00+00:00",
        "0001-01-01T00:00:00",
        "0001-01-01T00:00:00+05:00",
        "9999-12-31T23:59:59.999999+00:00",
        "9999-12-31T23:59:59-05:00",
    ],
)
async def test_dates_postgresql_would_store_as_infinity_are_bad_user_input(
    both: Api, org_a: Org, org_b: Org, date: str
) -> None:
    reads: list[tuple[str, Callable[[Org], dict[str, Any]]]] = [
        (
            "query($p: ID!, $d: DateTime) { project(id: $p) { "
            "tasks(first: 5, filter: {dueBefore: $d}) { nodes { id } } } }",
            lambda o: {"p": o.project, "d": date},
        ),
        (
            "query($p: ID!) { project(id: $p) { "
            f'tasks(first: 5, filter: {{dueAfter: "{date}"}}) {{ nodes {{ id }} }} }} }}',
            lambda o: {"p": o.project},
        ),
    ]
    write = """mutation($p: ID!, $d: DateTime) { createTask(input: {projectId: $p, title: "x",
      dueDate: $d}) { task { dueDate } errors { code } } }"""
    for org in (org_a, org_b):
        for query, variables in reads:
            body = await both(query, variables(org), as_=(org, "member"))
            assert codes(body) == ["BAD_USER_INPUT"], body
            assert "0001-01-01" in body["errors"][0]["message"], body
        body = await both(write, {"p": org.project, "d": date}, as_=(org, "member"))
        assert codes(body) == ["BAD_USER_INPUT"], body
        assert body["data"] is None


async def test_dates_just_inside_the_range_are_stored_and_read_alike(
    both: Api, org_a: Org, org_b: Org
) -> None:
    await enrich(org_a)
    write = """mutation($p: ID!, $d: DateTime) { createTask(input: {projectId: $p, title: "edge",
      dueDate: $d}) { task { id dueDate } errors { code } } }"""
    read = "query($t: ID!) { task(id: $t) { dueDate } }"
    for org in (org_a, org_b):
        for date, expected in (
            ("0001-01-01T00:00:00.000001+00:00", "0001-01-01T00:00:00.000001+00:00"),
            ("9999-12-31T23:59:59.999998+00:00", "9999-12-31T23:59:59.999998+00:00"),
        ):
            body = await both(write, {"p": org.project, "d": date}, as_=(org, "member"))
            task = body["data"]["createTask"]["task"]
            assert task["dueDate"] == expected, body
            again = await both(read, {"t": task["id"]}, as_=(org, "member"))
            assert again["data"]["task"]["dueDate"] == expected, again


async def test_an_input_error_beside_a_running_batch_ends_the_transaction_after_it(
    both: Api, org_a: Org, org_b: Org
) -> None:
    """A field fails while a sibling's DataLoader batch is running on the operation's
    connection: the transaction ends after that statement, not beside it (which was
    "another operation is in progress", answered as an unavailable database, 503)."""
    query = """{ viewer { memberships { nodes { role } }
      invitations(first: 3) { nodes { email } }
      user { email } } }"""
    for org in (org_a, org_b):
        for _ in range(5):
            response = await both.post(query, token=org.tokens["member"], org=org.slug)
            assert response.status_code == 200, response.text
            body = response.json()
            assert codes(body) == ["BAD_USER_INPUT"], body


NODE_AND_HISTORY = """
query($id: ID!) {
  node(id: $id) {
    __typename id
    ... on Comment { content deletedAt author { displayName } history { content replacedAt replacedBy { displayName } } }
    ... on Task { title comments(first: 5) { nodes { content history { content replacedAt } } } }
    ... on Node { id }
  }
}
"""


async def test_node_and_comment_history_are_compiled_and_answer_alike(
    pool: asyncpg.Pool, org_a: Org, org_b: Org
) -> None:
    """node(id:) and Comment.history are answered by ONE compiled statement (the compiler
    prepares them), with the resolvers' answer, for an edited and a deleted comment, a
    task, and ids of the other tenant (null)."""
    from api.compiler import Compiler
    from api.ids import to_global_id
    from api.schema import build_schema

    compiler = Compiler(build_schema(Settings())._schema, Settings())
    for org in (org_a, org_b):
        await enrich(org)
    answers: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for compiled in (True, False):
        async with api_client(compiled) as api:
            for org, other in ((org_a, org_b), (org_b, org_a)):
                targets = [
                    to_global_id("Comment", org.comment_ids[0]),
                    to_global_id("Comment", org.comment_ids[1]),
                    to_global_id("Task", org.task_ids[0]),
                    to_global_id("Comment", other.comment_ids[0]),
                ]
                for target in targets:
                    variables = {"id": target}
                    assert compiler.prepare(NODE_AND_HISTORY, None, variables, org.id, uuid7())
                    body = await api(NODE_AND_HISTORY, variables, as_=(org, "viewer"))
                    assert "errors" not in body, body
                    answers.setdefault((org.label, target), []).append(body)
    for (label, target), (compiled_body, reference) in answers.items():
        assert compiled_body["data"] == reference["data"], (label, target)
        assert compiled_body["extensions"]["sqlStatements"] == 2  # the request set-up and ONE query

    def node(org: Org, type_name: str, raw: Any) -> Any:
        return answers[(org.label, to_global_id(type_name, raw))][0]["data"]["node"]

    edited = node(org_a, "Comment", org_a.comment_ids[0])
    assert edited["content"] == "edited"
    assert len(edited["history"]) == 1
    deleted = node(org_a, "Comment", org_a.comment_ids[1])
    assert (deleted["content"], deleted["author"], deleted["history"]) == (None, None, [])
    assert node(org_a, "Comment", org_b.comment_ids[0]) is None
    assert node(org_b, "Comment", org_a.comment_ids[0]) is None


async def test_variables_that_coerce_alike_share_one_compiled_statement() -> None:
    """Variables are coerced once: ``100.0`` and ``100`` (an Int), and a default given or
    left out, are one statement in the compiler's cache, rendered from the coerced values."""
    from api.compiler import Compiler
    from api.schema import build_schema

    compiler = Compiler(build_schema(Settings())._schema, Settings())
    query = "query($n: Int = 7) { project(id: $id) { tasks(first: $n) { totalCount } } }"
    query = query.replace("query($n: Int = 7)", "query($id: ID!, $n: Int = 7)")
    project = "UHJvamVjdDowMTlhZTAwMC0wMDAwLTcwMDAtODAwMC0wMDAwMDAwMDAwMDA"
    tenant, viewer = uuid7(), uuid7()
    first = compiler.prepare(query, None, {"id": project, "n": 100}, tenant, viewer)
    second = compiler.prepare(query, None, {"id": project, "n": 100.0}, tenant, viewer)
    assert first is not None
    assert second is not None
    assert first == second
    made = compiler.plans_made
    default = compiler.prepare(query, None, {"id": project}, tenant, viewer)
    explicit = compiler.prepare(query, None, {"id": project, "n": 7}, tenant, viewer)
    assert default == explicit
    assert default is not None
    assert compiler.plans_made == made  # one plan for the document
    assert len(compiler._by_coerced) == 2  # 100 and 7: two statements, four requests


def test_requests_the_compiler_cannot_answer_never_enter_its_statement_cache() -> None:
    """A mutation (the resolvers answer it) comes with new variables every time: none of its
    requests is remembered, so a stream of writes never pushes the queries' compiled
    statements out of the cache (a query prepared before them is still there after)."""
    from api.compiler import Compiler
    from api.ids import to_global_id
    from api.schema import build_schema

    compiler = Compiler(build_schema(Settings())._schema, Settings(), cache_size=10)
    tenant, viewer = uuid7(), uuid7()
    query = "query($id: ID!) { project(id: $id) { name } }"
    read = {"id": to_global_id("Project", uuid7())}
    assert compiler.prepare(query, None, read, tenant, viewer) is not None
    cached = dict(compiler._statements)
    write = "mutation($id: ID!, $n: String!) { updateTask(input: {id: $id, title: $n}) { task { id } } }"
    for i in range(50):
        variables = {"id": to_global_id("Task", uuid7()), "n": f"title {i}"}
        assert compiler.prepare(write, None, variables, tenant, viewer) is None
    assert compiler._statements == cached
    assert compiler.prepare(query, None, read, tenant, viewer) is not None


def test_a_read_back_is_rendered_once_and_binds_each_writes_ids() -> None:
    """The read-back of a mutation payload is rendered once per query and other variables;
    each write's ids are bound in the places of the stand-ins: the statement and parameters
    are those a render with that write's ids gives, and a second write's ids replace the
    first's everywhere (nothing of one write is left in the next)."""
    from api.compiler import Compiler
    from api.ids import to_global_id
    from api.schema import build_schema

    compiler = Compiler(build_schema(Settings())._schema, Settings())
    query = (
        "query TaskqlReadBack($taskqlReadBack0: ID!, $n: Int) { r0: node(id: $taskqlReadBack0) "
        "{ ... on Task { id title subtasks(first: $n) { nodes { id } } } } }"
    )
    tenant, viewer = uuid7(), uuid7()
    first, second = uuid7(), uuid7()
    for raw in (first, second):
        ids = {"taskqlReadBack0": to_global_id("Task", raw)}
        cached = compiler.read_back(query, {"n": 5}, tenant, viewer, "member", ids)
        rendered = compiler._read_back_rendered(query, {"n": 5, **ids}, tenant, viewer, "member")
        assert cached is not None
        assert cached == rendered
        assert raw in cached[1]
        assert ({first, second} - {raw}).isdisjoint(cached[1])
    assert len(compiler._read_back_statements) == 1
    # Another id type is another statement; an id that does not decode is refused as before.
    other = {"taskqlReadBack0": to_global_id("Comment", first)}
    assert compiler.read_back(query, {"n": 5}, tenant, viewer, "member", other) == (
        compiler._read_back_rendered(query, {"n": 5, **other}, tenant, viewer, "member")
    )
    assert len(compiler._read_back_statements) == 2
