"""Demo data: two organizations, five users, projects, a three-level task tree, comments,
and one pending invitation (Erin of Globex, invited to Acme by Bob: log in as Erin to see
it in ``viewer.invitations``).

Loaded through the server role and tenant transactions, exactly as the API writes: row-level
security checks every row and the audit log records every change with its actor.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from uuid import UUID

from db import tables
from db.passwords import hash_password
from db.tenancy import TenantContext, allow_lookup, request_transaction, tenant_transaction
from db.uuid7 import uuid7

DEMO_PASSWORD = "taskql-demo"

#: email -> display name
USERS = {
    "alice@acme.test": "Alice Archer",
    "bob@acme.test": "Bob Builder",
    "carol@example.test": "Carol Chen",
    "dave@globex.test": "Dave Dalton",
    "erin@globex.test": "Erin Evans",
}

#: slug -> (name, {email: role}, projects)
ORGANIZATIONS: dict[str, tuple[str, dict[str, str], list[str]]] = {
    "acme": (
        "Acme Robotics",
        {"alice@acme.test": "owner", "bob@acme.test": "admin", "carol@example.test": "member"},
        ["Warehouse robot v2", "Website relaunch"],
    ),
    "globex": (
        "Globex Research",
        {"dave@globex.test": "owner", "erin@globex.test": "member", "carol@example.test": "viewer"},
        ["Fusion lab notebook", "Grant application"],
    ),
}

#: A tree three levels deep: root tasks, their subtasks, and sub-subtasks.
TASK_TREE: list[tuple[str, list[tuple[str, list[str]]]]] = [
    (
        "Plan the work",
        [
            ("Write the brief", ["Collect requirements", "Review with team"]),
            ("Estimate", ["Break down epics"]),
        ],
    ),
    ("Build it", [("Prototype", ["Spike the hard part"]), ("Implement", [])]),
    ("Ship it", [("Release notes", []), ("Announce", ["Draft the post"])]),
]


#: (organization slug, inviter e-mail, invitee e-mail, role): pending, valid for 7 days.
INVITATIONS = [("acme", "bob@acme.test", "erin@globex.test", "member")]


@dataclass(frozen=True)
class DemoSummary:
    users: int
    organizations: int
    projects: int
    tasks: int
    comments: int
    invitations: int


def _task_tree(
    org_id: UUID,
    project_id: UUID,
    project_name: str,
    owner: UUID,
    assignees: list[UUID],
    now: datetime,
) -> list[tables.Task]:
    """The rows of TASK_TREE for one project, parents before children, varied attributes."""
    rows: list[tables.Task] = []

    def add(title: str, parent: UUID | None) -> UUID:
        serial = len(rows) + 1
        task_id = uuid7()
        rows.append(
            tables.Task(
                id=task_id,
                organization_id=org_id,
                project_id=project_id,
                parent_task_id=parent,
                title=title,
                description=f"{title} ({project_name}).",
                status=("done", "in_progress", "todo", "blocked")[serial % 4],
                priority=serial % 5,
                assignee_id=assignees[serial % len(assignees)] if serial % 3 else None,
                created_by=owner,
                due_date=now + timedelta(days=3 * serial) if serial % 2 else None,
            )
        )
        return task_id

    for root_title, children in TASK_TREE:
        root = add(root_title, None)
        for child_title, grandchildren in children:
            child = add(child_title, root)
            for grandchild_title in grandchildren:
                add(grandchild_title, child)
    return rows


async def demo_loaded() -> bool:
    first = next(iter(USERS))
    async with tenant_transaction(TenantContext()) as tx:
        await allow_lookup(tx, login_email=first)
        return bool(await tables.User.exists().where(tables.User.email == first))


async def load_demo() -> DemoSummary | None:
    """Load the demo data unless it is there already (returns None then)."""
    if await demo_loaded():
        return None
    password_hash = hash_password(DEMO_PASSWORD)
    user_ids: dict[str, UUID] = {}
    for email, name in USERS.items():
        user_id = uuid7()
        async with tenant_transaction(TenantContext(user_id=user_id)):
            await tables.User.insert(
                tables.User(id=user_id, email=email, display_name=name, password_hash=password_hash)
            )
        user_ids[email] = user_id

    now = datetime.now(UTC)
    counts = {"projects": 0, "tasks": 0, "comments": 0, "invitations": 0}
    org_ids: dict[str, UUID] = {}
    roles: dict[tuple[str, str], str] = {}
    for slug, (org_name, members, project_names) in ORGANIZATIONS.items():
        org_id = uuid7()
        org_ids[slug] = org_id
        roles.update({(slug, email): role for email, role in members.items()})
        owner_email = next(e for e, role in members.items() if role == "owner")
        owner = user_ids[owner_email]
        context = TenantContext(
            organization_id=org_id, user_id=owner, role="owner", request_id="demo-seed"
        )
        comments: list[tables.TaskComment] = []
        async with tenant_transaction(context):
            await tables.Organization.insert(
                tables.Organization(id=org_id, name=org_name, slug=slug)
            )
            await tables.OrganizationMember.insert(
                *[
                    tables.OrganizationMember(
                        organization_id=org_id,
                        user_id=user_ids[email],
                        role=role,
                        invited_by=None if email == owner_email else owner,
                    )
                    for email, role in members.items()
                ]
            )
            assignees = [user_ids[e] for e, role in members.items() if role != "viewer"]
            for p_index, project_name in enumerate(project_names):
                project_id = uuid7()
                await tables.Project.insert(
                    tables.Project(
                        id=project_id,
                        organization_id=org_id,
                        name=project_name,
                        description=f"Demo project {p_index + 1} of {org_name}.",
                        created_by=owner,
                    )
                )
                counts["projects"] += 1
                rows = _task_tree(org_id, project_id, project_name, owner, assignees, now)
                await tables.Task.insert(*rows)
                counts["tasks"] += len(rows)

                comments += [
                    tables.TaskComment(
                        id=uuid7(),
                        organization_id=org_id,
                        task_id=row.id,
                        author_id=assignees[(i + j) % len(assignees)],
                        content=f"Comment {j + 1} on “{row.title}”.",
                    )
                    for i, row in enumerate(rows[:6])
                    for j in range(2)
                ]
        # Comments are written by their authors (row-level security checks authorship);
        # each author also edits their first comment, so content_history has something.
        roles_by_id = {user_ids[e]: role for e, role in members.items()}
        for author in assignees:
            own = [c for c in comments if c.author_id == author]
            author_context = TenantContext(
                organization_id=org_id,
                user_id=author,
                role=roles_by_id[author],
                request_id="demo-seed",
            )
            async with tenant_transaction(author_context):
                await tables.TaskComment.insert(*own)
                await tables.TaskComment.update(
                    {tables.TaskComment.content: own[0].content + " (edited: fixed a typo)"}
                ).where(tables.TaskComment.id == own[0].id)
            counts["comments"] += len(own)
    for slug, inviter, invitee, role in INVITATIONS:
        inviter_context = TenantContext(
            organization_id=org_ids[slug],
            user_id=user_ids[inviter],
            role=roles[(slug, inviter)],
            request_id="demo-seed",
        )
        async with tenant_transaction(inviter_context):
            await tables.OrganizationInvitation.insert(
                tables.OrganizationInvitation(
                    organization_id=org_ids[slug],
                    email=invitee,
                    role=role,
                    invited_by=user_ids[inviter],
                    expires_at=now + timedelta(days=7),
                )
            )
        counts["invitations"] += 1
    return DemoSummary(
        users=len(USERS),
        organizations=len(ORGANIZATIONS),
        **counts,
    )


async def demo_session() -> tuple[str, str, str]:
    """A fresh session for the first demo user (owner of the first organization), so the
    start-up log can print a token to paste: (email, organization slug, token)."""
    import secrets

    from db.queries import users

    email = next(iter(USERS))
    slug = next(iter(ORGANIZATIONS))
    async with tenant_transaction(TenantContext()) as tx:
        await allow_lookup(tx, login_email=email)
        user = await tables.User.select(tables.User.id).where(tables.User.email == email).first()
    if user is None:
        raise RuntimeError("the demo data is not loaded: run `taskql seed-demo`")
    token = secrets.token_urlsafe(32)
    async with request_transaction(TenantContext(user_id=user["id"])) as (_, executor):
        await users.create_session(
            executor, user["id"], token, datetime.now(UTC) + timedelta(days=7), None, "taskql serve"
        )
    return email, slug, token
