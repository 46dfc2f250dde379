"""A property test of the security invariants (issue 11): random sequences of mutations, one or
two per operation, sent through the HTTP API by random users of two tenants in whatever role
they hold by then (roles change and members leave during a run), aimed at ids of both tenants.

After every request, read across tenants as the maintenance role:
- every audit row the request wrote names the user who sent it as actor;
- an operation none of whose mutations reported success wrote nothing; one that did wrote
  what it reported (created rows exist, deleted rows are gone);
- every organization keeps at least one owner;
- no row references another tenant's row;
- no answer is a 500 or an INTERNAL_SERVER_ERROR.
Bounded (fixed example count, derandomized) so the suite keeps its time.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import asyncpg
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from api.ids import from_global_id
from tests.api.conftest import Api
from tests.api.world import ROLES, Org

TEXT = st.text(
    alphabet=st.sampled_from(["a", "Z", " ", "\u200b", "é", "字", "\n", "'", "%", "\\"]),
    min_size=0,
    max_size=12,
)


@dataclass(frozen=True)
class Call:
    """One root mutation: its GraphQL text (with a $-prefixed variable per argument) and what
    a success means (``created``: the payload path of a new row's id, ``deleted``: an id)."""

    field: str
    arguments: dict[str, Any]
    selection: str
    table: str | None = None
    created: str | None = None
    deleted: str | None = None


def _task(org: Org, index: int) -> str:
    return org.task(index % len(org.task_ids))


def calls(org_a: Org, org_b: Org) -> st.SearchStrategy[Call]:
    orgs = st.sampled_from([org_a, org_b])
    task = st.builds(_task, orgs, st.integers(0, 10))
    user = st.builds(lambda o, r: o.user(r), orgs, st.sampled_from(ROLES))
    role = st.sampled_from(["OWNER", "ADMIN", "MEMBER", "VIEWER"])
    return st.one_of(
        st.builds(
            lambda p, t: Call(
                "createTask",
                {"input": {"projectId": p, "title": t}},
                "task { id }",
                "tasks",
                created="task",
            ),
            st.sampled_from([org_a.project, org_b.project]),
            TEXT,
        ),
        st.builds(
            lambda i, t: Call("updateTask", {"input": {"id": i, "title": t}}, "task { id }"),
            task,
            TEXT,
        ),
        st.builds(
            lambda i, p: Call("moveTask", {"input": {"id": i, "parentId": p}}, "task { id }"),
            task,
            st.one_of(st.none(), task),
        ),
        st.builds(
            lambda i, u: Call("assignTask", {"input": {"id": i, "assigneeId": u}}, "task { id }"),
            task,
            st.one_of(st.none(), user),
        ),
        st.builds(
            lambda i: Call(
                "deleteTask",
                {"input": {"id": i}},
                "deletedTaskId",
                "tasks",
                deleted="deletedTaskId",
            ),
            task,
        ),
        st.builds(
            lambda i, c: Call(
                "addComment",
                {"input": {"taskId": i, "content": c}},
                "comment { id }",
                "task_comments",
                created="comment",
            ),
            task,
            TEXT,
        ),
        st.builds(
            lambda n: Call(
                "createProject",
                {"input": {"name": n}},
                "project { id }",
                "projects",
                created="project",
            ),
            TEXT,
        ),
        st.builds(
            lambda u, r: Call(
                "changeMemberRole", {"input": {"userId": u, "role": r}}, "member { role }"
            ),
            user,
            role,
        ),
        st.builds(
            lambda u: Call("removeMember", {"input": {"userId": u}}, "removedUserId"),
            user,
        ),
    )


def document(steps: list[Call]) -> tuple[str, dict[str, Any]]:
    definitions, fields, variables = [], [], {}
    for n, call in enumerate(steps):
        argument_text = []
        for name, value in call.arguments.items():
            variable = f"v{n}_{name}"
            variables[variable] = value
            type_name = f"{call.field[0].upper()}{call.field[1:]}Input!"
            definitions.append(f"${variable}: {type_name}")
            argument_text.append(f"{name}: ${variable}")
        fields.append(
            f"m{n}: {call.field}({', '.join(argument_text)}) "
            f"{{ {call.selection} errors {{ code message }} }}"
        )
    return f"mutation({', '.join(definitions)}) {{ {' '.join(fields)} }}", variables


CROSS_TENANT = """
SELECT
  (SELECT count(*) FROM tasks t JOIN projects p ON p.id = t.project_id
    WHERE p.organization_id <> t.organization_id)
+ (SELECT count(*) FROM tasks t JOIN tasks parent ON parent.id = t.parent_task_id
    WHERE parent.organization_id <> t.organization_id OR parent.project_id <> t.project_id)
+ (SELECT count(*) FROM task_comments c JOIN tasks t ON t.id = c.task_id
    WHERE t.organization_id <> c.organization_id)
+ (SELECT count(*) FROM tasks t WHERE t.assignee_id IS NOT NULL AND NOT EXISTS (
    SELECT 1 FROM organization_members m
    WHERE m.organization_id = t.organization_id AND m.user_id = t.assignee_id))
"""

OWNERLESS = """
SELECT count(*) FROM organizations o WHERE o.id = ANY($1::uuid[]) AND NOT EXISTS (
    SELECT 1 FROM organization_members m WHERE m.organization_id = o.id AND m.role = 'owner')
"""


@settings(
    max_examples=100,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
async def test_random_mutations_keep_the_invariants(
    api: Api, org_a: Org, org_b: Org, maintenance: asyncpg.Connection, data: st.DataObject
) -> None:
    """The two tenants live for the whole test: each example continues where the last left
    them (roles changed, members gone, tasks moved), which is what makes sequences matter."""
    senders = [(org, role) for org in (org_a, org_b) for role in ROLES]
    sequence = data.draw(
        st.lists(
            st.tuples(
                st.sampled_from(senders), st.lists(calls(org_a, org_b), min_size=1, max_size=2)
            ),
            min_size=1,
            max_size=4,
        )
    )
    for (org, role), steps in sequence:
        await one_request(api, maintenance, org, role, steps, (org_a, org_b))


async def one_request(
    api: Api,
    maintenance: asyncpg.Connection,
    org: Org,
    role: str,
    steps: list[Call],
    orgs: tuple[Org, Org],
) -> None:
    sender = org.users[role]
    request_id = uuid.uuid4().hex
    query, variables = document(steps)
    response = await api.post(
        query,
        variables,
        token=org.tokens[role],
        org=org.slug,
        headers={"X-Request-Id": request_id},
    )
    assert response.status_code in (200, 403), response.text
    body = response.json()
    assert "INTERNAL_SERVER_ERROR" not in response.text, body
    data = body.get("data") or {}
    reported = {
        n: data[f"m{n}"]
        for n in range(len(steps))
        if data.get(f"m{n}") is not None and data[f"m{n}"]["errors"] == []
    }
    if response.status_code == 200 and "errors" not in body:
        # All done, or none: a rolled-back operation reports nothing done.
        assert len(reported) in (0, len(steps)), body

    actors = await maintenance.fetch(
        "SELECT actor_id FROM audit_logs WHERE request_id = $1", request_id
    )
    if not reported:
        assert actors == [], f"nothing was reported done, yet {len(actors)} rows: {body}"
    assert {a["actor_id"] for a in actors} <= {sender}, "an audit row names another actor"

    for n, payload in reported.items():
        call = steps[n]
        if call.created is not None and call.table is not None:
            raw = from_global_id(payload[call.created]["id"])[1]
            stored = await maintenance.fetchval(
                f"SELECT organization_id FROM {call.table} WHERE id = $1",  # table from Call
                raw,
            )
            assert stored == org.id, f"{call.field} reported done but stored in {stored}"
            if call.table == "tasks":
                org.task_ids.append(raw)
        if call.deleted is not None and call.table is not None:
            raw = from_global_id(payload[call.deleted])[1]
            assert not await maintenance.fetchval(
                f"SELECT 1 FROM {call.table} WHERE id = $1", raw
            ), f"{call.field} reported done but the row is still there"

    assert await maintenance.fetchval(OWNERLESS, [o.id for o in orgs]) == 0
    assert await maintenance.fetchval(CROSS_TENANT) == 0


def test_document_builds_one_variable_per_argument() -> None:
    call = Call("createProject", {"input": {"name": "x"}}, "project { id }")
    query, variables = document([call, call])
    assert variables == {"v0_input": {"name": "x"}, "v1_input": {"name": "x"}}
    assert query.startswith("mutation($v0_input: CreateProjectInput!, $v1_input:")
