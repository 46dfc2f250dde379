"""Compiled queries: a whole GraphQL query answered by ONE SQL statement that builds the JSON.

The resolvers (``api/types``) stay the reference implementation. For a query whose every
field this module knows, the view skips GraphQL execution: the selection set becomes one
statement of nested ``json_build_object``/``json_agg`` sub-queries (what PostGraphile and
Hasura do), run as the server role inside the request's tenant transaction, so row-level
security applies to every row exactly as it does to the resolvers' statements. PostgreSQL
returns the response's ``data`` as text and Python never builds the objects.

What is compiled: query operations over viewer, organization, project, task, search and the
types reachable from them (users, members, projects, tasks, comments, audit entries, search
hits and their union of projects and tasks), their connections (every ordering, filter,
cursor and direction), ``ancestors``, ``taskCountsByStatus``, fragments, aliases,
``__typename``, ``@skip``/``@include``.
``auditLog`` too, for callers with the admin role or higher (the role is checked per
request: a rendered statement is shared by every caller of the same query and variables).
Anything else — mutations, ``node``, comment history — and any request the resolvers would
answer with an error (bad ids, bad page sizes, missing tenant, a role too low, over the node
limit, invalid documents) goes to the resolvers, which give the reference
answer. ``tests/api/test_compiled.py`` runs a corpus of queries both ways and requires equal
responses.

Every value a client sends is bound as a parameter; SQL text comes only from constants of
this code base and from GraphQL names, which the validated grammar restricts to
``[_A-Za-z][_0-9A-Za-z]*``.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from graphql import (
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLBoolean,
    GraphQLError,
    GraphQLObjectType,
    GraphQLSchema,
    InlineFragmentNode,
    OperationDefinitionNode,
    OperationType,
    SelectionSetNode,
    VariableNode,
    get_named_type,
    parse,
    specified_rules,
    validate,
)
from graphql.execution.values import get_variable_values
from graphql.language import NamedTypeNode
from graphql.pyutils import Undefined
from graphql.utilities import value_from_ast
from strawberry.extensions import MaxAliasesLimiter, QueryDepthLimiter

from api import cost, inputs
from api.auth import ROLE_RANK
from api.errors import ApiError
from api.ids import decode_id, from_global_id
from api.pagination import MAX_PAGE, decode_cursor, page_request
from api.settings import Settings
from api.types.audit import NETWORK_FIELDS, NODE_TYPE_OF, AuditEntityType, may_read_network
from api.types.comments import HIDDEN_WHEN_DELETED
from api.types.node import Direction, ProjectStatus, TaskStatus
from api.types.organizations import PROJECT_ORDERS, ProjectOrderField
from api.types.projects import TaskFilter, TaskOrderField, task_order
from api.types.users import OLDEST_FIRST
from db.queries import audit, comments, projects
from db.queries.connections import Filter, no_filter
from db.sql import Order, Page, Params


class Unsupported(Exception):
    """This request is answered by the resolvers instead."""


@dataclass(frozen=True)
class Plan:
    """A parsed, validated query operation made only of compilable fields."""

    document: DocumentNode
    operation: OperationDefinitionNode
    fragments: dict[str, FragmentDefinitionNode]
    #: False only when every field is the viewer's own (no X-Organization needed).
    needs_tenant: bool


#: Stand-ins for the caller's ids, and for whether the caller may read audit entries'
#: network details (``may_read_network`` of their role), in a cached statement's parameters.
TENANT, VIEWER, NETWORK = object(), object(), object()


@dataclass(frozen=True)
class Statement:
    """A rendered statement; the same for every caller of the same query and variables
    (cached), with the tenant and viewer ids bound per request."""

    sql: str
    params: tuple[Any, ...]
    #: The node limit's cost of the operation with these variables.
    cost: int
    #: The least role the caller needs (None: any member); a caller below it gets the
    #: resolvers, which answer FORBIDDEN. Checked per request: the statement is shared.
    role: str | None = None

    def bind(self, tenant_id: UUID | None, viewer_id: UUID, role: str | None = None) -> list[Any]:
        network = may_read_network(role)
        return [
            tenant_id
            if p is TENANT
            else viewer_id
            if p is VIEWER
            else network
            if p is NETWORK
            else p
            for p in self.params
        ]


# --- scalar renderers: SQL expressions over a row alias ---------------------------------

Field = Callable[["_Render", str, list[FieldNode]], str]


def _col(column: str) -> Field:
    return lambda r, a, nodes: f"{a}.{column}"


def _time(column: str) -> Field:
    return lambda r, a, nodes: f"gql_time({a}.{column})"


def _enum(column: str) -> Field:
    # Every enum's GraphQL name is its stored value upper-cased (TaskStatus.IN_PROGRESS =
    # 'in_progress', Role.OWNER = 'owner', ...).
    return lambda r, a, nodes: f"upper({a}.{column})"


def _gid(type_name: str) -> Field:
    return lambda r, a, nodes: f"gql_id('{type_name}', {a}.id)"


_ENTITY_CASE = " ".join(f"WHEN '{e.value}' THEN '{e.name}'" for e in AuditEntityType)
_ENTITY_NODE_CASE = " ".join(
    f"WHEN '{table}' THEN '{name}'" for table, name in NODE_TYPE_OF.items()
)


def _ip(r: _Render, a: str, nodes: list[FieldNode]) -> str:
    # asyncpg returns a host address for a full mask (str: '10.0.0.1') and a network
    # otherwise (str: '10.0.0.0/24'), like inet's own text form.
    return (
        f"CASE WHEN masklen({a}.ip_address) = CASE family({a}.ip_address) WHEN 4 THEN 32 "
        f"ELSE 128 END THEN host({a}.ip_address) ELSE {a}.ip_address::text END"
    )


def _network(field: Field) -> Field:
    """An audit entry's network detail: null unless the caller's role may read it (bound per
    request, as the statement is shared by every caller of the same query)."""
    return lambda r, a, nodes: f"(CASE WHEN {r.network} THEN {field(r, a, nodes)} END)"


def _unless_deleted(field: Field) -> Field:
    """A comment field a deleted comment (a tombstone) answers with null."""
    return lambda r, a, nodes: f"(CASE WHEN {a}.deleted_at IS NULL THEN {field(r, a, nodes)} END)"


def _to_one(type_name: str, table: str, column: str) -> Field:
    def render(r: _Render, a: str, nodes: list[FieldNode]) -> str:
        b = r.alias()
        return (
            f"(SELECT {r.object(type_name, b, nodes)} FROM {table} AS {b} "
            f"WHERE {b}.id = {a}.{column})"
        )

    return render


# --- relations and connections ----------------------------------------------------------


def _page(order: Order, args: dict[str, Any]) -> Page:
    """The Relay page arguments, validated exactly as the resolvers do (their errors)."""
    return page_request(
        order, args.get("first"), args.get("after"), args.get("last"), args.get("before")
    )


def _task_order(args: dict[str, Any]) -> Order:
    return task_order(
        _member(TaskOrderField, args.get("orderBy"), TaskOrderField.CREATED_AT),
        _member(Direction, args.get("direction"), Direction.ASC),
    )


def _project_tasks(r: _Render, a: str, nodes: list[FieldNode]) -> str:
    args = r.args("Project", nodes[0])
    page = _page(_task_order(args), args)
    where = _task_filter(args.get("filter")).to_db()
    return r.connection(
        nodes,
        "Task",
        "tasks",
        [f"t.organization_id = {r.tenant}", f"t.project_id = {a}.id"],
        page,
        where,
    )


def _subtasks(r: _Render, a: str, nodes: list[FieldNode]) -> str:
    args = r.args("Task", nodes[0])
    page = _page(_task_order(args), args)
    return r.connection(
        nodes,
        "Task",
        "tasks",
        [f"t.organization_id = {r.tenant}", f"t.parent_task_id = {a}.id"],
        page,
    )


def _comments(r: _Render, a: str, nodes: list[FieldNode]) -> str:
    args = r.args("Task", nodes[0])
    page = _page(comments.OLDEST_FIRST, args)
    return r.connection(
        nodes,
        "Comment",
        "task_comments",
        [f"t.organization_id = {r.tenant}", f"t.task_id = {a}.id"],
        page,
        comments.live,
    )


def _history(r: _Render, a: str, nodes: list[FieldNode]) -> str:
    args = r.args("Task", nodes[0])
    page = _page(audit.NEWEST_FIRST, args)
    return r.connection(
        nodes,
        "AuditEntry",
        audit.BY_ENTITY.table,
        [f"t.organization_id = {r.tenant}", f"t.entity_id = {a}.id"],
        page,
        audit.EntityTypeFilter("tasks"),
    )


def _members(r: _Render, a: str, nodes: list[FieldNode]) -> str:
    args = r.args("Organization", nodes[0])
    page = _page(OLDEST_FIRST, args)
    return r.connection(
        nodes,
        "Member",
        "organization_members",
        [f"t.organization_id = {r.tenant}", f"t.organization_id = {a}.id"],
        page,
    )


def _projects(r: _Render, a: str, nodes: list[FieldNode]) -> str:
    args = r.args("Organization", nodes[0])
    base = PROJECT_ORDERS[
        _member(ProjectOrderField, args.get("orderBy"), ProjectOrderField.CREATED_AT)
    ]
    descending = _member(Direction, args.get("direction"), Direction.DESC) is Direction.DESC
    order = Order(base.key, base.type, descending=descending)
    page = _page(order, args)
    given = _handled("ProjectFilter", args.get("filter") or {})
    statuses = given.get("status")
    where = projects.ProjectFilter(
        statuses=tuple(_member(ProjectStatus, s, None).value for s in statuses)
        if statuses is not None
        else None,
        include_archived=bool(given.get("includeArchived", False)),
        search=given.get("search") or None,
    )
    return r.connection(
        nodes,
        "Project",
        "projects",
        [f"t.organization_id = {r.tenant}", f"t.organization_id = {a}.id"],
        page,
        where,
    )


def _memberships(r: _Render, a: str, nodes: list[FieldNode]) -> str:
    args = r.args("Viewer", nodes[0])
    page = _page(OLDEST_FIRST, args)
    # The viewer's own memberships span tenants (no tenant condition), as in the resolver.
    return r.connection(nodes, "Member", "organization_members", [f"t.user_id = {r.viewer}"], page)


def _ancestors(r: _Render, a: str, nodes: list[FieldNode]) -> str:
    r.require_tenant()
    b = r.alias()
    return (
        f"(SELECT coalesce(json_agg({r.object('Task', b, nodes)} ORDER BY up.depth), '[]') "
        f"FROM (WITH RECURSIVE up (id, depth) AS ("
        f"SELECT {a}.parent_task_id, 1 WHERE {a}.parent_task_id IS NOT NULL "
        f"UNION ALL SELECT t.parent_task_id, up.depth + 1 FROM up "
        f"JOIN tasks AS t ON t.organization_id = {r.tenant} AND t.id = up.id "
        f"WHERE t.parent_task_id IS NOT NULL) SELECT id, depth FROM up) AS up "
        f"JOIN tasks AS {b} ON {b}.organization_id = {r.tenant} AND {b}.id = up.id)"
    )


_STATUS_ARRAY = "ARRAY[" + ", ".join(f"'{s.value}'" for s in TaskStatus) + "]"


def _status_counts(r: _Render, a: str, nodes: list[FieldNode]) -> str:
    r.require_tenant()
    s = r.alias()
    return (
        f"(SELECT json_agg({r.object('TaskStatusCount', s, nodes)} ORDER BY {s}.ord) "
        f"FROM (SELECT u.status, u.ord, coalesce(n.total, 0) AS total "
        f"FROM unnest({_STATUS_ARRAY}::text[]) WITH ORDINALITY AS u (status, ord) "
        f"LEFT JOIN (SELECT t.status, count(*) AS total FROM tasks AS t "
        f"WHERE t.organization_id = {r.tenant} AND t.project_id = {a}.id GROUP BY t.status) AS n "
        f"ON n.status = u.status) AS {s})"
    )


# --- root fields ------------------------------------------------------------------------


def _viewer(r: _Render, a: str, nodes: list[FieldNode]) -> str:
    return r.object("Viewer", "", nodes)


def _viewer_user(r: _Render, a: str, nodes: list[FieldNode]) -> str:
    b = r.alias()
    return f"(SELECT {r.object('User', b, nodes)} FROM users AS {b} WHERE {b}.id = {r.viewer})"


def _by_id(type_name: str, table: str) -> Field:
    def render(r: _Render, a: str, nodes: list[FieldNode]) -> str:
        r.require_tenant()
        raw = decode_id(r.args("Query", nodes[0])["id"], type_name)
        b = r.alias()
        return (
            f"(SELECT {r.object(type_name, b, nodes)} FROM {table} AS {b} "
            f"WHERE {b}.organization_id = {r.tenant} AND {b}.id = {r.params(raw, '::uuid')})"
        )

    return render


def _organization(r: _Render, a: str, nodes: list[FieldNode]) -> str:
    args = r.args("Query", nodes[0])
    b = r.alias()
    if args.get("id") is not None:
        condition = f"{b}.id = {r.params(decode_id(args['id'], 'Organization'), '::uuid')}"
    elif args.get("slug") is not None:
        condition = f"{b}.slug = {r.params(str(args['slug']).lower(), '::text')}"
    else:
        r.require_tenant()
        condition = f"{b}.id = {r.tenant}"
    return (
        f"(SELECT {r.object('Organization', b, nodes)} FROM organizations AS {b} WHERE {condition})"
    )


#: search_hits() rows, best first (the cursor's key is the rank as text).
SEARCH_ORDER = Order("t.rank", "real", descending=True)


def _search(r: _Render, a: str, nodes: list[FieldNode]) -> str:
    """Query.search: the hits of ``search_hits()`` (which takes the tenant from the
    transaction, as for the resolver), those whose node is visible, paged like the resolver's
    connection; totalCount from ``search_count()``."""
    r.require_tenant()
    args = r.args("Query", nodes[0])
    first = args.get("first", 20)
    text = str(args["text"]).strip()
    if not 1 <= first <= MAX_PAGE or not 1 <= len(text) <= 200:
        raise Unsupported("the resolver reports the bad argument")
    cursor = decode_cursor(args["after"], "real") if args.get("after") else None
    after_rank = float(cursor[0]) if cursor is not None else None
    p = r.params
    words = p(text, "::text")
    hits = (
        f"(SELECT h.kind, h.id, h.rank FROM search_hits({words}, {p(first + 1, '::integer')}, "
        f"{p(after_rank, '::real')}, {p(cursor[1] if cursor else None, '::uuid')}) AS h)"
    )
    visible = (
        f"((t.kind = 'task' AND EXISTS (SELECT FROM tasks AS v "
        f"WHERE v.organization_id = {r.tenant} AND v.id = t.id)) "
        f"OR (t.kind = 'project' AND EXISTS (SELECT FROM projects AS v "
        f"WHERE v.organization_id = {r.tenant} AND v.id = t.id)))"
    )
    return r.connection(
        nodes,
        "SearchHit",
        hits,
        [visible],
        Page(first, SEARCH_ORDER, cursor),
        count=f"search_count({words})",
    )


def _search_node(r: _Render, a: str, nodes: list[FieldNode]) -> str:
    """SearchHit.node: the Task or Project the hit names (the union's members)."""
    task, project = r.alias(), r.alias()
    return (
        f"(CASE {a}.kind WHEN 'task' THEN (SELECT {r.object('Task', task, nodes)} "
        f"FROM tasks AS {task} WHERE {task}.organization_id = {r.tenant} AND {task}.id = {a}.id) "
        f"WHEN 'project' THEN (SELECT {r.object('Project', project, nodes)} "
        f"FROM projects AS {project} "
        f"WHERE {project}.organization_id = {r.tenant} AND {project}.id = {a}.id) END)"
    )


def _audit_log(r: _Render, a: str, nodes: list[FieldNode]) -> str:
    """Query.auditLog: the tenant's audit entries (or one entity's), newest first, for
    admins and owners, as the resolver (``api/queries.py``) pages and filters them."""
    r.require_role("admin")
    args = r.args("Query", nodes[0])
    page = _page(audit.NEWEST_FIRST, {"first": args.get("first"), "after": args.get("after")})
    entity_type = _member(AuditEntityType, args.get("entityType"), None)
    where = audit.EntityTypeFilter(entity_type.value if entity_type is not None else None)
    conditions = [f"t.organization_id = {r.tenant}"]
    if args.get("entityId") is not None:
        _, raw = from_global_id(args["entityId"])
        conditions.append(f"t.entity_id = {r.params(raw, '::uuid')}")
    return r.connection(nodes, "AuditEntry", audit.BY_ORGANIZATION.table, conditions, page, where)


def _float(column: str) -> Field:
    """A Float as Python's json writes it: the shortest repr, and ``2.0`` for an integral
    value (PostgreSQL would write ``2``)."""

    def render(r: _Render, a: str, nodes: list[FieldNode]) -> str:
        v = f"{a}.{column}::float8"
        return (
            f"(CASE WHEN {v} = trunc({v}) AND abs({v}) < 1e16 "
            f"THEN trunc({v})::bigint::text || '.0' ELSE {v}::text END)::json"
        )

    return render


FIELDS: dict[str, dict[str, Field]] = {
    "Query": {
        "viewer": _viewer,
        "organization": _organization,
        "project": _by_id("Project", "projects"),
        "task": _by_id("Task", "tasks"),
        "search": _search,
        "auditLog": _audit_log,
    },
    "SearchHit": {"rank": _float("rank"), "node": _search_node},
    "Viewer": {"user": _viewer_user, "memberships": _memberships},
    "User": {
        "id": _gid("User"),
        "email": _col("email"),
        "displayName": _col("display_name"),
        "createdAt": _time("created_at"),
    },
    "Organization": {
        "id": _gid("Organization"),
        "name": _col("name"),
        "slug": _col("slug"),
        "createdAt": _time("created_at"),
        "updatedAt": _time("updated_at"),
        "members": _members,
        "projects": _projects,
    },
    "Member": {
        "id": _gid("Member"),
        "role": _enum("role"),
        "createdAt": _time("created_at"),
        "user": _to_one("User", "users", "user_id"),
        "invitedBy": _to_one("User", "users", "invited_by"),
        "organization": _to_one("Organization", "organizations", "organization_id"),
    },
    "Project": {
        "id": _gid("Project"),
        "name": _col("name"),
        "description": _col("description"),
        "status": _enum("status"),
        "createdAt": _time("created_at"),
        "updatedAt": _time("updated_at"),
        "archivedAt": _time("archived_at"),
        "archived": lambda r, a, nodes: f"({a}.archived_at IS NOT NULL)",
        "createdBy": _to_one("User", "users", "created_by"),
        "organization": _to_one("Organization", "organizations", "organization_id"),
        "tasks": _project_tasks,
        "taskCountsByStatus": _status_counts,
    },
    "TaskStatusCount": {"status": _enum("status"), "count": _col("total")},
    "Task": {
        "id": _gid("Task"),
        "title": _col("title"),
        "description": _col("description"),
        "status": _enum("status"),
        "priority": _col("priority"),
        "dueDate": _time("due_date"),
        "completedAt": _time("completed_at"),
        "createdAt": _time("created_at"),
        "updatedAt": _time("updated_at"),
        "project": _to_one("Project", "projects", "project_id"),
        "parent": _to_one("Task", "tasks", "parent_task_id"),
        "ancestors": _ancestors,
        "subtasks": _subtasks,
        "assignee": _to_one("User", "users", "assignee_id"),
        "createdBy": _to_one("User", "users", "created_by"),
        "comments": _comments,
        "history": _history,
    },
    "Comment": {
        "id": _gid("Comment"),
        "content": _col("content"),
        "createdAt": _time("created_at"),
        "updatedAt": _time("updated_at"),
        "editedAt": _time("edited_at"),
        "deletedAt": _time("deleted_at"),
        "author": _to_one("User", "users", "author_id"),
        "task": _to_one("Task", "tasks", "task_id"),
    },
    "AuditEntry": {
        "id": _gid("AuditEntry"),
        "action": _enum("action"),
        "entityType": lambda r, a, nodes: f"(CASE {a}.entity_type {_ENTITY_CASE} END)",
        "entityId": lambda r, a, nodes: (
            f"gql_id(CASE {a}.entity_type {_ENTITY_NODE_CASE} END, {a}.entity_id)"
        ),
        "changes": _col("changes"),
        "requestId": _col("request_id"),
        "ipAddress": _ip,
        "userAgent": _col("user_agent"),
        "createdAt": _time("created_at"),
        "actor": _to_one("User", "users", "actor_id"),
    },
}

#: The arguments each field's renderer reads (every other field: none). The compiler refuses
#: (falls back on) a field given any other argument, and a test requires these to equal the
#: schema's arguments, so an argument added on the resolver side only cannot be ignored here.
RELAY_ARGUMENTS = frozenset({"first", "after", "last", "before"})
ARGUMENTS: dict[tuple[str, str], frozenset[str]] = {
    ("Query", "organization"): frozenset({"id", "slug"}),
    ("Query", "project"): frozenset({"id"}),
    ("Query", "task"): frozenset({"id"}),
    ("Query", "search"): frozenset({"text", "first", "after"}),
    ("Query", "auditLog"): frozenset({"entityType", "entityId", "first", "after"}),
    ("Viewer", "memberships"): RELAY_ARGUMENTS,
    ("Organization", "members"): RELAY_ARGUMENTS,
    ("Organization", "projects"): RELAY_ARGUMENTS | {"filter", "orderBy", "direction"},
    ("Project", "tasks"): RELAY_ARGUMENTS | {"filter", "orderBy", "direction"},
    ("Task", "subtasks"): RELAY_ARGUMENTS | {"orderBy", "direction"},
    ("Task", "comments"): RELAY_ARGUMENTS,
    ("Task", "history"): RELAY_ARGUMENTS,
}
#: The fields of the input objects the renderers read (``_task_filter``, ``_projects``).
INPUT_FIELDS: dict[str, frozenset[str]] = {
    "TaskFilter": frozenset(
        {
            "status",
            "assignee",
            "unassigned",
            "priorityMin",
            "priorityMax",
            "dueBefore",
            "dueAfter",
            "rootOnly",
            "search",
        }
    ),
    "ProjectFilter": frozenset({"status", "includeArchived", "search"}),
}
#: The only directives a compiled selection may carry.
DIRECTIVES = frozenset({"skip", "include"})

# The privacy rules, applied from their declarations (api/types/audit.py, comments.py).
for _name in NETWORK_FIELDS:
    FIELDS["AuditEntry"][_name] = _network(FIELDS["AuditEntry"][_name])
for _name in HIDDEN_WHEN_DELETED:
    if _name in FIELDS["Comment"]:
        FIELDS["Comment"][_name] = _unless_deleted(FIELDS["Comment"][_name])

#: Connection and edge types: their fields are rendered by ``_Render.connection``.
CONNECTIONS = {
    f"{node}{suffix}": node
    for node in ("Task", "Comment", "AuditEntry", "Member", "Project", "SearchHit")
    for suffix in ("Connection", "Edge")
}
CONNECTION_FIELDS = {"edges", "nodes", "pageInfo", "totalCount"}
EDGE_FIELDS = {"cursor", "node"}
PAGE_INFO_FIELDS = {"hasNextPage", "hasPreviousPage", "startCursor", "endCursor"}
#: Union types and their members (a fragment on the union applies to each member).
UNION_MEMBERS = {"SearchResult": ("Project", "Task")}
#: Root fields that read only the viewer's own rows.
VIEWER_ONLY = {"viewer"}
#: json_build_object takes at most 100 arguments.
MAX_KEYS = 50


def _member(enum: Any, value: Any, default: Any) -> Any:
    if value is None:
        return default
    if isinstance(value, enum):
        return value
    return enum[value]


def _handled(input_type: str, given: dict[str, Any]) -> dict[str, Any]:
    """``given`` if the renderers read each of its fields (else the resolvers answer)."""
    if not set(given) <= INPUT_FIELDS[input_type]:
        raise Unsupported(f"a field of {input_type} the compiler does not read")
    return given


def _task_filter(given: dict[str, Any] | None) -> TaskFilter:
    if not given:
        return TaskFilter()
    _handled("TaskFilter", given)
    statuses = given.get("status")
    return TaskFilter(
        status=[_member(TaskStatus, s, None) for s in statuses] if statuses is not None else None,
        assignee=given.get("assignee"),
        unassigned=bool(given.get("unassigned", False)),
        priority_min=given.get("priorityMin"),
        priority_max=given.get("priorityMax"),
        due_before=given.get("dueBefore"),
        due_after=given.get("dueAfter"),
        root_only=bool(given.get("rootOnly", False)),
        search=given.get("search"),
    )


def _key(node: FieldNode) -> str:
    return node.alias.value if node.alias else node.name.value


def _literal(name: str) -> str:
    # GraphQL names match [_A-Za-z][_0-9A-Za-z]*; refuse anything else outright.
    if not name.replace("_", "a").isalnum() or not name.isascii():
        raise Unsupported(name)
    return f"'{name}'"


class _Render:
    """Renders one request's statement: collects fields (fragments, @skip/@include) with
    the request's variables and binds every value as a parameter."""

    def __init__(
        self,
        schema: GraphQLSchema,
        plan: Plan,
        variables: dict[str, Any],
        has_tenant: bool,
    ) -> None:
        self.schema = schema
        self.plan = plan
        self.variables = variables
        self.params = Params()
        self._viewer: str | None = None
        self._has_tenant = has_tenant
        self._tenant: str | None = None
        self._network: str | None = None
        self._aliases = 0
        self.role: str | None = None

    @property
    def viewer(self) -> str:
        # Bound on first use: an unused parameter has no type PostgreSQL could infer.
        if self._viewer is None:
            self._viewer = self.params(VIEWER, "::uuid")
        return self._viewer

    @property
    def network(self) -> str:
        """True when the caller may read audit entries' network details (bound per request)."""
        if self._network is None:
            self._network = self.params(NETWORK, "::boolean")
        return self._network

    @property
    def tenant(self) -> str:
        if self._tenant is None:
            self.require_tenant()
            self._tenant = self.params(TENANT, "::uuid")
        return self._tenant

    def require_tenant(self) -> None:
        if not self._has_tenant:
            raise Unsupported("no tenant: the resolvers answer FORBIDDEN")

    def require_role(self, role: str) -> None:
        """The statement is only for callers with ``role`` or higher in the tenant."""
        self.require_tenant()
        if self.role is None or ROLE_RANK[role] > ROLE_RANK[self.role]:
            self.role = role

    def alias(self) -> str:
        self._aliases += 1
        return f"r{self._aliases}"

    # -- selections --

    def collect(self, type_name: str, nodes: Sequence[FieldNode]) -> dict[str, list[FieldNode]]:
        """The merged sub-fields of ``nodes`` (one response key each), in selection order."""
        return self.collect_sets(type_name, [n.selection_set for n in nodes if n.selection_set])

    def collect_sets(
        self, type_name: str, selection_sets: Sequence[SelectionSetNode]
    ) -> dict[str, list[FieldNode]]:
        fields: dict[str, list[FieldNode]] = {}
        for selection_set in selection_sets:
            self._visit(type_name, selection_set, fields)
        return fields

    def _visit(
        self, type_name: str, selection_set: SelectionSetNode, fields: dict[str, list[FieldNode]]
    ) -> None:
        for selection in selection_set.selections:
            if not self._included(selection):
                continue
            if isinstance(selection, FieldNode):
                fields.setdefault(_key(selection), []).append(selection)
            elif isinstance(selection, InlineFragmentNode):
                if _applies(selection.type_condition, type_name):
                    self._visit(type_name, selection.selection_set, fields)
            elif isinstance(selection, FragmentSpreadNode):
                fragment = self.plan.fragments[selection.name.value]
                if _applies(fragment.type_condition, type_name):
                    self._visit(type_name, fragment.selection_set, fields)

    def _included(self, selection: Any) -> bool:
        for directive in selection.directives or ():
            name = directive.name.value
            if name not in ("skip", "include"):
                continue
            value = value_from_ast(directive.arguments[0].value, GraphQLBoolean, self.variables)
            if (name == "skip") == bool(value):
                return False
        return True

    def args(self, type_name: str, node: FieldNode) -> dict[str, Any]:
        """The field's arguments as given (literals and variables), absent ones left out."""
        definition = self._type(type_name).fields[node.name.value]
        values: dict[str, Any] = {}
        for argument in node.arguments or ():
            arg_def = definition.args[argument.name.value]
            value = value_from_ast(argument.value, arg_def.type, self.variables)
            if value is Undefined:
                if isinstance(argument.value, VariableNode):
                    continue  # a variable not provided: as if the argument were absent
                raise Unsupported(argument.name.value)
            values[argument.name.value] = value
        return values

    def _type(self, name: str) -> GraphQLObjectType:
        found = self.schema.get_type(name)
        assert isinstance(found, GraphQLObjectType)
        return found

    # -- values --

    def object(self, type_name: str, a: str, nodes: Sequence[FieldNode]) -> str:
        fields = self.collect(type_name, nodes)
        if len(fields) > MAX_KEYS:
            raise Unsupported("too many fields in one selection set")
        handlers = FIELDS[type_name]
        parts = []
        for key, field_nodes in fields.items():
            name = field_nodes[0].name.value
            if name == "__typename":
                value = f"'{type_name}'"
            elif name in handlers:
                value = handlers[name](self, a, field_nodes)
            else:
                raise Unsupported(f"{type_name}.{name}")
            parts.append(f"{_literal(key)}, {value}")
        return f"json_build_object({', '.join(parts)})"

    def connection(
        self,
        nodes: Sequence[FieldNode],
        node_type: str,
        table: str,
        conditions: list[str],
        page: Page,
        where: Filter = no_filter,
        count: str | None = None,
    ) -> str:
        """A Relay connection: one keyset page, aggregated into edges/nodes/pageInfo, and the
        count if asked (``count``: an expression for it, instead of counting ``table``'s rows).

        With ``pageInfo`` selected, ``size + 1`` rows are read (the extra one says whether
        there is more) and numbered; without it, ``size`` rows and no window function (11%
        of the main query's statement time), the aggregates ordered by the sort key itself.
        """
        p = self.params
        order = page.fetch_order
        all_conditions = [*conditions, *where(p)]
        page_conditions = list(all_conditions)
        if page.cursor is not None:
            page_conditions.append(order.after(p, page.cursor))
        c = self.alias()
        size = p(page.size, "::bigint")
        fields = self.collect(f"{node_type}Connection", nodes)
        numbered = any(f[0].name.value == "pageInfo" for f in fields.values())
        if numbered:
            visible = f"FILTER (WHERE {c}._n <= {size})"
            display = f"{c}._n DESC" if page.backwards else f"{c}._n"
        else:
            # The page in the order asked for (for last/before: the fetch order reversed).
            direction = "DESC" if page.order.descending else "ASC"
            visible = ""
            display = f"{c}._sort {direction}, {c}.id {direction}"
        reverse = f"{c}._n" if page.backwards else f"{c}._n DESC"
        more = f"(count(*) > {size})"
        continued = "true" if page.cursor is not None else "false"
        cursor = f"gql_cursor({c}._key, {c}.id)"
        parts = []
        for key, field_nodes in fields.items():
            name = field_nodes[0].name.value
            if name == "__typename":
                value = f"'{node_type}Connection'"
            elif name == "totalCount":
                value = count or (
                    f"(SELECT count(*) FROM {table} AS t WHERE {' AND '.join(all_conditions)})"
                )
            elif name == "nodes":
                obj = self.object(node_type, c, field_nodes)
                value = f"coalesce(json_agg({obj} ORDER BY {display}) {visible}, '[]')"
            elif name == "edges":
                edge = []
                for edge_key, edge_nodes in self.collect(f"{node_type}Edge", field_nodes).items():
                    edge_name = edge_nodes[0].name.value
                    if edge_name == "__typename":
                        edge.append(f"{_literal(edge_key)}, '{node_type}Edge'")
                    elif edge_name == "cursor":
                        edge.append(f"{_literal(edge_key)}, {cursor}")
                    elif edge_name == "node":
                        edge.append(
                            f"{_literal(edge_key)}, {self.object(node_type, c, edge_nodes)}"
                        )
                    else:
                        raise Unsupported(edge_name)
                value = (
                    f"coalesce(json_agg(json_build_object({', '.join(edge)}) ORDER BY {display}) "
                    f"{visible}, '[]')"
                )
            elif name == "pageInfo":
                info = []
                for info_key, info_nodes in self.collect("PageInfo", field_nodes).items():
                    info_name = info_nodes[0].name.value
                    if info_name == "__typename":
                        expr = "'PageInfo'"
                    elif info_name == "hasNextPage":
                        expr = continued if page.backwards else more
                    elif info_name == "hasPreviousPage":
                        expr = more if page.backwards else continued
                    elif info_name == "startCursor":
                        expr = f"(array_agg({cursor} ORDER BY {display}) {visible})[1]"
                    elif info_name == "endCursor":
                        expr = f"(array_agg({cursor} ORDER BY {reverse}) {visible})[1]"
                    else:
                        raise Unsupported(info_name)
                    info.append(f"{_literal(info_key)}, {expr}")
                value = f"json_build_object({', '.join(info)})"
            else:
                raise Unsupported(name)
            parts.append(f"{_literal(key)}, {value}")
        ordering = order.order_by()
        if numbered:
            extra, limit = f"row_number() OVER (ORDER BY {ordering}) AS _n", f"{size} + 1"
        else:
            extra, limit = f"({order.key}) AS _sort", size
        return (
            f"(SELECT json_build_object({', '.join(parts)}) FROM ("
            f"SELECT t.*, ({order.key})::text AS _key, {extra} "
            f"FROM {table} AS t WHERE {' AND '.join(page_conditions)} "
            # HAVING: one group, so one row even when no aggregate is selected.
            f"ORDER BY {ordering} LIMIT {limit}) AS {c} HAVING true)"
        )


def _applies(condition: NamedTypeNode | None, type_name: str) -> bool:
    if condition is None:
        return True
    name = condition.name.value
    return (
        name == type_name
        or (name == "Node" and type_name in _NODE_TYPES)
        or type_name in UNION_MEMBERS.get(name, ())
    )


_NODE_TYPES = {"User", "Organization", "Member", "Project", "Task", "Comment"}


class Compiler:
    """Plans (cached per document and operation name) and statements for compiled queries."""

    def __init__(self, schema: GraphQLSchema, settings: Settings, cache_size: int = 1000) -> None:
        self.schema = schema
        self.settings = settings
        self.rules = (
            *specified_rules,
            *QueryDepthLimiter(max_depth=settings.taskql_max_depth).validation_rules,
            *MaxAliasesLimiter(max_alias_count=settings.taskql_max_aliases).validation_rules,
        )
        self.cache_size = cache_size
        #: Documents planned (parsed, validated, checked) so far: cache misses.
        self.plans_made = 0
        self._plans: OrderedDict[tuple[str, str | None], Plan | None] = OrderedDict()
        self._statements: OrderedDict[tuple[str, str | None, str, bool], Statement | None] = (
            OrderedDict()
        )

    def plan(self, query: str, operation_name: str | None) -> Plan | None:
        """The plan for a query, or None when the resolvers must answer it."""
        key = (query, operation_name)
        if key in self._plans:
            self._plans.move_to_end(key)
            return self._plans[key]
        plan = self._plan(query, operation_name)
        self._plans[key] = plan
        if len(self._plans) > self.cache_size:
            self._plans.popitem(last=False)
        return plan

    def _plan(self, query: str, operation_name: str | None) -> Plan | None:
        self.plans_made += 1
        try:
            document = parse(query, max_tokens=self.settings.taskql_max_tokens)
        except GraphQLError:
            return None
        try:
            # The document's bounds before validation walks it (the resolvers report them).
            operation = cost.check_document(document, operation_name, self.settings)
        except GraphQLError:
            return None
        if operation.operation is not OperationType.QUERY or operation.directives:
            return None
        if validate(self.schema, document, self.rules):
            return None
        fragments = {
            d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)
        }
        if not self._supported("Query", operation.selection_set, fragments, set()):
            return None
        roots = {
            s.name.value for s in operation.selection_set.selections if isinstance(s, FieldNode)
        }
        needs_tenant = not roots <= VIEWER_ONLY or any(
            not isinstance(s, FieldNode) for s in operation.selection_set.selections
        )
        return Plan(document, operation, fragments, needs_tenant)

    def _supported(
        self,
        type_name: str,
        selection_set: SelectionSetNode,
        fragments: dict[str, FragmentDefinitionNode],
        seen: set[str],
    ) -> bool:
        """Every field that may be selected (whatever the variables) is one we render."""
        if type_name in UNION_MEMBERS:
            return all(
                self._supported(member, selection_set, fragments, seen)
                for member in UNION_MEMBERS[type_name]
            )
        for selection in selection_set.selections:
            if any(d.name.value not in DIRECTIVES for d in selection.directives or ()):
                return False
            if isinstance(selection, FieldNode):
                name = selection.name.value
                if name == "__typename":
                    continue
                known = self._known(type_name, name)
                if not known:
                    return False
                given = {argument.name.value for argument in selection.arguments or ()}
                if not given <= ARGUMENTS.get((type_name, name), frozenset()):
                    return False
                if selection.selection_set is not None:
                    child = get_named_type(self._field_type(type_name, name))
                    if not self._supported(child.name, selection.selection_set, fragments, seen):
                        return False
            elif isinstance(selection, InlineFragmentNode):
                if _applies(selection.type_condition, type_name) and not self._supported(
                    type_name, selection.selection_set, fragments, seen
                ):
                    return False
            elif isinstance(selection, FragmentSpreadNode):
                fragment = fragments[selection.name.value]
                if selection.name.value in seen:
                    continue
                if _applies(fragment.type_condition, type_name) and not self._supported(
                    type_name, fragment.selection_set, fragments, seen | {selection.name.value}
                ):
                    return False
        return True

    def _known(self, type_name: str, name: str) -> bool:
        if type_name in CONNECTIONS:
            allowed = EDGE_FIELDS if type_name.endswith("Edge") else CONNECTION_FIELDS
            return name in allowed
        if type_name == "PageInfo":
            return name in PAGE_INFO_FIELDS
        return name in FIELDS.get(type_name, {})

    def _field_type(self, type_name: str, name: str) -> Any:
        found = self.schema.get_type(type_name)
        assert isinstance(found, GraphQLObjectType)
        return found.fields[name].type

    def prepare(
        self,
        query: str,
        operation_name: str | None,
        variables: dict[str, Any],
        tenant_id: UUID | None,
        viewer_id: UUID,
        role: str | None = None,
    ) -> tuple[str, list[Any]] | None:
        """The statement (SQL and parameters) answering this request, or None when the
        resolvers must answer it: not compilable, or an error to report (bad ids, bad page
        sizes, variables that do not match, over the node limit, no tenant, a role below
        what a field needs). ``role``: the caller's role in the tenant."""
        try:
            key = (query, operation_name, json.dumps(variables, sort_keys=True), tenant_id is None)
        except (TypeError, ValueError):
            return None
        if key in self._statements:
            self._statements.move_to_end(key)
            statement = self._statements[key]
        else:
            plan = self.plan(query, operation_name)
            statement = None
            if plan is not None:
                try:
                    statement = self.statement(plan, variables, tenant_id is not None)
                except (Unsupported, ApiError):
                    statement = None
            self._statements[key] = statement
            if len(self._statements) > self.cache_size:
                self._statements.popitem(last=False)
        if statement is None or statement.cost > self.settings.taskql_max_nodes:
            return None
        if statement.role is not None and (
            role is None or ROLE_RANK[role] < ROLE_RANK[statement.role]
        ):
            return None
        return statement.sql, statement.bind(tenant_id, viewer_id, role)

    def statement(self, plan: Plan, raw_variables: dict[str, Any], has_tenant: bool) -> Statement:
        """Render ``plan`` with these variables. Raises Unsupported (or an ApiError) whenever
        the resolvers must answer instead."""
        if plan.needs_tenant and not has_tenant:
            raise Unsupported("no tenant")
        inputs.check_variables(raw_variables)  # an ApiError: the resolvers report it
        coerced = get_variable_values(
            self.schema, plan.operation.variable_definitions or (), raw_variables
        )
        if isinstance(coerced, list):
            raise Unsupported("variables do not match their definitions")
        variables = coerced.coerced
        # The limits first: nothing is rendered for an operation over one.
        try:
            node_count = cost.check_operation(
                self.schema, plan.document, plan.operation, coerced, self.settings
            )
        except (cost.CostError, ApiError):
            raise Unsupported("over a limit or a bad value: the resolvers report it") from None
        render = _Render(self.schema, plan, variables, has_tenant)
        fields = render.collect_sets("Query", [plan.operation.selection_set])
        if not fields or len(fields) > MAX_KEYS:
            raise Unsupported("empty or too wide")
        parts = []
        for key, nodes in fields.items():
            name = nodes[0].name.value
            value = "'Query'" if name == "__typename" else FIELDS["Query"][name](render, "", nodes)
            parts.append(f"{_literal(key)}, {value}")
        sql = f"SELECT json_build_object({', '.join(parts)})::text"
        return Statement(sql, tuple(render.params.values), node_count, render.role)
