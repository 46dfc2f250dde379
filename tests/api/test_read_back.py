"""Mutation payloads read back by the compiler (``api/readback.py``): the object a mutation
returns is answered by ONE compiled statement after the writes, and answers exactly what the
resolvers answer for the same object (read through them right after), for two tenants and
each role that may write; failed and rolled-back operations answer as before."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import asyncpg
import pytest

from tests.api.conftest import api_client
from tests.api.test_compiled import enrich
from tests.api.world import Org

TASK = """id title description status priority dueDate completedAt
  project { name organization { slug } }
  parent { title } assignee { displayName } createdBy { email }
  ancestors { title }
  subtasks(first: 2) { totalCount nodes { title } }
  comments(first: $n) { totalCount edges { cursor node { content author { displayName } history { content } } } }
  history(first: 3) { nodes { action changes ipAddress actor { displayName } } }
  ...Dates"""
FRAGMENTS = "fragment Dates on Task { createdAt updatedAt __typename }"
COMMENT = """id content createdAt editedAt deletedAt author { displayName }
  task { title comments(first: 5) { totalCount } } history { content replacedBy { email } }"""
PROJECT = """id name description status archived archivedAt createdBy { email }
  taskCountsByStatus { status count }
  tasks(first: 2, orderBy: PRIORITY) { pageInfo { hasNextPage endCursor } nodes { title } }"""

Variables = Callable[[Org], dict[str, Any]]
#: (mutation, payload object field, its type, the mutation's arguments and variables, the
#: object's selection, variables, fragments)
CASES: list[tuple[str, str, str, str, str, str, Variables, str]] = [
    (
        "createTask",
        "task",
        "Task",
        "$p: ID!, $n: Int!",
        '(input: {projectId: $p, title: "Read me back", priority: 3, '
        'dueDate: "2027-03-04T05:06:07.123456Z"})',
        TASK,
        lambda org: {"p": org.project, "n": 3},
        FRAGMENTS,
    ),
    (
        "updateTask",
        "task",
        "Task",
        "$id: ID!, $n: Int!",
        '(input: {id: $id, title: "Renamed \\u00e9", status: DONE})',
        TASK,
        lambda org: {"id": org.task(3), "n": 2},
        FRAGMENTS,
    ),
    (
        "addComment",
        "comment",
        "Comment",
        "$id: ID!",
        '(input: {taskId: $id, content: "Hello \\"you\\"\\n"})',
        COMMENT,
        lambda org: {"id": org.task(0)},
        "",
    ),
    (
        "updateProject",
        "project",
        "Project",
        "$id: ID!",
        '(input: {id: $id, description: "New words"})',
        PROJECT,
        lambda org: {"id": org.project},
        "",
    ),
]


def _documents(case: tuple[Any, ...]) -> tuple[str, str]:
    name, key, type_name, definitions, arguments, selection, _, fragments = case
    mutation = (
        f"mutation({definitions}) {{ {name}{arguments} "
        f"{{ errors {{ code }} {key} {{ {selection} }} }} }} {fragments}"
    )
    used = ", ".join(d for d in definitions.split(", ") if f"${d.split(':')[0][1:]}" in selection)
    read = (
        f"query($readId: ID!{', ' + used if used else ''}) {{ node(id: $readId) "
        f"{{ ... on {type_name} {{ {selection} }} }} }} {fragments}"
    )
    return mutation, read


#: The least role each mutation needs (members write tasks and comments, admins projects).
LEAST_ROLE = {"createTask": "member", "updateTask": "member", "addComment": "member"}


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
@pytest.mark.parametrize("rank", ["owner", "least"])
async def test_a_payload_read_back_answers_as_the_resolvers_do(
    pool: asyncpg.Pool, org_a: Org, org_b: Org, case: tuple[Any, ...], rank: str
) -> None:
    name, key = case[0], case[1]
    role = "owner" if rank == "owner" else LEAST_ROLE.get(name, "admin")
    mutation, read = _documents(case)
    for org in (org_a, org_b):
        await enrich(org)
    async with api_client(True) as compiled, api_client(False) as resolvers:
        for org in (org_a, org_b):
            variables = case[6](org)
            written = await compiled(mutation, variables, as_=(org, role))
            assert "errors" not in written, written
            payload = written["data"][name]
            assert payload["errors"] == []
            obj = payload[key]
            assert obj is not None
            # The same object through the resolvers, right after: the same answer.
            reread = await resolvers(read, {**variables, "readId": obj["id"]}, as_=(org, role))
            assert "errors" not in reread, reread
            assert obj == reread["data"]["node"]
            # The object is the writer's tenant's: the other tenant cannot read it.
            other = org_b if org is org_a else org_a
            hidden = await resolvers(read, {**variables, "readId": obj["id"]}, as_=(other, role))
            assert hidden["data"]["node"] is None
            # The read-back is ONE statement where the resolvers need several.
            again = await resolvers(mutation, variables, as_=(org, role))
            assert again["data"][name]["errors"] == []
            assert written["extensions"]["sqlStatements"] < again["extensions"]["sqlStatements"]


async def test_a_viewer_is_refused_and_a_rolled_back_payload_says_so_on_both_paths(
    pool: asyncpg.Pool, org_a: Org, org_b: Org
) -> None:
    forbidden = (
        'mutation($id: ID!) { updateTask(input: {id: $id, title: "No"}) '
        "{ task { id title project { name } } errors { code } } }"
    )
    rolled_back = (
        'mutation($p: ID!) { a: createTask(input: {projectId: $p, title: "kept?"}) '
        "{ task { id title project { name } } errors { code } } "
        'b: createProject(input: {name: "not for members"}) { project { id } errors { code } } }'
    )
    answers: dict[bool, list[Any]] = {}
    for compiled in (True, False):
        async with api_client(compiled) as api:
            for org in (org_a, org_b):
                viewer = await api(forbidden, {"id": org.task(0)}, as_=(org, "viewer"))
                member = await api(rolled_back, {"p": org.project}, as_=(org, "member"))
                answers.setdefault(compiled, []).append((viewer["data"], member["data"]))
    assert answers[True] == answers[False]
    viewer_data, member_data = answers[True][0]
    assert viewer_data["updateTask"]["task"] is None
    assert [e["code"] for e in viewer_data["updateTask"]["errors"]] == ["FORBIDDEN"]
    assert member_data["a"]["task"] is None
    assert [e["code"] for e in member_data["a"]["errors"]] == ["ROLLED_BACK"]


async def test_several_mutations_aliases_and_directives_read_back_alike(
    pool: asyncpg.Pool, org_a: Org, org_b: Org
) -> None:
    """Two mutations in one operation, aliased payload objects, a skipped one, a fragment
    at the payload level (left to the resolvers): the same data on both paths."""
    mutation = """mutation($p: ID!, $t: ID!, $skip: Boolean!) {
      one: createTask(input: {projectId: $p, title: "first"}) {
        made: task { title priority project { name } } shown: task @skip(if: $skip) { id }
        errors { code } }
      two: addComment(input: {taskId: $t, content: "second"}) { ...Payload }
      three: updateTask(input: {id: $t, priority: 2}) { task { priority } errors { code } }
    }
    fragment Payload on CommentPayload { comment { content task { title } } errors { code } }"""
    answers = []
    for compiled in (True, False):
        async with api_client(compiled) as api:
            for org in (org_a, org_b):
                body = await api(
                    mutation,
                    {"p": org.project, "t": org.task(1), "skip": True},
                    as_=(org, "member"),
                )
                assert "errors" not in body, body
                answers.append(body["data"])
    assert answers[0] == answers[2]
    assert answers[1] == answers[3]
    assert answers[0]["one"] == {
        "made": {
            "title": "first",
            "priority": 0,
            "project": {"name": answers[0]["one"]["made"]["project"]["name"]},
        },
        "errors": [],
    }
    assert "shown" not in answers[0]["one"]
    assert answers[0]["two"]["comment"]["content"] == "second"
    assert answers[0]["three"] == {"task": {"priority": 2}, "errors": []}


async def test_a_list_payload_answers_as_the_resolvers_do(
    pool: asyncpg.Pool, org_a: Org, org_b: Org
) -> None:
    """createTasks's ``tasks`` (left to the resolvers' batched loaders on both paths, see
    ``api.readback``): in order, a subtask of the batch among them, each the object a
    ``node`` read answers; none visible to the other tenant."""
    # Counted at createTasks's bound (1,000 tasks): a selection that fits the node limit.
    selection = """id title status priority dueDate completedAt parent { title }
      project { name } assignee { displayName } createdBy { email }
      subtasks(first: $n) { totalCount nodes { title } } ...Dates"""
    mutation = f"""mutation($p: ID!, $n: Int!, $tasks: [BulkTaskInput!]!) {{
      createTasks(input: {{projectId: $p, tasks: $tasks}}) {{
        errors {{ code }} tasks {{ {selection} }} }} }} {FRAGMENTS}"""
    read = (
        f"query($readId: ID!, $n: Int!) {{ node(id: $readId) {{ ... on Task {{ {selection} }} }} }} "
        f"{FRAGMENTS}"
    )
    batch: list[dict[str, Any]] = [
        {"title": "Batch parent", "priority": 2, "dueDate": "2027-01-02T03:04:05Z"},
        {"title": "Batch child \u00e9", "parentIndex": 0, "status": "IN_PROGRESS"},
        {"title": "Batch third"},
    ]
    async with api_client(True) as compiled, api_client(False) as resolvers:
        for org in (org_a, org_b):
            variables = {"p": org.project, "n": 2, "tasks": batch}
            written = await compiled(mutation, variables, as_=(org, "member"))
            assert "errors" not in written, written
            payload = written["data"]["createTasks"]
            assert payload["errors"] == []
            assert [t["title"] for t in payload["tasks"]] == [b["title"] for b in batch]
            assert payload["tasks"][1]["parent"] == {"title": "Batch parent"}
            for task in payload["tasks"]:
                reread = await resolvers(read, {"readId": task["id"], "n": 2}, as_=(org, "member"))
                assert reread["data"]["node"] == task
                other = org_b if org is org_a else org_a
                hidden = await resolvers(read, {"readId": task["id"], "n": 2}, as_=(other, "owner"))
                assert hidden["data"]["node"] is None
            again = await resolvers(mutation, variables, as_=(org, "member"))
            assert "errors" not in again, again
            assert [t["title"] for t in again["data"]["createTasks"]["tasks"]] == [
                b["title"] for b in batch
            ]
            assert written["extensions"]["sqlStatements"] == again["extensions"]["sqlStatements"]


async def test_the_node_limit_counts_what_the_client_asked_for(
    pool: asyncpg.Pool, org_a: Org, org_b: Org
) -> None:
    """The document executed is cut down to ids, but the node limit counts the client's
    whole selection: a payload object read back (about 10,100 nodes) beside a bulk payload
    (about 11,000 at its bound of 1,000 tasks) is over the limit of 20,000 on both paths
    alike, though each part is under it, and nothing is written."""
    mutation = """mutation($p: ID!, $tasks: [BulkTaskInput!]!) {
      createTask(input: {projectId: $p, title: "too big"}) {
        task { subtasks(first: 100) { nodes { comments(first: 100) { totalCount } } } } }
      createTasks(input: {projectId: $p, tasks: $tasks}) {
        tasks { id subtasks(first: 10) { nodes { id } } } } }"""
    answers = []
    for compiled in (True, False):
        async with api_client(compiled) as api:
            for org in (org_a, org_b):
                variables = {"p": org.project, "tasks": [{"title": "too big"}]}
                body = await api(mutation, variables, as_=(org, "member"))
                for error in body.get("errors", []):
                    error.get("extensions", {}).pop("requestId", None)
                answers.append(body)
    assert answers[0] == answers[2]
    assert answers[1] == answers[3]
    assert answers[0]["data"] is None
    assert answers[0]["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"
    assert answers[0]["errors"][0]["extensions"]["cost"] > 20_000
    async with api_client(False) as api:
        for org in (org_a, org_b):
            found = await api(
                'query($p: ID!) { project(id: $p) { tasks(first: 10, filter: {search: "too big"}) '
                "{ totalCount } } }",
                {"p": org.project},
                as_=(org, "owner"),
            )
            assert found["data"]["project"]["tasks"]["totalCount"] == 0


async def test_a_failed_bulk_payload_reads_nothing_back(
    pool: asyncpg.Pool, org_a: Org, org_b: Org
) -> None:
    """A batch refused (a bad parent index) or rolled back (a later mutation fails): the
    same answer on both paths, an empty list, and nothing written."""
    mutation = """mutation($p: ID!, $tasks: [BulkTaskInput!]!) {
      createTasks(input: {projectId: $p, tasks: $tasks}) { tasks { id title } errors { code } }
      createProject(input: {name: "members may not"}) { project { id } errors { code } } }"""
    answers: dict[bool, list[Any]] = {}
    for compiled in (True, False):
        async with api_client(compiled) as api:
            for org in (org_a, org_b):
                for tasks in ([{"title": "x", "parentIndex": 5}], [{"title": "rolled back"}]):
                    body = await api(
                        mutation, {"p": org.project, "tasks": tasks}, as_=(org, "member")
                    )
                    assert "errors" not in body, body
                    answers.setdefault(compiled, []).append(body["data"])
    assert answers[True] == answers[False]
    for data in answers[True]:
        assert data["createTasks"]["tasks"] == []
        assert data["createTasks"]["errors"]
    async with api_client(False) as api:
        for org in (org_a, org_b):
            found = await api(
                'query($p: ID!) { project(id: $p) { tasks(first: 100, filter: {search: "rolled back"}) { totalCount } } }',
                {"p": org.project},
                as_=(org, "owner"),
            )
            assert found["data"]["project"]["tasks"]["totalCount"] == 0
