"""Persisted operations over HTTP (``api.persisted``): automatic persisted queries (Apollo's
protocol, POST and GET), trusted documents from a manifest that is reloaded while serving,
the bounded store (in memory, and in Redis shared by two app instances), two tenants
throughout, and the compiled path and the resolvers running the same resolved document."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from api.app import create_app
from api.settings import Settings
from tests.api.world import Org
from tests.conftest import RedisTarget

BOARD = "query Board { organization { name projects(first: 5) { nodes { id name } } } }"
CREATE = """mutation New($name: String!) {
  createProject(input: {name: $name}) { project { id name } errors { code } } }"""


def sha(document: str) -> str:
    return hashlib.sha256(document.encode()).hexdigest()


def persisted(document: str) -> dict[str, Any]:
    return {"persistedQuery": {"version": 1, "sha256Hash": sha(document)}}


class Client:
    def __init__(self, client: httpx.AsyncClient, app: Any) -> None:
        self.client = client
        self.app = app

    @staticmethod
    def headers(org: Org | None, role: str = "member") -> dict[str, str]:
        if org is None:
            return {}
        return {"Authorization": f"Bearer {org.tokens[role]}", "X-Organization": org.slug}

    async def post(
        self, body: dict[str, Any], org: Org | None, role: str = "member"
    ) -> httpx.Response:
        return await self.client.post("/graphql", json=body, headers=self.headers(org, role))

    async def get(self, params: dict[str, Any], org: Org | None) -> httpx.Response:
        sent = {k: json.dumps(v) if isinstance(v, dict) else v for k, v in params.items()}
        return await self.client.get("/graphql", params=sent, headers=self.headers(org))


async def client_for(settings: Settings) -> AsyncIterator[Client]:
    app = create_app(settings)
    transport = httpx.ASGITransport(app=app, client=("198.51.100.9", 50000))
    async with httpx.AsyncClient(transport=transport, base_url="http://taskql.test") as client:
        yield Client(client, app)
    await app.state.persisted.close()


@pytest.fixture
async def apq(pool: asyncpg.Pool) -> AsyncIterator[Client]:
    async for client in client_for(Settings()):
        yield client


def code(response: httpx.Response) -> str:
    return str(response.json()["errors"][0]["extensions"]["code"])


def names(response: httpx.Response) -> tuple[str, list[str]]:
    assert response.status_code == 200, response.text
    body = response.json()
    assert "errors" not in body, body
    organization = body["data"]["organization"]
    return organization["name"], [p["name"] for p in organization["projects"]["nodes"]]


async def test_a_hash_alone_is_not_found_until_sent_with_its_query(
    apq: Client, org_a: Org, org_b: Org
) -> None:
    missing = await apq.post({"extensions": persisted(BOARD)}, org_a)
    assert missing.status_code == 404
    assert code(missing) == "PERSISTED_QUERY_NOT_FOUND"
    assert missing.json()["errors"][0]["message"] == "PersistedQueryNotFound"

    registered = await apq.post({"query": BOARD, "extensions": persisted(BOARD)}, org_a)
    seen_a = names(registered)
    assert names(await apq.post({"extensions": persisted(BOARD)}, org_a)) == seen_a
    # Another tenant runs the same stored document and sees its own organization only.
    seen_b = names(await apq.post({"extensions": persisted(BOARD)}, org_b))
    assert seen_b[0] != seen_a[0]
    assert not set(seen_b[1]) & set(seen_a[1])
    assert seen_b == names(await apq.post({"query": BOARD}, org_b))


async def test_a_hash_that_is_not_the_querys_is_refused_and_stores_nothing(
    apq: Client, org_a: Org
) -> None:
    other = "query Other { organization { id } }"
    lying = await apq.post({"query": other, "extensions": persisted(BOARD)}, org_a)
    assert lying.status_code == 400
    assert code(lying) == "BAD_USER_INPUT"
    assert (await apq.post({"extensions": persisted(BOARD)}, org_a)).status_code == 404
    for bad in ({"version": 2, "sha256Hash": sha(BOARD)}, "v1"):
        refused = await apq.post({"extensions": {"persistedQuery": bad}}, org_a)
        assert (refused.status_code, code(refused)) == (400, "PERSISTED_QUERY_NOT_SUPPORTED")
    short = await apq.post(
        {"extensions": {"persistedQuery": {"version": 1, "sha256Hash": "ab"}}}, org_a
    )
    assert (short.status_code, code(short)) == (400, "BAD_USER_INPUT")


async def test_queries_over_get_by_hash_carry_cache_headers_and_mutations_never_run(
    apq: Client, org_a: Org, org_b: Org, pool: asyncpg.Pool
) -> None:
    missing = await apq.get({"extensions": persisted(BOARD)}, org_a)
    assert missing.status_code == 404
    assert missing.headers["cache-control"] == "no-store"
    registered = await apq.get({"query": BOARD, "extensions": persisted(BOARD)}, org_a)
    assert names(registered)
    hit = await apq.get({"extensions": persisted(BOARD), "operationName": "Board"}, org_a)
    assert names(hit) == names(registered)
    assert hit.headers["cache-control"] == "private, max-age=5"
    assert hit.headers["vary"] == "Accept, Authorization, X-Organization"
    assert names(await apq.get({"extensions": persisted(BOARD)}, org_b))[0] != names(hit)[0]
    # A browser's GET without a document gets GraphiQL, with the page's own headers.
    page = await apq.client.get("/graphql", headers={"Accept": "text/html"})
    assert page.headers["content-type"].startswith("text/html")
    assert not page.headers.get("cache-control", "").startswith("private")

    # A mutation is stored over POST (and runs), but never runs over GET, by hash or text.
    variables = {"name": "over POST"}
    created = await apq.post(
        {"query": CREATE, "variables": variables, "extensions": persisted(CREATE)}, org_a, "admin"
    )
    assert created.json()["data"]["createProject"]["errors"] == []
    before = await pool.fetchval("SELECT count(*) FROM projects")
    for params in (
        {"extensions": persisted(CREATE), "variables": {"name": "over GET"}},
        {"query": CREATE, "variables": {"name": "over GET"}},
    ):
        refused = await apq.get(params, org_a)
        assert refused.status_code == 405, refused.text
        assert refused.headers["allow"] == "POST"
        assert refused.headers["cache-control"] == "no-store"
    assert await pool.fetchval("SELECT count(*) FROM projects") == before
    by_hash = await apq.post(
        {"extensions": persisted(CREATE), "variables": {"name": "again"}}, org_a, "admin"
    )
    assert by_hash.json()["data"]["createProject"]["project"]["name"] == "again"


async def test_both_read_paths_run_the_same_document_planned_once(
    pool: asyncpg.Pool, org_a: Org, org_b: Org
) -> None:
    answers = []
    for compiled in (True, False):
        async for client in client_for(
            Settings(taskql_compiled_queries=compiled, taskql_sql_stats=True)
        ):
            await client.post({"query": BOARD, "extensions": persisted(BOARD)}, org_a)
            compiler = client.app.state.graphql.compiler
            made = compiler.plans_made if compiler else 0
            seen = []
            counts: set[int] = set()
            for org in (org_a, org_b, org_a, org_b):
                for send in (client.post, client.get):
                    response = await send({"extensions": persisted(BOARD)}, org)
                    seen.append(names(response))
                    counts.add(response.json()["extensions"]["sqlStatements"])
            if compiler is not None:
                assert compiler.plans_made == made  # registered once, planned once
            # One statement for the answer on the compiled path (the other authenticates),
            # over GET and POST alike; the resolvers' loaders otherwise.
            assert counts == ({2} if compiled else {3})
            answers.append(seen)
    assert answers[0] == answers[1]


async def test_the_store_is_a_bounded_lru(pool: asyncpg.Pool, org_a: Org) -> None:
    documents = [f"query Q{i} {{ organization {{ id }} }}" for i in range(3)]
    async for client in client_for(Settings(taskql_persisted_queries_max_entries=2)):
        for document in documents[:2]:
            await client.post({"query": document, "extensions": persisted(document)}, org_a)
        # Q0 used again: Q1 is the least recently used when Q2 arrives.
        assert (
            await client.post({"extensions": persisted(documents[0])}, org_a)
        ).status_code == 200
        await client.post({"query": documents[2], "extensions": persisted(documents[2])}, org_a)
        statuses = [
            (await client.post({"extensions": persisted(d)}, org_a)).status_code for d in documents
        ]
        assert statuses == [200, 404, 200]
        assert len(client.app.state.persisted.local) == 2


async def test_two_workers_share_the_store_through_redis(
    pool: asyncpg.Pool, org_a: Org, org_b: Org, redis_target: RedisTarget
) -> None:
    async for one in client_for(redis_target.settings()):
        async for other in client_for(redis_target.settings()):
            assert (await other.post({"extensions": persisted(BOARD)}, org_b)).status_code == 404
            registered = names(
                await one.post({"query": BOARD, "extensions": persisted(BOARD)}, org_a)
            )
            assert names(await other.post({"extensions": persisted(BOARD)}, org_a)) == registered
            assert names(await other.post({"extensions": persisted(BOARD)}, org_b)) != registered
    import redis.asyncio

    client = redis.asyncio.Redis.from_url(redis_target.url)
    try:
        key = f"{redis_target.prefix}:apq:{sha(BOARD)}"
        assert (await client.get(key)) == BOARD.encode()
        assert 0 < await client.ttl(key) <= 7 * 24 * 3600
    finally:
        await client.aclose()


ALLOWED = "query Allowed { organization { name } }"
LATER = "query Later { organization { slug } }"


def write(path: Path, manifest: Any) -> None:
    """As a build step would: a new file renamed over the old one."""
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(manifest))
    os.replace(temporary, path)


@pytest.mark.parametrize("format_", ["codegen", "relay", "apollo"])
async def test_trusted_documents_only_run_the_manifest_and_it_reloads(
    pool: asyncpg.Pool, org_a: Org, org_b: Org, tmp_path: Path, format_: str
) -> None:
    def manifest(documents: list[str]) -> Any:
        if format_ == "codegen":  # client preset: sha256 of the document
            return {sha(d): d for d in documents}
        if format_ == "relay":  # Relay's persisted_queries.json: md5 ids by default
            return {hashlib.md5(d.encode()).hexdigest(): d for d in documents}
        return {
            "format": "apollo-persisted-query-manifest",
            "version": 1,
            "operations": [
                {"id": sha(d), "body": d, "name": d.split()[1], "type": "query"} for d in documents
            ],
        }

    def ident(document: str) -> str:
        return hashlib.md5(document.encode()).hexdigest() if format_ == "relay" else sha(document)

    path = tmp_path / "manifest.json"
    write(path, manifest([ALLOWED]))
    settings = Settings(taskql_trusted_documents=path, taskql_trusted_documents_only=True)
    async for client in client_for(settings):
        trusted = client.app.state.persisted.trusted
        for org in (org_a, org_b):
            by_id = await client.post({"documentId": ident(ALLOWED)}, org)
            assert by_id.json()["data"]["organization"]["name"], by_id.text
            # The text of a trusted document runs too (it is the same document).
            assert (await client.post({"query": ALLOWED}, org)).json() == by_id.json()
        assert (await client.post({"documentId": ident(ALLOWED)}, org_b)).json() != (
            await client.post({"documentId": ident(ALLOWED)}, org_a)
        ).json()
        if format_ != "relay":  # Apollo's link sends the document's sha256 as its hash
            hashed = await client.get({"extensions": persisted(ALLOWED)}, org_a)
            assert hashed.status_code == 200
            assert hashed.headers["cache-control"].startswith("private")
        for body in (
            {"query": LATER},
            {"query": LATER, "extensions": persisted(LATER)},  # no registering either
            {"extensions": persisted(LATER)},
            {"documentId": ident(LATER)},
        ):
            refused = await client.post(body, org_a)
            assert refused.status_code == 400, (body, refused.text)
            assert code(refused) == "PERSISTED_QUERY_NOT_IN_LIST"
        anonymous = await client.post({"query": "{ __schema { queryType { name } } }"}, None)
        assert code(anonymous) == "PERSISTED_QUERY_NOT_IN_LIST"

        # The operator ships a new manifest: seen without a restart.
        write(path, manifest([LATER]))
        trusted.refresh(force=True)
        later = await client.post({"documentId": ident(LATER)}, org_a)
        assert later.json()["data"]["organization"]["slug"] == org_a.slug
        assert code(await client.post({"documentId": ident(ALLOWED)}, org_a)) == (
            "PERSISTED_QUERY_NOT_IN_LIST"
        )
        # A manifest broken mid-deploy leaves the last good one in force.
        path.write_text("{ not json")
        trusted.refresh(force=True)
        assert (await client.post({"query": LATER}, org_a)).status_code == 200
        assert trusted.loads == 2


async def test_the_manifest_is_reread_when_the_file_changes(
    pool: asyncpg.Pool, org_a: Org, tmp_path: Path
) -> None:
    """No forced refresh: the once-a-second check by modification time, size and inode."""
    import asyncio

    path = tmp_path / "manifest.json"
    write(path, {sha(ALLOWED): ALLOWED})
    settings = Settings(taskql_trusted_documents=path, taskql_trusted_documents_only=True)
    async for client in client_for(settings):
        assert (await client.post({"query": LATER}, org_a)).status_code == 400
        write(path, {sha(ALLOWED): ALLOWED, sha(LATER): LATER})
        for _ in range(50):
            if (await client.post({"query": LATER}, org_a)).status_code == 200:
                break
            await asyncio.sleep(0.1)
        else:
            raise AssertionError("the new manifest was not seen")


def test_trusted_only_needs_a_manifest_and_a_bad_one_is_fatal(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="TASKQL_TRUSTED_DOCUMENTS"):
        Settings(taskql_trusted_documents_only=True)
    path = tmp_path / "manifest.json"
    path.write_text(json.dumps({"abc": 3}))
    with pytest.raises(ValueError, match="not a non-empty string"):
        create_app(Settings(taskql_trusted_documents=path))


SUBSCRIBE = """subscription Changes($project: ID!) {
  taskChanged(projectId: $project) { action task { title } } }"""
RENAME = """mutation Rename($id: ID!, $title: String!) {
  updateTask(input: {id: $id, title: $title}) { task { id } errors { code } } }"""


async def test_subscriptions_by_id_and_only_trusted_ones_over_websocket(
    pool: asyncpg.Pool, org_a: Org, tmp_path: Path
) -> None:
    from tests.api.realtime_client import WsClient, live_server

    path = tmp_path / "manifest.json"
    write(path, {sha(SUBSCRIBE): SUBSCRIBE, sha(RENAME): RENAME})
    settings = Settings(taskql_trusted_documents=path, taskql_trusted_documents_only=True)
    async with live_server(settings) as server, WsClient.opened(server.ws_url) as client:
        await client.init({"token": org_a.tokens["member"], "organization": org_a.slug})
        other = "subscription { taskChanged(projectId: %s) { action } }"
        await client.subscribe("free", other % json.dumps(org_a.project))
        refused = await client.receive()
        assert (refused["type"], refused["id"]) == ("error", "free")
        assert refused["payload"][0]["extensions"]["code"] == "PERSISTED_QUERY_NOT_IN_LIST"
        await client.send(
            {
                "id": "trusted",
                "type": "subscribe",
                "payload": {
                    "extensions": persisted(SUBSCRIBE),
                    "variables": {"project": org_a.project},
                },
            }
        )
        await server.graphql(
            RENAME,
            {"id": org_a.task(0), "title": "renamed by a trusted document"},
            token=org_a.tokens["member"],
            org=org_a.slug,
        )
        event = await client.receive()
        assert (event["type"], event["id"]) == ("next", "trusted")
        assert event["payload"]["data"]["taskChanged"]["task"] == {
            "title": "renamed by a trusted document"
        }
