"""Lone writes answered by ``api.direct`` (the resolver and the compiled read-back, no GraphQL
execution) and by Strawberry must answer alike, failing writes included, and leave the
same rows.

A property test generates writes: each mutation of ``api.direct.MUTATIONS`` that the
fixtures can aim, with valid and invalid inputs (blank, too long and odd texts, priorities
out of range, ids of the other tenant, of another type, malformed, a task moved under its
own subtask), variables or inline values, payload selections with aliases, ``__typename``
and ``errors``, sent as each role of one of two tenants. Every write is sent to an app with
direct writes on and to one with them off, one after the other, on the same rows: the two
responses must be equal, key order included, ignoring ``extensions.requestId`` and the
values a second write cannot repeat (new ids, times), which are masked alike on both.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import asyncpg
import httpx
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from api import direct
from api.app import create_app
from api.ids import to_global_id
from api.settings import Settings
from db.uuid7 import uuid7
from tests.api.world import ROLES, Org

EXAMPLES = int(os.environ.get("TASKQL_FUZZ_EXAMPLES", "120"))
ERRORS = "errors { __typename code message path }"
TASK = "id title description status priority assignee { id displayName } parent { id }"
COMMENT = "id content author { id } task { id title }"

TITLES = st.sampled_from(
    ["Ship it", "  padded  ", "", "   ", "x" * 501, "é\u0301 ü 漢字 🚀", "a\x00b", 'O\'Brien "q"']
)


@dataclass
class Sent:
    query: str
    variables: dict[str, Any]
    org: str
    role: str


@asynccontextmanager
async def client(direct_writes: bool) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(Settings(taskql_sql_stats=True, taskql_direct_writes=direct_writes))
    transport = httpx.ASGITransport(app=app, client=("198.51.100.8", 50000))
    async with httpx.AsyncClient(transport=transport, base_url="http://taskql.test") as c:
        yield c


_MASKED = re.compile(r"\d{4}-\d\d-\d\dT[0-9:.+]+")


def _masked(body: dict[str, Any], created: bool) -> str:
    """The body's JSON with its request ids dropped, times masked and, for a created object,
    its new id masked: what a second, identical write answers too."""
    for error in body.get("errors", []):
        (error.get("extensions") or {}).pop("requestId", None)
    text = json.dumps(body)
    text = _MASKED.sub("<time>", text)
    if created:
        text = re.sub(r'"(id)": "[A-Za-z0-9_=-]{20,}"', r'"\1": "<new>"', text, count=1)
    return text


def _ids(org: Org, other: Org) -> st.SearchStrategy[str]:
    return st.sampled_from(
        [
            org.task(0),
            org.task(1),
            org.task(2),
            other.task(0),
            to_global_id("Project", org.project_id),
            to_global_id("Task", uuid7()),
            "not-an-id",
            "",
        ]
    )


@st.composite
def writes(draw: st.DrawFn, orgs: tuple[Org, Org]) -> Sent:
    index = draw(st.integers(0, 1))
    org, other = orgs[index], orgs[1 - index]
    role = draw(st.sampled_from(ROLES))
    ids = _ids(org, other)
    kind = draw(
        st.sampled_from(
            [
                "createTask",
                "updateTask",
                "moveTask",
                "assignTask",
                "completeTask",
                "reopenTask",
                "addComment",
            ]
        )
    )
    fields: dict[str, Any]
    if kind == "createTask":
        fields = {"projectId": draw(st.sampled_from([org.project, other.project, org.task(0)]))}
        fields["title"] = draw(TITLES)
        if draw(st.booleans()):
            fields["priority"] = draw(st.integers(-1, 5))
        if draw(st.booleans()):
            fields["parentId"] = draw(st.one_of(st.none(), ids))
        if draw(st.booleans()):
            fields["assigneeId"] = draw(
                st.sampled_from([org.user("member"), other.user("member"), None])
            )
    elif kind == "updateTask":
        fields = {"id": draw(ids)}
        if draw(st.booleans()):
            fields["title"] = draw(TITLES)
        if draw(st.booleans()):
            fields["priority"] = draw(st.integers(-1, 5))
        if draw(st.booleans()):
            fields["description"] = draw(st.sampled_from([None, "notes", "d" * 20_001]))
        if draw(st.booleans()):
            fields["status"] = draw(st.sampled_from(["TODO", "IN_PROGRESS", "BLOCKED"]))
    elif kind == "moveTask":
        fields = {"id": draw(ids), "parentId": draw(st.one_of(st.none(), ids))}
    elif kind == "assignTask":
        fields = {
            "id": draw(ids),
            "assigneeId": draw(
                st.sampled_from([org.user("member"), org.user("viewer"), other.user("owner"), None])
            ),
        }
    elif kind == "addComment":
        fields = {"taskId": draw(ids), "content": draw(TITLES)}
    else:
        fields = {"id": draw(ids)}
    object_field, selection = ("comment", COMMENT) if kind == "addComment" else ("task", TASK)
    parts = [f"{object_field} {{ {selection} }}"]
    if draw(st.booleans()):
        parts.insert(draw(st.integers(0, 1)), ERRORS)
    if draw(st.booleans()):
        parts.append("__typename")
    if draw(st.booleans()):
        parts[0] = "thing: " + parts[0]
    alias = "w: " if draw(st.booleans()) else ""
    if draw(st.booleans()):
        query = f"mutation($input: {kind[0].upper()}{kind[1:]}Input!) {{ {alias}{kind}(input: $input) {{ {' '.join(parts)} }} }}"
        variables = {"input": fields}
    else:
        inline = ", ".join(f"{k}: {json.dumps(v)}" for k, v in fields.items())
        query = f"mutation {{ {alias}{kind}(input: {{{inline}}}) {{ {' '.join(parts)} }} }}"
        variables = {}
    return Sent(query, variables, org.slug, role)


def _token(orgs: tuple[Org, Org], sent: Sent) -> str:
    org = orgs[0] if orgs[0].slug == sent.org else orgs[1]
    return org.tokens[sent.role]


async def _post(c: httpx.AsyncClient, orgs: tuple[Org, Org], sent: Sent) -> httpx.Response:
    return await c.post(
        "/graphql",
        json={"query": sent.query, "variables": sent.variables},
        headers={"Authorization": f"Bearer {_token(orgs, sent)}", "X-Organization": sent.org},
    )


@pytest.fixture
async def both() -> AsyncIterator[tuple[httpx.AsyncClient, httpx.AsyncClient]]:
    async with client(True) as on, client(False) as off:
        yield on, off


@settings(
    max_examples=EXAMPLES,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
async def test_direct_and_strawberry_answer_every_write_alike(
    both: tuple[httpx.AsyncClient, httpx.AsyncClient],
    org_a: Org,
    org_b: Org,
    data: st.DataObject,
) -> None:
    on, off = both
    orgs = (org_a, org_b)
    sent = data.draw(writes(orgs), label="write")
    first = await _post(on, orgs, sent)
    second = await _post(off, orgs, sent)
    assert first.status_code == second.status_code, (sent, first.text, second.text)
    assert first.status_code < 500, (sent, first.text)
    created = "create" in sent.query or "addComment" in sent.query
    mine, theirs = _masked(first.json(), created), _masked(second.json(), created)
    assert mine == theirs, f"{sent}\ndirect:     {mine}\nstrawberry: {theirs}"
    payload = next(iter((first.json().get("data") or {}).values()), None) or {}
    written = any(isinstance(v, dict) for v in payload.values())
    event("written" if written else "refused")


async def test_a_direct_write_sends_what_the_resolvers_send_and_nothing_of_the_other_tenant(
    org_a: Org, org_b: Org, maintenance: asyncpg.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same statements as Strawberry's path (authentication, the write, the read-back),
    the payload in the client's order with its aliases; another tenant's task is not found
    (and not changed) on either path."""
    answered: list[bool] = []
    original = direct.DirectWrites.answer

    async def spied(self: direct.DirectWrites, *args: Any) -> Any:
        data = await original(self, *args)
        answered.append(data is not None)
        return data

    monkeypatch.setattr(direct.DirectWrites, "answer", spied)
    query = (
        "mutation($id: ID!) { done: completeTask(input: {id: $id}) "
        "{ __typename oops: errors { code } t: task { status title } } }"
    )
    orgs = (org_a, org_b)
    mine = Sent(query, {"id": org_a.task(1)}, org_a.slug, "member")
    theirs = Sent(query, {"id": org_b.task(1)}, org_a.slug, "member")
    bodies = []
    for on in (True, False):
        async with client(on) as c:
            bodies.append((await _post(c, orgs, mine)).text)
            foreign = await _post(c, orgs, theirs)
            assert foreign.json()["data"]["done"]["oops"] == [{"code": "NOT_FOUND"}]
    # On: the write answered directly, the foreign one handed to the resolvers. Off: none.
    assert answered == [True, False]
    assert bodies[0] == bodies[1]
    body = json.loads(bodies[0])
    assert list(body["data"]["done"]) == ["__typename", "oops", "t"]
    assert body["data"]["done"]["t"]["status"] == "DONE"
    assert body["extensions"]["sqlStatements"] == 3
    status = await maintenance.fetchval("SELECT status FROM tasks WHERE id = $1", org_b.task_ids[1])
    assert status is not None
    assert status != "done"
