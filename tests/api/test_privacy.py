"""Privacy inside a tenant (issue 11, finding 3) and the last-owner rule held by the database
(finding 8), through the HTTP API, on the compiled path and on the resolvers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import httpx
import pytest

from api.app import create_app
from api.mutations import organizations as organization_mutations
from api.settings import Settings
from tests.api.world import Org

HISTORY = """query($id: ID!) { task(id: $id) { history(first: 20) {
  nodes { action requestId ipAddress userAgent } } } }"""

AUDIT_LOG = "{ auditLog(first: 20) { nodes { entityType requestId ipAddress userAgent } } }"

COMMENT = """query($id: ID!) { node(id: $id) { ... on Comment {
  id content author { id } history { content } deletedAt createdAt task { id } } } }"""

COMMENTS = """query($id: ID!) { task(id: $id) { comments(first: 50) {
  totalCount nodes { id content author { id } deletedAt } } } }"""


@pytest.fixture
async def paths(pool: asyncpg.Pool) -> AsyncIterator[dict[str, httpx.AsyncClient]]:
    """The compiled path and the resolvers, as two apps on the same database."""
    clients = {}
    for name, compiled in (("compiled", True), ("resolvers", False)):
        app = create_app(Settings(taskql_sql_stats=True, taskql_compiled_queries=compiled))
        transport = httpx.ASGITransport(app=app, client=("198.51.100.7", 50000))
        clients[name] = httpx.AsyncClient(transport=transport, base_url="http://taskql.test")
    try:
        yield clients
    finally:
        for client in clients.values():
            await client.aclose()


async def _post(
    client: httpx.AsyncClient,
    org: Org,
    role: str,
    query: str,
    variables: dict[str, Any] | None = None,
    user_agent: str = "privacy-test/1.0",
) -> dict[str, Any]:
    response = await client.post(
        "/graphql",
        json={"query": query, "variables": variables or {}},
        headers={
            "Authorization": f"Bearer {org.tokens[role]}",
            "X-Organization": org.slug,
            "User-Agent": user_agent,
        },
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    assert "errors" not in body, body
    return body


async def _rename(client: httpx.AsyncClient, org: Org, title: str) -> None:
    await _post(
        client,
        org,
        "member",
        "mutation($input: UpdateTaskInput!) { updateTask(input: $input) { errors { message } } }",
        {"input": {"id": org.task(0), "title": title}},
        user_agent="renamer/2.0",
    )


@pytest.mark.parametrize("path", ["compiled", "resolvers"])
async def test_audit_network_details_only_for_admins_and_owners(
    paths: dict[str, httpx.AsyncClient], org_a: Org, org_b: Org, path: str
) -> None:
    client = paths[path]
    for org in (org_a, org_b):
        await _rename(client, org, f"Renamed in {org.label}")
    for org in (org_a, org_b):
        for role in ("viewer", "member", "admin", "owner"):
            body = await _post(client, org, role, HISTORY, {"id": org.task(0)})
            nodes = body["data"]["task"]["history"]["nodes"]
            assert [n["action"] for n in nodes][:1] == ["UPDATE"], nodes
            network = [(n["requestId"], n["ipAddress"], n["userAgent"]) for n in nodes]
            if role in ("viewer", "member"):
                assert set(network) == {(None, None, None)}, (role, network)
            else:
                request_id, ip, agent = network[0]
                assert request_id
                assert (ip, agent) == ("198.51.100.7", "renamer/2.0")
        # The other tenant's task: no history at all, whatever the role.
        other = org_b if org is org_a else org_a
        body = await _post(client, org, "owner", HISTORY, {"id": other.task(0)})
        assert body["data"]["task"] is None


async def test_the_audit_log_shows_network_details_to_its_admins(
    paths: dict[str, httpx.AsyncClient], org_a: Org, org_b: Org
) -> None:
    await _rename(paths["compiled"], org_a, "Audited")
    for client in paths.values():
        for role in ("admin", "owner"):
            nodes = (await _post(client, org_a, role, AUDIT_LOG))["data"]["auditLog"]["nodes"]
            assert ("198.51.100.7", "renamer/2.0") in [
                (n["ipAddress"], n["userAgent"]) for n in nodes
            ]
            # org_b's log has none of org_a's requests.
            other = (await _post(client, org_b, role, AUDIT_LOG))["data"]["auditLog"]["nodes"]
            assert "renamer/2.0" not in [n["userAgent"] for n in other]


async def test_a_deleted_comment_is_a_tombstone_for_everyone_on_every_path(
    paths: dict[str, httpx.AsyncClient], org_a: Org, org_b: Org
) -> None:
    client = paths["resolvers"]
    comment = org_a.gid("Comment", org_a.comment_ids[0])
    deleted = await _post(
        client,
        org_a,
        "admin",
        "mutation($input: DeleteCommentInput!) { deleteComment(input: $input) { "
        "comment { id content author { id } deletedAt } errors { message } } }",
        {"input": {"id": comment}},
    )
    payload = deleted["data"]["deleteComment"]
    assert payload["errors"] == []
    assert payload["comment"]["content"] is None
    assert payload["comment"]["author"] is None
    assert payload["comment"]["deletedAt"] is not None
    for role in ("viewer", "member", "admin", "owner"):
        node = (await _post(client, org_a, role, COMMENT, {"id": comment}))["data"]["node"]
        assert node["id"] == comment
        assert node["task"] == {"id": org_a.task(0)}
        assert node["deletedAt"] is not None
        assert node["createdAt"] is not None
        assert (node["content"], node["author"], node["history"]) == (None, None, [])
        for path in paths.values():
            listed = await _post(path, org_a, role, COMMENTS, {"id": org_a.task(0)})
            comments = listed["data"]["task"]["comments"]
            assert comment not in [c["id"] for c in comments["nodes"]]
            assert all(c["content"] is not None for c in comments["nodes"])
    # The other tenant sees neither the comment nor its tombstone.
    assert (await _post(client, org_b, "owner", COMMENT, {"id": comment}))["data"]["node"] is None


async def test_the_databases_last_owner_rule_answers_conflict_through_the_api(
    paths: dict[str, httpx.AsyncClient], org_a: Org, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the API's own last-owner check switched off, the database's trigger still refuses,
    and the API answers with its typed CONFLICT, writing nothing."""

    async def never_last(run: object, user_id: object) -> bool:
        return False

    monkeypatch.setattr(organization_mutations, "_last_owner", never_last)
    client = paths["resolvers"]
    errors = "errors { __typename code message path }"
    demoted = await _post(
        client,
        org_a,
        "owner",
        "mutation($input: ChangeMemberRoleInput!) { changeMemberRole(input: $input) { "
        f"member {{ role }} {errors} }} }}",
        {"input": {"userId": org_a.user("owner"), "role": "ADMIN"}},
    )
    payload = demoted["data"]["changeMemberRole"]
    assert payload["member"] is None
    assert payload["errors"][0]["code"] == "CONFLICT", payload
    assert "keep an owner" in payload["errors"][0]["message"]
    left = await _post(
        client,
        org_a,
        "owner",
        f"mutation($input: RemoveMemberInput!) {{ removeMember(input: $input) {{ {errors} }} }}",
        {"input": {"userId": org_a.user("owner")}},
    )
    assert left["data"]["removeMember"]["errors"][0]["code"] == "CONFLICT", left
    members = await _post(
        client, org_a, "owner", "{ organization { members(first: 10) { nodes { role } } } }"
    )
    roles = [m["role"] for m in members["data"]["organization"]["members"]["nodes"]]
    assert roles.count("OWNER") == 1
