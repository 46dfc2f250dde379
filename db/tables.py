"""Piccolo table declarations, faithful to the migrated schema where Piccolo can say it.

The schema itself is defined by the SQL migrations in ``piccolo_migrations/``; these classes
describe the same tables for Piccolo queries and for Piccolo's auto-migration snapshot.
``tests/db/test_tables.py`` compares every class with ``information_schema`` on a freshly
migrated database (columns, types, nullability, defaults, single-column foreign keys) and
fails on drift either way; see docs/architecture/database.md, "db/tables.py".

Conventions, because Piccolo cannot express everything the migrations do:

- **Primary keys.** Piccolo needs one primary-key column per table: it is ``id`` everywhere,
  unique on its own (UUIDv7). In the database the tenant tables' keys are composite,
  ``(organization_id, id)`` (``audit_logs``: ``(organization_id, created_at, id)``). The
  drift test checks that the class's key column is part of the table's key.
- **Foreign keys.** Single-column foreign keys are ``ForeignKey`` columns, with the
  database's ON DELETE and ON UPDATE (NO ACTION). The composite ones, which keep children in
  their parent's tenant, are plain ``UUID`` columns with a comment naming the key.
- **Defaults.** A column with a database default declares the same default (``uuidv7()``:
  ``UUIDv7()``, ``now()``: ``TimestamptzNow()``, constants as themselves). A NOT NULL
  column without a database default is ``default=None, required=True``: the insert must
  supply it (left out, PostgreSQL refuses the NULL; Piccolo would otherwise fill in its own
  type default, ``""`` or a random UUID). ``realtime_events.xid``'s
  ``DEFAULT pg_current_xact_id()`` is the one default not expressed (a database function
  Piccolo has no Python counterpart for; triggers write that table).
- **Not declared**: generated columns (``search_vector``), so Piccolo never writes them;
  CHECKs, triggers, row-level security, partitions, indexes and unique keys.
"""

from __future__ import annotations

from piccolo.columns import (
    JSONB,
    UUID,
    BigInt,
    BigSerial,
    Bytea,
    ForeignKey,
    SmallInt,
    Text,
    Timestamptz,
)
from piccolo.columns.base import OnDelete, OnUpdate
from piccolo.columns.defaults.timestamptz import TimestamptzNow
from piccolo.table import Table

from db.columns import Inet, Xid8
from db.engine import DB
from db.uuid7 import UUIDv7


def _id() -> UUID:
    return UUID(primary_key=True, default=UUIDv7())


def _now() -> Timestamptz:
    return Timestamptz(default=TimestamptzNow())


def _optional_time() -> Timestamptz:
    return Timestamptz(null=True, default=None)


class User(Table, tablename="users", db=DB):
    """Not expressed here: unique ``email_key`` index, the trigger keeping ``email_key`` and
    its NOT NULL CHECK, e-mail format CHECK, RLS."""

    id = _id()
    #: Unique case-insensitively (by ``email_key``).
    email = Text(default=None, required=True)
    #: ``lower(email)``, kept by the trigger ``users_set_email_key`` (whatever is written
    #: here is replaced): the log-in key, compared with leakproof text ``=`` (migration 28).
    #: Never NULL (CHECK ``users_email_key_present``), but nullable for Piccolo, which
    #: would otherwise require it on every insert.
    email_key = Text(null=True, default=None)
    display_name = Text(default=None, required=True)
    #: argon2id hash; never leaves the database layer.
    password_hash = Text(default=None, secret=True, required=True)
    created_at = _now()
    updated_at = _now()


class Session(Table, tablename="sessions", db=DB):
    """Not expressed here: unique ``token_hash``, RLS."""

    id = _id()
    user_id = ForeignKey(
        references=User,
        null=False,
        on_delete=OnDelete.cascade,
        on_update=OnUpdate.no_action,
        required=True,
    )
    #: SHA-256 of the bearer token.
    token_hash = Bytea(default=None, required=True)
    created_at = _now()
    expires_at = Timestamptz(default=None, required=True)
    revoked_at = _optional_time()
    ip_address = Inet(null=True)
    user_agent = Text(null=True, default=None)


class Organization(Table, tablename="organizations", db=DB):
    """Not expressed here: unique ``slug`` and its format CHECK, RLS."""

    id = _id()
    name = Text(default=None, required=True)
    slug = Text(default=None, required=True)
    created_at = _now()
    updated_at = _now()


class OrganizationMember(Table, tablename="organization_members", db=DB):
    """Primary key ``(organization_id, id)``; unique ``(organization_id, user_id)`` (the
    target of the composite assignee and inviter keys); role CHECK; the last-owner
    constraint trigger; RLS."""

    id = _id()
    organization_id = ForeignKey(
        references=Organization,
        null=False,
        on_delete=OnDelete.cascade,
        on_update=OnUpdate.no_action,
        required=True,
    )
    user_id = ForeignKey(
        references=User,
        null=False,
        on_delete=OnDelete.cascade,
        on_update=OnUpdate.no_action,
        required=True,
    )
    #: owner | admin | member | viewer
    role = Text(default="member")
    invited_by = ForeignKey(
        references=User, null=True, on_delete=OnDelete.set_null, on_update=OnUpdate.no_action
    )
    created_at = _now()
    updated_at = _now()


class OrganizationInvitation(Table, tablename="organization_invitations", db=DB):
    """Primary key ``(organization_id, id)``; composite key ``(organization_id, invited_by)
    → organization_members (organization_id, user_id) ON DELETE SET NULL (invited_by)``; one
    pending invitation per ``lower(email)`` (partial unique index); outcome CHECKs; the
    immutability trigger; RLS."""

    id = _id()
    organization_id = ForeignKey(
        references=Organization,
        null=False,
        on_delete=OnDelete.cascade,
        on_update=OnUpdate.no_action,
        required=True,
    )
    #: Whoever signs in with this e-mail (any case) is the invitee.
    email = Text(default=None, required=True)
    #: owner | admin | member | viewer: the role accepting grants.
    role = Text(default="member")
    #: A member of the same organization (composite key), or NULL once they left.
    invited_by = UUID(null=True, default=None)
    created_at = _now()
    expires_at = Timestamptz(default=None, required=True)
    #: At most one of these is set (CHECK); none: pending.
    accepted_at = _optional_time()
    declined_at = _optional_time()
    revoked_at = _optional_time()


class Project(Table, tablename="projects", db=DB):
    """Primary key ``(organization_id, id)``; status and name CHECKs; the generated
    ``search_vector``; RLS."""

    id = _id()
    #: Owning tenant; every RLS policy filters on it.
    organization_id = ForeignKey(
        references=Organization,
        null=False,
        on_delete=OnDelete.cascade,
        on_update=OnUpdate.no_action,
        required=True,
    )
    name = Text(default=None, required=True)
    description = Text(null=True, default=None)
    #: planned | active | on_hold | completed
    status = Text(default="active")
    created_by = ForeignKey(
        references=User, null=True, on_delete=OnDelete.set_null, on_update=OnUpdate.no_action
    )
    created_at = _now()
    updated_at = _now()
    archived_at = _optional_time()


class Task(Table, tablename="tasks", db=DB):
    """Primary key ``(organization_id, id)``; composite keys to the project, the parent and
    the assignee (below); status, priority, self-parent and completed_at CHECKs; the cycle,
    completed_at and updated_at triggers; the generated ``search_vector``; RLS."""

    id = _id()
    #: No key of its own: the tenant of the project (composite key below).
    organization_id = UUID(default=None, required=True)
    #: ``(organization_id, project_id) → projects (organization_id, id)`` CASCADE.
    project_id = UUID(default=None, required=True)
    #: ``(organization_id, project_id, parent_task_id) → tasks (organization_id,
    #: project_id, id)`` CASCADE: same tenant and project; never a descendant (trigger).
    parent_task_id = UUID(null=True, default=None)
    title = Text(default=None, required=True)
    description = Text(null=True, default=None)
    #: todo | in_progress | blocked | done | cancelled
    status = Text(default="todo")
    #: 0 none .. 4 urgent
    priority = SmallInt(default=0)
    #: ``(organization_id, assignee_id) → organization_members (organization_id, user_id)
    #: ON DELETE SET NULL (assignee_id)``: a member of the same organization, or NULL.
    assignee_id = UUID(null=True, default=None)
    created_by = ForeignKey(
        references=User, null=True, on_delete=OnDelete.set_null, on_update=OnUpdate.no_action
    )
    due_date = _optional_time()
    #: Set by trigger when status becomes done, cleared when reopened.
    completed_at = _optional_time()
    created_at = _now()
    updated_at = _now()


class TaskComment(Table, tablename="task_comments", db=DB):
    """Primary key ``(organization_id, id)``; the composite task key (below); content
    CHECKs; the content-history and updated_at triggers; RLS."""

    id = _id()
    #: No key of its own: the tenant of the task (composite key below).
    organization_id = UUID(default=None, required=True)
    #: ``(organization_id, task_id) → tasks (organization_id, id)`` CASCADE.
    task_id = UUID(default=None, required=True)
    author_id = ForeignKey(
        references=User, null=True, on_delete=OnDelete.set_null, on_update=OnUpdate.no_action
    )
    content = Text(default=None, required=True)
    #: Previous versions, appended by trigger on every content change.
    content_history = JSONB(default=[])
    created_at = _now()
    updated_at = _now()
    edited_at = _optional_time()
    deleted_at = _optional_time()


class AuditLog(Table, tablename="audit_logs", db=DB):
    """Partitioned by month on ``created_at`` (the partitions are not declared); primary key
    ``(organization_id, created_at, id)``; no foreign keys (the log outlives its rows);
    written only by the audit trigger; RLS; the server role reads it through the view
    ``audit_entries`` (not declared)."""

    id = _id()
    organization_id = UUID(default=None, required=True)
    actor_id = UUID(null=True, default=None)
    #: insert | update | delete
    action = Text(default=None, required=True)
    #: The audited table's name.
    entity_type = Text(default=None, required=True)
    entity_id = UUID(default=None, required=True)
    changes = JSONB(default=None, required=True)
    request_id = Text(null=True, default=None)
    ip_address = Inet(null=True)
    user_agent = Text(null=True, default=None)
    created_at = _now()


class RealtimeEvent(Table, tablename="realtime_events", db=DB):
    """The realtime outbox (migration 22), written by triggers only. ``id`` is ``bigint
    GENERATED BY DEFAULT AS IDENTITY``: declared as ``BigSerial``, Piccolo's closest type (an
    insert leaves it to the database either way); primary key ``(organization_id, id)``;
    no foreign keys (an event outlives its row); topic and action CHECKs; RLS."""

    id = BigSerial(primary_key=True)
    organization_id = UUID(default=None, required=True)
    topic = Text(default=None, required=True)
    action = Text(default=None, required=True)
    entity_id = UUID(default=None, required=True)
    scope_id = UUID(default=None, required=True)
    #: The writing transaction: ``DEFAULT pg_current_xact_id()`` (not expressible here).
    xid = Xid8()
    #: The oldest transaction still running when it was written.
    horizon = Xid8(required=True)
    created_at = _now()


class TaskCount(Table, tablename="task_counts", db=DB):
    """Maintained task counts (migration 27): a project's tasks in one status, split over
    slots (a count is the sum of its slots' totals). Written by the triggers on ``tasks``
    only; the server role may read it. Primary key ``(organization_id, project_id, status,
    slot)``: Piccolo needs one key column, so ``project_id`` is declared as it (it is in the
    key, not unique on its own); ``(organization_id, project_id) → projects
    (organization_id, id)`` CASCADE; slot CHECK (0..15); RLS."""

    organization_id = UUID(default=None, required=True)
    project_id = UUID(primary_key=True, default=None, required=True)
    #: todo | in_progress | blocked | done | cancelled
    status = Text(default=None, required=True)
    slot = SmallInt(default=None, required=True)
    total = BigInt(default=None, required=True)
