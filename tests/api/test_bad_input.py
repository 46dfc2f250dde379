"""Issue 13, "Every bad input gets a clear error, never a 500": each case seen as a plain-text
500 or an INTERNAL_SERVER_ERROR on c5174a4, on both read paths (compiled and resolvers), as an
authenticated member of one of two tenants and anonymously."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import httpx
import pytest

from api.app import create_app
from api.settings import Settings
from tests.api.conftest import Api
from tests.api.world import Org

DRIVER_WORDS = ("asyncpg", "Traceback", "codec", "query argument", "sys.set_int_max_str_digits")


@pytest.fixture(params=["compiled", "resolvers"])
async def both(request: pytest.FixtureRequest, pool: asyncpg.Pool) -> AsyncIterator[Api]:
    settings = Settings(taskql_compiled_queries=request.param == "compiled")
    transport = httpx.ASGITransport(app=create_app(settings), client=("198.51.100.7", 50000))
    async with httpx.AsyncClient(transport=transport, base_url="http://taskql.test") as client:
        yield Api(client)


def headers(org: Org | None, content_type: str = "application/json") -> dict[str, str]:
    sent = {"content-type": content_type}
    if org is not None:
        sent["Authorization"] = f"Bearer {org.tokens['member']}"
        sent["X-Organization"] = org.slug
    return sent


def only_error(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code < 500, response.text
    assert response.headers["content-type"].startswith("application/json"), response.text
    for word in DRIVER_WORDS:
        assert word not in response.text
    body = response.json()
    assert [e["extensions"]["code"] for e in body["errors"]] == ["BAD_USER_INPUT"], body
    error: dict[str, Any] = body["errors"][0]
    return error


SEARCH = "query($t: String!) { search(text: $t, first: 1) { totalCount } }"
TASKS = """query($p: ID!, $d: DateTime, $n: Int!) {
    project(id: $p) { tasks(first: $n, filter: {dueBefore: $d}) { totalCount } } }"""

#: (name, body, content type, status, words of the message)
BODIES = [
    ("null", b"null", "application/json", 400, "JSON object"),
    ("a number", b"42", "application/json", 400, "not a number"),
    ("a string", b'"x"', "application/json", 400, "not a string"),
    ("a batch", b"[]", "application/json", 400, "batched"),
    ("invalid UTF-8", b'{"query": "{ __typename \xff }"}', "application/json", 400, "UTF-8"),
    ("UTF-16", '{"query": "{ __typename }"}'.encode("utf-16"), "application/json", 400, "UTF-8"),
    (
        "charset latin-1",
        '{"query": "{ __typename } # \u00e9"}'.encode("latin-1"),
        "application/json; charset=latin-1",
        415,
        "charset=latin-1",
    ),
    (
        "JSON 5,000 deep",
        b'{"query": "{ __typename }", "variables": {"a": ' + b"[" * 5000 + b"]" * 5000 + b"}}",
        "application/json",
        400,
        "deeper than",
    ),
    (
        "a 5,000-digit number",
        b'{"query": "{ __typename }", "variables": {"a": ' + b"9" * 5000 + b"}}",
        "application/json",
        400,
        "digits",
    ),
    ("not JSON", b"{not json", "application/json", 400, "not JSON"),
    ("no query", b"{}", "application/json", 400, "no `query`"),
    ("a query that is no string", b'{"query": 1}', "application/json", 400, "`query`"),
    (
        "extensions that are no object",
        b'{"query": "{ viewer { user { id } } }", "extensions": 3}',
        "application/json",
        400,
        "`extensions`",
    ),
    ("text/plain", b"{ __typename }", "text/plain", 415, "application/json"),
]


@pytest.mark.parametrize("signed_in", [True, False], ids=["member", "anonymous"])
@pytest.mark.parametrize(
    ("body", "content_type", "status", "words"),
    [case[1:] for case in BODIES],
    ids=[case[0] for case in BODIES],
)
async def test_a_malformed_request_is_a_graphql_json_4xx(
    both: Api,
    org_a: Org,
    org_b: Org,
    signed_in: bool,
    body: bytes,
    content_type: str,
    status: int,
    words: str,
) -> None:
    response = await both.client.post(
        "/graphql", content=body, headers=headers(org_a if signed_in else None, content_type)
    )
    assert response.status_code == status, response.text
    error = only_error(response)
    assert words in error["message"]
    assert "data" not in response.json()  # a request error: GraphQL over HTTP has no data


#: (name, document, variables, words of the message)
DOCUMENTS = [
    ("an unknown fragment", "{ ...Nope }", {}, "Unknown fragment 'Nope'"),
    ("a NUL in a variable", SEARCH, {"t": "a\u0000b"}, "variable $t contains a NUL"),
    ("a lone surrogate in a variable", SEARCH, {"t": "a\ud800b"}, "unpaired surrogate"),
    (
        "a NUL in a literal",
        '{ search(text: "a\\u0000b", first: 1) { totalCount } }',
        {},
        "contains a NUL",
    ),
    (
        "a 5,000-digit literal",
        '{ search(text: "x", first: ' + "9" * 5000 + ") { totalCount } }",
        {},
        "over 64 digits",
    ),
    ("a DateTime that does not parse", TASKS, {"d": "nope", "n": 1}, "DateTime"),
    ("a string for an Int", TASKS, {"n": "x"}, "Int cannot represent"),
    (
        "a missing @skip variable",
        "query($s: Boolean!) { viewer @skip(if: $s) { user { id } } }",
        {},
        "'$s'",
    ),
]


@pytest.mark.parametrize(
    ("document", "variables", "words"),
    [case[1:] for case in DOCUMENTS],
    ids=[case[0] for case in DOCUMENTS],
)
async def test_a_bad_document_or_variable_is_bad_user_input(
    both: Api, org_a: Org, org_b: Org, document: str, variables: dict[str, Any], words: str
) -> None:
    variables = {"p": org_a.project, **variables} if "$p" in document else variables
    response = await both.client.post(
        "/graphql",
        content=json.dumps({"query": document, "variables": variables}),
        headers=headers(org_a),
    )
    assert response.status_code == 200, response.text
    assert words in only_error(response)["message"]


async def test_a_nul_in_a_mutation_is_refused_before_the_database(
    api: Api, org_a: Org, org_b: Org
) -> None:
    """Refused as the variable is read: no statement, no audit row, no driver text."""
    body = await api(
        "mutation($id: ID!, $t: String!) { updateTask(input: {id: $id, title: $t}) "
        "{ task { title } errors { message } } }",
        {"id": org_a.task(0), "t": "bad\u0000title"},
        as_=(org_a, "member"),
    )
    assert [e["extensions"]["code"] for e in body["errors"]] == ["BAD_USER_INPUT"]
    assert body["data"] is None
    after = await api(
        "query($id: ID!) { task(id: $id) { title } }", {"id": org_a.task(0)}, as_=(org_a, "member")
    )
    assert "bad" not in after["data"]["task"]["title"]


@pytest.mark.parametrize(
    ("sql", "message"),
    [
        ("SELECT 'not a number'::int", "a value is malformed"),
        ("SELECT 99999::smallint", "a number is out of range"),
        ("SELECT 'ab'::varchar(1)::text", None),  # a cast truncates silently: no error
        ("SELECT '10000-13-45'::date", "a date or time"),
    ],
)
async def test_a_mutation_error_never_carries_driver_text(
    server_connection: asyncpg.Connection, sql: str, message: str | None
) -> None:
    """What PostgreSQL says about a refused value (real errors from the server) becomes a
    typed error with a message of ours; the driver's text stays in the log."""
    from api.mutations.base import _database_error

    if message is None:
        await server_connection.fetchval(sql)
        return
    with pytest.raises(asyncpg.DataError) as raised:
        await server_connection.fetchval(sql)
    error = _database_error(raised.value)
    assert message in error.message
    assert str(raised.value).splitlines()[0] not in error.message
    assert '"' not in error.message
    assert "type" not in error.message
