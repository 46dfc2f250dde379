"""Every mutation over HTTP: what it changes, and its typed errors."""

from __future__ import annotations

from typing import Any

from tests.api.conftest import Api
from tests.api.test_queries import create_task
from tests.api.world import Org, session_token
from tests.seed import create_user

ERRORS = "errors { __typename message code path }"


async def run(
    api: Api, org: Org, role: str, mutation: str, input: dict[str, Any], fields: str
) -> dict[str, Any]:
    name = mutation[0].lower() + mutation[1:]
    input_type = f"{mutation}Input"
    body = await api(
        f"mutation($input: {input_type}!) {{ {name}(input: $input) {{ {fields} {ERRORS} }} }}",
        {"input": input},
        as_=(org, role),
    )
    assert "errors" not in body, body
    return body["data"][name]  # type: ignore[no-any-return]


async def test_create_organization_makes_the_caller_its_owner(api: Api, org_a: Org) -> None:
    slug = f"new-{org_a.slug}"
    created = await run(
        api,
        org_a,
        "viewer",
        "CreateOrganization",
        {"name": "New Co", "slug": slug},
        "organization { id slug name }",
    )
    assert created["errors"] == []
    assert created["organization"]["slug"] == slug
    viewer = await api(
        "{ viewer { memberships(first: 10) { nodes { role organization { slug } } } } }",
        token=org_a.tokens["viewer"],
    )
    assert {"role": "OWNER", "organization": {"slug": slug}} in viewer["data"]["viewer"][
        "memberships"
    ]["nodes"]
    taken = await run(
        api,
        org_a,
        "viewer",
        "CreateOrganization",
        {"name": "Again", "slug": slug},
        "organization { id }",
    )
    assert taken["errors"] == [
        {
            "__typename": "ConflictError",
            "message": "this slug is taken",
            "code": "CONFLICT",
            "path": ["input", "slug"],
        }
    ]
    bad = await run(
        api,
        org_a,
        "viewer",
        "CreateOrganization",
        {"name": " ", "slug": "Bad Slug"},
        "organization { id }",
    )
    assert {tuple(e["path"]) for e in bad["errors"]} == {("input", "name"), ("input", "slug")}


async def test_update_organization(api: Api, org_a: Org) -> None:
    done = await run(
        api, org_a, "owner", "UpdateOrganization", {"name": "Renamed"}, "organization { name slug }"
    )
    assert done == {"organization": {"name": "Renamed", "slug": org_a.slug}, "errors": []}


async def test_change_member_role_and_the_last_owner(api: Api, org_a: Org) -> None:
    promoted = await run(
        api,
        org_a,
        "admin",
        "ChangeMemberRole",
        {"userId": org_a.user("viewer"), "role": "MEMBER"},
        "member { role }",
    )
    assert promoted == {"member": {"role": "MEMBER"}, "errors": []}
    last = await run(
        api,
        org_a,
        "owner",
        "ChangeMemberRole",
        {"userId": org_a.user("owner"), "role": "ADMIN"},
        "member { role }",
    )
    assert last["errors"][0]["code"] == "CONFLICT"
    assert "last owner" in last["errors"][0]["message"]
    second = await run(
        api,
        org_a,
        "owner",
        "ChangeMemberRole",
        {"userId": org_a.user("admin"), "role": "OWNER"},
        "member { role }",
    )
    assert second["errors"] == []
    now_possible = await run(
        api,
        org_a,
        "owner",
        "ChangeMemberRole",
        {"userId": org_a.user("owner"), "role": "ADMIN"},
        "member { role }",
    )
    assert now_possible == {"member": {"role": "ADMIN"}, "errors": []}


async def test_remove_member_leave_and_the_last_owner(api: Api, org_a: Org) -> None:
    removed = await run(
        api, org_a, "admin", "RemoveMember", {"userId": org_a.user("viewer")}, "removedUserId"
    )
    assert removed == {"removedUserId": org_a.user("viewer"), "errors": []}
    assert (
        await api.post("{ viewer { user { id } } }", token=org_a.tokens["viewer"], org=org_a.slug)
    ).status_code == 403
    left = await run(
        api, org_a, "member", "RemoveMember", {"userId": org_a.user("member")}, "removedUserId"
    )
    assert left["errors"] == []
    stuck = await run(
        api, org_a, "owner", "RemoveMember", {"userId": org_a.user("owner")}, "removedUserId"
    )
    assert stuck["errors"][0]["code"] == "CONFLICT"
    # The member's tasks were unassigned by the database when they left.
    body = await api(
        "query($id: ID!) { task(id: $id) { assignee { email } } }",
        {"id": org_a.task(2)},
        as_=(org_a, "owner"),
    )
    assert body["data"]["task"]["assignee"] is None


async def test_projects_create_update_archive_unarchive(api: Api, org_a: Org) -> None:
    created = await run(
        api,
        org_a,
        "admin",
        "CreateProject",
        {"name": "Apollo", "description": "moon"},
        "project { id name description status createdBy { email } }",
    )
    project = created["project"]
    assert (project["name"], project["description"], project["status"]) == (
        "Apollo",
        "moon",
        "ACTIVE",
    )
    assert project["createdBy"] == {"email": org_a.emails["admin"]}
    updated = await run(
        api,
        org_a,
        "admin",
        "UpdateProject",
        {"id": project["id"], "description": None, "status": "ON_HOLD"},
        "project { name description status }",
    )
    assert updated["project"] == {"name": "Apollo", "description": None, "status": "ON_HOLD"}
    archived = await run(
        api,
        org_a,
        "admin",
        "ArchiveProject",
        {"id": project["id"]},
        "project { archived archivedAt }",
    )
    assert archived["project"]["archived"] is True
    restored = await run(
        api, org_a, "admin", "UnarchiveProject", {"id": project["id"]}, "project { archived }"
    )
    assert restored["project"] == {"archived": False}
    blank = await run(api, org_a, "admin", "CreateProject", {"name": "  "}, "project { id }")
    assert blank["errors"][0]["path"] == ["input", "name"]


async def test_create_task_with_parent_and_assignee_checks(
    api: Api, org_a: Org, org_b: Org
) -> None:
    fields = "task { title parent { title } assignee { email } }"
    ok = await run(
        api,
        org_a,
        "member",
        "CreateTask",
        {
            "projectId": org_a.project,
            "title": "Sub",
            "parentId": org_a.task(0),
            "assigneeId": org_a.user("viewer"),
        },
        fields,
    )
    assert ok["task"] == {
        "title": "Sub",
        "parent": {"title": "Task 0 of a"},
        "assignee": {"email": org_a.emails["viewer"]},
    }
    outsider = await run(
        api,
        org_a,
        "member",
        "CreateTask",
        {"projectId": org_a.project, "title": "X", "assigneeId": org_b.user("member")},
        fields,
    )
    assert outsider["errors"] == [
        {
            "__typename": "ValidationError",
            "message": "the assignee must be a member of this organization",
            "code": "BAD_USER_INPUT",
            "path": ["input", "assigneeId"],
        }
    ]
    bad_priority = await run(
        api,
        org_a,
        "member",
        "CreateTask",
        {"projectId": org_a.project, "title": "X", "priority": 7},
        fields,
    )
    assert bad_priority["errors"][0]["path"] == ["input", "priority"]
    bad_id = await run(
        api, org_a, "member", "CreateTask", {"projectId": "garbage", "title": "X"}, fields
    )
    assert bad_id["errors"][0]["code"] == "BAD_USER_INPUT"


async def test_update_move_assign_complete_reopen_delete(api: Api, org_a: Org) -> None:
    task = org_a.task(1)
    fields = "task { title description status priority dueDate completedAt parent { title } assignee { email } }"
    updated = await run(
        api,
        org_a,
        "member",
        "UpdateTask",
        {
            "id": task,
            "title": "Renamed",
            "description": "d",
            "priority": 3,
            "dueDate": "2030-01-01T00:00:00Z",
        },
        fields,
    )
    assert updated["task"]["title"] == "Renamed"
    assert updated["task"]["priority"] == 3
    cleared = await run(
        api,
        org_a,
        "member",
        "UpdateTask",
        {"id": task, "description": None, "dueDate": None},
        fields,
    )
    assert (
        cleared["task"]["description"],
        cleared["task"]["dueDate"],
        cleared["task"]["title"],
    ) == (None, None, "Renamed")
    moved = await run(
        api, org_a, "member", "MoveTask", {"id": task, "parentId": org_a.task(0)}, fields
    )
    assert moved["task"]["parent"] == {"title": "Task 0 of a"}
    rooted = await run(api, org_a, "member", "MoveTask", {"id": task, "parentId": None}, fields)
    assert rooted["task"]["parent"] is None
    assigned = await run(
        api, org_a, "member", "AssignTask", {"id": task, "assigneeId": org_a.user("owner")}, fields
    )
    assert assigned["task"]["assignee"] == {"email": org_a.emails["owner"]}
    unassigned = await run(
        api, org_a, "member", "AssignTask", {"id": task, "assigneeId": None}, fields
    )
    assert unassigned["task"]["assignee"] is None
    done = await run(api, org_a, "member", "CompleteTask", {"id": task}, fields)
    assert done["task"]["status"] == "DONE"
    assert done["task"]["completedAt"] is not None
    reopened = await run(api, org_a, "member", "ReopenTask", {"id": task}, fields)
    assert (reopened["task"]["status"], reopened["task"]["completedAt"]) == ("TODO", None)
    child = await create_task(api, org_a, title="Doomed child", parentId=task)
    deleted = await run(api, org_a, "member", "DeleteTask", {"id": task}, "deletedTaskId")
    assert deleted == {"deletedTaskId": task, "errors": []}
    gone = await api(
        "query($a: ID!, $b: ID!) { a: task(id: $a) { id } b: task(id: $b) { id } }",
        {"a": task, "b": child},
        as_=(org_a, "member"),
    )
    assert gone["data"] == {"a": None, "b": None}
    again = await run(api, org_a, "member", "DeleteTask", {"id": task}, "deletedTaskId")
    assert again["errors"][0]["code"] == "NOT_FOUND"


async def test_a_move_that_would_make_a_cycle_is_a_typed_error(api: Api, org_a: Org) -> None:
    root = await create_task(api, org_a, title="Root")
    child = await create_task(api, org_a, title="Child", parentId=root)
    grandchild = await create_task(api, org_a, title="Grandchild", parentId=child)
    for target in (root, child, grandchild):
        result = await run(
            api, org_a, "member", "MoveTask", {"id": root, "parentId": target}, "task { id }"
        )
        assert result["task"] is None
        assert result["errors"][0]["__typename"] == "CycleError"
        assert result["errors"][0]["path"] == ["input", "parentId"]
    body = await api(
        "query($id: ID!) { task(id: $id) { parent { id } } }", {"id": root}, as_=(org_a, "member")
    )
    assert body["data"]["task"]["parent"] is None


async def test_comments_add_edit_with_history_and_delete(api: Api, org_a: Org) -> None:
    added = await run(
        api,
        org_a,
        "member",
        "AddComment",
        {"taskId": org_a.task(0), "content": "v1"},
        "comment { id content author { email } }",
    )
    comment = added["comment"]["id"]
    edited = await run(
        api,
        org_a,
        "member",
        "EditComment",
        {"id": comment, "content": "v2"},
        "comment { content editedAt history { content replacedBy { email } } }",
    )
    assert edited["comment"]["content"] == "v2"
    assert edited["comment"]["editedAt"] is not None
    assert edited["comment"]["history"] == [
        {"content": "v1", "replacedBy": {"email": org_a.emails["member"]}}
    ]
    not_mine = await run(
        api, org_a, "admin", "EditComment", {"id": comment, "content": "hijack"}, "comment { id }"
    )
    assert not_mine["errors"][0]["__typename"] == "ForbiddenError"
    deleted = await run(
        api, org_a, "member", "DeleteComment", {"id": comment}, "comment { deletedAt }"
    )
    assert deleted["comment"]["deletedAt"] is not None
    listed = await api(
        "query($id: ID!) { task(id: $id) { comments(first: 50) { nodes { content } } } }",
        {"id": org_a.task(0)},
        as_=(org_a, "member"),
    )
    assert "v2" not in [c["content"] for c in listed["data"]["task"]["comments"]["nodes"]]
    others = org_a.gid("Comment", org_a.comment_ids[0])
    by_admin = await run(
        api, org_a, "admin", "DeleteComment", {"id": others}, "comment { deletedAt }"
    )
    assert by_admin["errors"] == []


async def test_bulk_create_of_a_thousand_tasks_is_one_statement(api: Api, org_a: Org) -> None:
    tasks = [{"title": f"Bulk {i}", "priority": i % 5} for i in range(1000)]
    tasks[1]["parentIndex"] = 0
    body = await api(
        "mutation($input: CreateTasksInput!) { createTasks(input: $input) { tasks { title parent { title } } errors { message path } } }",
        {"input": {"projectId": org_a.project, "tasks": tasks}},
        as_=(org_a, "member"),
    )
    payload = body["data"]["createTasks"]
    assert payload["errors"] == []
    assert len(payload["tasks"]) == 1000
    assert payload["tasks"][1] == {"title": "Bulk 1", "parent": {"title": "Bulk 0"}}
    # set-up, one INSERT for 1,000 rows, one batched parent lookup (the operation's only
    # mutation takes no savepoint)
    assert body["extensions"]["sqlStatements"] == 3


async def test_bulk_create_is_all_or_nothing(api: Api, org_a: Org, org_b: Org) -> None:
    tasks = [{"title": f"Fine {i}"} for i in range(10)] + [
        {"title": "Bad", "assigneeId": org_b.user("member")}
    ]
    result = await run(
        api,
        org_a,
        "member",
        "CreateTasks",
        {"projectId": org_a.project, "tasks": tasks},
        "tasks { id }",
    )
    assert result["tasks"] == []
    assert result["errors"][0]["path"] == ["input", "assigneeId"]
    invalid = await run(
        api,
        org_a,
        "member",
        "CreateTasks",
        {
            "projectId": org_a.project,
            "tasks": [{"title": "ok"}, {"title": ""}, {"title": "x", "parentIndex": 5}],
        },
        "tasks { id }",
    )
    assert {tuple(e["path"]) for e in invalid["errors"]} == {
        ("input", "tasks", "1", "title"),
        ("input", "tasks", "2", "parentIndex"),
    }
    count = await api(
        "query($id: ID!) { project(id: $id) { tasks(first: 1) { totalCount } } }",
        {"id": org_a.project},
        as_=(org_a, "member"),
    )
    assert count["data"]["project"]["tasks"]["totalCount"] == 3
    too_many = await run(
        api,
        org_a,
        "member",
        "CreateTasks",
        {"projectId": org_a.project, "tasks": [{"title": "t"}] * 1001},
        "tasks { id }",
    )
    assert too_many["errors"][0]["path"] == ["input", "tasks"]


async def test_a_failed_mutation_rolls_back_the_whole_operation(api: Api, org_a: Org) -> None:
    body = await api(
        """mutation($p: ID!, $t: ID!) {
            first: createTask(input: {projectId: $p, title: "Written then undone"}) { task { id } errors { message } }
            second: moveTask(input: {id: $t, parentId: $t}) { task { id } errors { __typename } }
        }""",
        {"p": org_a.project, "t": org_a.task(0)},
        as_=(org_a, "member"),
    )
    # The first mutation did its part, then the second failed: the first's payload must not
    # report a task that was rolled back (issue 11, finding 4).
    assert body["data"]["first"] == {
        "task": None,
        "errors": [
            {
                "message": "not saved: another mutation of this operation failed, so the "
                "whole operation was rolled back"
            }
        ],
    }
    assert body["data"]["second"]["errors"] == [{"__typename": "CycleError"}]
    search = await api(
        'query { search(text: "Written then undone", first: 5) { totalCount } }',
        as_=(org_a, "member"),
    )
    assert search["data"]["search"]["totalCount"] == 0


async def test_sessions_of_new_users_work_immediately(api: Api, org_a: Org) -> None:
    user = await create_user(f"fresh-{org_a.slug}@example.test")
    token = await session_token(user)
    body = await api("{ viewer { user { email } } }", token=token)
    assert body["data"]["viewer"]["user"]["email"] == f"fresh-{org_a.slug}@example.test"


async def test_a_lone_mutation_refused_by_the_database_takes_no_savepoint(
    api: Api, org_a: Org, org_b: Org
) -> None:
    """The operation's only mutation runs without a savepoint: a statement the database
    refuses still gives the typed error, writes nothing, and leaves the pooled connection
    fit for the next request; the other tenant sees nothing either way."""

    async def totals() -> tuple[int, int]:
        query = "query($id: ID!) { project(id: $id) { tasks(first: 1) { totalCount } } }"
        a = await api(query, {"id": org_a.project}, as_=(org_a, "member"))
        b = await api(query, {"id": org_b.project}, as_=(org_b, "member"))
        return (
            a["data"]["project"]["tasks"]["totalCount"],
            b["data"]["project"]["tasks"]["totalCount"],
        )

    before = await totals()
    refused = await api(
        "mutation($input: CreateTaskInput!) { createTask(input: $input) { task { id } errors { code path } } }",
        {"input": {"projectId": org_a.project, "title": "x", "assigneeId": org_b.user("member")}},
        as_=(org_a, "member"),
    )
    assert refused["data"]["createTask"] == {
        "task": None,
        "errors": [{"code": "BAD_USER_INPUT", "path": ["input", "assigneeId"]}],
    }
    # set-up and the INSERT the database refused: no SAVEPOINT, no RELEASE
    assert refused["extensions"]["sqlStatements"] == 2
    assert await totals() == before
    # Two mutations: the first refused by the database, the second still runs (in a
    # savepoint after the first's) and reports that the operation was rolled back.
    both = await api(
        "mutation($bad: CreateTaskInput!, $good: CreateTaskInput!) {"
        " a: createTask(input: $bad) { task { id } errors { code } }"
        " b: createTask(input: $good) { task { id } errors { code } } }",
        {
            "bad": {"projectId": org_a.project, "title": "x", "assigneeId": org_b.user("member")},
            "good": {"projectId": org_a.project, "title": "fine"},
        },
        as_=(org_a, "member"),
    )
    assert both["data"]["a"] == {"task": None, "errors": [{"code": "BAD_USER_INPUT"}]}
    assert both["data"]["b"]["task"] is None
    assert [e["code"] for e in both["data"]["b"]["errors"]] == ["ROLLED_BACK"]
    assert await totals() == before
