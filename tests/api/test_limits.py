"""Every operation is bounded: depth, aliases, tokens, nodes, body size, page size; and
malformed requests get a clear error with a code, never a 500."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from api.app import create_app
from api.settings import Settings
from tests.api.conftest import Api
from tests.api.world import Org


def codes(body: dict) -> list[str]:  # type: ignore[type-arg]
    return [e["extensions"]["code"] for e in body["errors"]]


async def test_too_deep(api: Api, org_a: Org) -> None:
    nested = "parent { " * 14 + "id" + " }" * 14
    body = await api(
        f"query($id: ID!) {{ task(id: $id) {{ {nested} }} }}",
        {"id": org_a.task(0)},
        as_=(org_a, "viewer"),
    )
    assert codes(body) == ["BAD_USER_INPUT"]
    assert "exceeds maximum operation depth" in body["errors"][0]["message"]


async def test_too_many_aliases(api: Api, org_a: Org) -> None:
    aliases = " ".join(f"a{i}: viewer {{ user {{ id }} }}" for i in range(40))
    body = await api(f"{{ {aliases} }}", as_=(org_a, "viewer"))
    assert codes(body) == ["BAD_USER_INPUT"]
    assert "aliases" in body["errors"][0]["message"]


async def test_too_many_tokens(api: Api, org_a: Org) -> None:
    fields = " ".join(["__typename"] * 6000)
    body = await api(f"{{ {fields} }}", as_=(org_a, "viewer"))
    assert codes(body) == ["BAD_USER_INPUT"]
    assert "token" in body["errors"][0]["message"].lower()


async def test_too_many_nodes_names_the_limit(api: Api, org_a: Org) -> None:
    query = """query($id: ID!, $n: Int!) { project(id: $id) { tasks(first: 100) { nodes {
        subtasks(first: $n) { nodes { comments(first: 100) { nodes { id } } } } } } } }"""
    body = await api(query, {"id": org_a.project, "n": 50}, as_=(org_a, "viewer"))
    assert codes(body) == ["BAD_USER_INPUT"]
    error = body["errors"][0]
    assert error["extensions"]["limit"] == 20_000
    assert error["extensions"]["cost"] == 100 + 100 * 50 + 100 * 50 * 100
    assert "the limit is 20000" in error["message"]
    fine = await api(query, {"id": org_a.project, "n": 1}, as_=(org_a, "viewer"))
    assert "errors" not in fine


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ("first: 101", "between 1 and 100"),
        ("first: 0", "between 1 and 100"),
        ("", "exactly one of"),
        ("first: 5, last: 5", "exactly one of"),
        ('first: 5, after: "garbage"', "malformed cursor"),
    ],
)
async def test_page_arguments_are_checked(
    api: Api, org_a: Org, arguments: str, message: str
) -> None:
    args = f"({arguments})" if arguments else ""
    body = await api(
        f"query($id: ID!) {{ project(id: $id) {{ tasks{args} {{ totalCount }} }} }}",
        {"id": org_a.project},
        as_=(org_a, "viewer"),
    )
    assert codes(body) == ["BAD_USER_INPUT"]
    assert message in body["errors"][0]["message"]


async def test_a_syntax_error_is_bad_user_input(api: Api, org_a: Org) -> None:
    response = await api.post("{ viewer { ", token=org_a.tokens["viewer"])
    assert response.status_code in (200, 400)
    assert codes(response.json()) == ["BAD_USER_INPUT"]


async def test_an_unknown_field_is_bad_user_input(api: Api, org_a: Org) -> None:
    response = await api.post("{ nope }", token=org_a.tokens["viewer"])
    assert codes(response.json()) == ["BAD_USER_INPUT"]


async def test_malformed_json_is_a_client_error(api: Api, org_a: Org) -> None:
    response = await api.client.post(
        "/graphql", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert 400 <= response.status_code < 500


async def test_an_oversized_body_is_refused_before_reading_it(pool: object) -> None:
    app = create_app(Settings(taskql_max_body_bytes=2048))
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://t"
    ) as client:
        response = await client.post(
            "/graphql", json={"query": "{ viewer { user { id } } }", "pad": "x" * 5000}
        )
    assert response.status_code == 413
    assert response.json()["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"


async def test_an_unexpected_error_is_masked_with_a_request_id_that_is_logged(
    org_a: Org, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(*args: object) -> None:
        raise RuntimeError("secret internals: statement timeout on host db-7")

    monkeypatch.setattr("db.queries.search.search", broken)
    app = create_app(Settings(taskql_compiled_queries=False))  # the resolver's failure
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://t"
    ) as client:
        response = await client.post(
            "/graphql",
            json={"query": '{ search(text: "pg_sleep", first: 5) { totalCount } }'},
            headers={
                "Authorization": f"Bearer {org_a.tokens['viewer']}",
                "X-Organization": org_a.slug,
                "X-Request-Id": "req-masked-1",
            },
        )
    body = response.json()
    error = body["errors"][0]
    assert error["message"] == "Unexpected error."
    assert error["extensions"] == {"code": "INTERNAL_SERVER_ERROR", "requestId": "req-masked-1"}
    assert "secret" not in response.text
    assert any("req-masked-1" in record.getMessage() for record in caplog.records)


async def test_a_client_that_goes_away_mid_body_is_not_a_server_error(
    org_a: Org, caplog: pytest.LogCaptureFixture
) -> None:
    app = create_app(Settings())
    messages: Iterator[dict[str, object]] = iter(
        [
            {"type": "http.request", "body": b'{"query": "{ vie', "more_body": True},
            {"type": "http.disconnect"},
        ]
    )
    sent: list[dict[str, object]] = []

    async def receive() -> dict[str, object]:
        return next(messages)

    async def send(message: dict[str, object]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/graphql",
        "headers": [(b"content-type", b"application/json")],
        "query_string": b"",
        "client": ("127.0.0.1", 1),
        "server": ("t", 80),
        "scheme": "http",
        "root_path": "",
        "http_version": "1.1",
        "asgi": {"version": "3.0"},
    }
    await app(scope, receive, send)  # type: ignore[arg-type]
    assert sent == []
    assert not [r for r in caplog.records if r.levelname == "ERROR"]


async def test_the_same_document_is_validated_once(api: Api, org_a: Org) -> None:
    """Validation (with the depth and alias limits) is cached per document: a limiter built
    per request would give the cache new rule classes, and every request would miss."""
    from strawberry.extensions.validation_cache import _get_validate_cache

    cache: Any = _get_validate_cache(1000)  # a functools.lru_cache wrapper
    # Invitations are answered by the resolvers (compiled queries have their own plan cache).
    query = "{ organization { invitations(first: 1) { totalCount } } }"
    await api(query, as_=(org_a, "owner"))
    before = cache.cache_info()
    for _ in range(3):
        await api(query, as_=(org_a, "owner"))
    after = cache.cache_info()
    assert after.misses == before.misses
    assert after.hits == before.hits + 3
