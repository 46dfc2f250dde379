"""Piccolo table declarations, for querying. The schema itself (keys, constraints, triggers,
row-level security) is defined by the SQL migrations in ``piccolo_migrations/``; see
``docs/architecture/database.md``.

Piccolo needs one primary-key column per table: it is ``id`` everywhere, which is unique on
its own (UUIDv7); in the database tenant tables use ``(organization_id, id)``.
Generated columns (``search_vector``) are not declared, so Piccolo never writes them.
"""

from __future__ import annotations

from piccolo.columns import (
    JSONB,
    UUID,
    Bytea,
    SmallInt,
    Text,
    Timestamptz,
    Varchar,
)
from piccolo.columns.defaults.timestamptz import TimestamptzNow
from piccolo.table import Table

from db.engine import DB
from db.uuid7 import UUIDv7


def _id() -> UUID:
    return UUID(primary_key=True, default=UUIDv7())


class User(Table, tablename="users", db=DB):
    id = _id()
    #: Unique case-insensitively (index on lower(email)).
    email = Text()
    display_name = Text()
    #: argon2id hash; never leaves the database layer.
    password_hash = Text(secret=True)
    created_at = Timestamptz(default=TimestamptzNow())
    updated_at = Timestamptz(default=TimestamptzNow())


class Session(Table, tablename="sessions", db=DB):
    id = _id()
    user_id = UUID()
    #: SHA-256 of the bearer token.
    token_hash = Bytea()
    created_at = Timestamptz(default=TimestamptzNow())
    expires_at = Timestamptz()
    revoked_at = Timestamptz(null=True, default=None)
    ip_address = Varchar(length=45, null=True, default=None)
    user_agent = Text(null=True, default=None)


class Organization(Table, tablename="organizations", db=DB):
    id = _id()
    name = Text()
    slug = Text()
    created_at = Timestamptz(default=TimestamptzNow())
    updated_at = Timestamptz(default=TimestamptzNow())


class OrganizationMember(Table, tablename="organization_members", db=DB):
    id = _id()
    organization_id = UUID()
    user_id = UUID()
    #: owner | admin | member | viewer
    role = Text(default="member")
    invited_by = UUID(null=True, default=None)
    created_at = Timestamptz(default=TimestamptzNow())
    updated_at = Timestamptz(default=TimestamptzNow())


class OrganizationInvitation(Table, tablename="organization_invitations", db=DB):
    id = _id()
    organization_id = UUID()
    #: Whoever signs in with this e-mail (any case) is the invitee.
    email = Text()
    #: owner | admin | member | viewer: the role accepting grants.
    role = Text(default="member")
    #: A member of the same organization (composite key), or NULL once they left.
    invited_by = UUID(null=True, default=None)
    created_at = Timestamptz(default=TimestamptzNow())
    expires_at = Timestamptz()
    #: At most one of these is set (CHECK); none: pending.
    accepted_at = Timestamptz(null=True, default=None)
    declined_at = Timestamptz(null=True, default=None)
    revoked_at = Timestamptz(null=True, default=None)


class Project(Table, tablename="projects", db=DB):
    id = _id()
    #: Owning tenant; every RLS policy filters on it.
    organization_id = UUID()
    name = Text()
    description = Text(null=True, default=None)
    #: planned | active | on_hold | completed
    status = Text(default="active")
    created_by = UUID(null=True, default=None)
    created_at = Timestamptz(default=TimestamptzNow())
    updated_at = Timestamptz(default=TimestamptzNow())
    archived_at = Timestamptz(null=True, default=None)


class Task(Table, tablename="tasks", db=DB):
    id = _id()
    organization_id = UUID()
    project_id = UUID()
    #: Same tenant and project (composite key); never a descendant (trigger).
    parent_task_id = UUID(null=True, default=None)
    title = Text()
    description = Text(null=True, default=None)
    #: todo | in_progress | blocked | done | cancelled
    status = Text(default="todo")
    #: 0 none .. 4 urgent
    priority = SmallInt(default=0)
    #: A member of the same organization (composite key), or NULL.
    assignee_id = UUID(null=True, default=None)
    created_by = UUID(null=True, default=None)
    due_date = Timestamptz(null=True, default=None)
    #: Set by trigger when status becomes done, cleared when reopened.
    completed_at = Timestamptz(null=True, default=None)
    created_at = Timestamptz(default=TimestamptzNow())
    updated_at = Timestamptz(default=TimestamptzNow())


class TaskComment(Table, tablename="task_comments", db=DB):
    id = _id()
    organization_id = UUID()
    task_id = UUID()
    author_id = UUID(null=True, default=None)
    content = Text()
    #: Previous versions, appended by trigger on every content change.
    content_history = JSONB(default=[])
    created_at = Timestamptz(default=TimestamptzNow())
    updated_at = Timestamptz(default=TimestamptzNow())
    edited_at = Timestamptz(null=True, default=None)
    deleted_at = Timestamptz(null=True, default=None)


class AuditLog(Table, tablename="audit_logs", db=DB):
    id = _id()
    organization_id = UUID()
    actor_id = UUID(null=True, default=None)
    #: insert | update | delete
    action = Text()
    #: The audited table's name.
    entity_type = Text()
    entity_id = UUID()
    changes = JSONB()
    request_id = Text(null=True, default=None)
    ip_address = Varchar(length=45, null=True, default=None)
    user_agent = Text(null=True, default=None)
    created_at = Timestamptz(default=TimestamptzNow())
