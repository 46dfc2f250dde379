"""Relations, connections and root fields: sub-selects of related rows, keyset pages, the
task tree, status counts, search and the audit log."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from graphql import (
    FieldNode,
)

from api.compiler.arguments import (
    handled,
    member,
    page_of,
    task_filter,
    task_order_of,
)
from api.compiler.plans import (
    Field,
    Unsupported,
    json_array,
    or_null,
)
from api.ids import decode_id, from_global_id
from api.pagination import MAX_PAGE, decode_cursor
from api.types.audit import AuditEntityType
from api.types.comments import COMMENT
from api.types.node import Direction, ProjectStatus, TaskStatus
from api.types.organizations import PROJECT_ORDERS, ProjectOrderField
from api.types.users import OLDEST_FIRST
from db.queries import audit, comments, organizations, projects, tasks
from db.queries.connections import Filter, Source, no_filter
from db.sql import Order, Page

if TYPE_CHECKING:
    from api.compiler.render import Render


# --- relations and connections ----------------------------------------------------------


def children(
    r: Render,
    nodes: list[FieldNode],
    node_type: str,
    source: Source,
    parent: str,
    page: Page,
    where: Filter = no_filter,
    tenant_scoped: bool = True,
    count: Callable[[], str] | None = None,
) -> str:
    """A parent's page of a connection from ``source`` (the Source the resolvers' loaders
    page, ``db/queries/connections.py``): its rows whose parent column is ``parent``,
    in the tenant unless ``tenant_scoped`` is False (the viewer's own memberships)."""
    conditions = [f"t.organization_id = {r.tenant}"] if tenant_scoped else []
    conditions.append(f"t.{source.parent_column} = {parent}")
    return r.connection(nodes, node_type, source.table, conditions, page, where, count)


def project_tasks(r: Render, a: str, nodes: list[FieldNode]) -> str:
    args = r.args("Project", nodes[0])
    page = page_of(task_order_of(args), args)
    where = task_filter(args.get("filter")).to_db()
    counted = tasks.counted(where)
    if counted is None:
        return children(r, nodes, "Task", tasks.PROJECT_TASKS, f"{a}.id", page, where)

    def total() -> str:
        # The maintained counts (migration 27), as the resolvers' count loader reads them.
        statuses = counted.statuses
        kept = r.params(list(statuses), "::text[]") if statuses is not None else None
        counts = tasks.project_counts(r.tenant, f"= {a}.id", kept)
        return f"coalesce((SELECT n.total FROM ({counts}) AS n), 0)"

    return children(r, nodes, "Task", tasks.PROJECT_TASKS, f"{a}.id", page, where, count=total)


def subtasks(r: Render, a: str, nodes: list[FieldNode]) -> str:
    args = r.args("Task", nodes[0])
    page = page_of(task_order_of(args), args)
    return children(r, nodes, "Task", tasks.SUBTASKS, f"{a}.id", page)


def task_comments(r: Render, a: str, nodes: list[FieldNode]) -> str:
    args = r.args("Task", nodes[0])
    page = page_of(comments.OLDEST_FIRST, args)
    return children(r, nodes, "Comment", comments.TASK_COMMENTS, f"{a}.id", page, comments.live)


def task_history(r: Render, a: str, nodes: list[FieldNode]) -> str:
    args = r.args("Task", nodes[0])
    page = page_of(audit.NEWEST_FIRST, args)
    where = audit.EntityTypeFilter("tasks")
    return children(r, nodes, "AuditEntry", audit.BY_ENTITY, f"{a}.id", page, where)


def members(r: Render, a: str, nodes: list[FieldNode]) -> str:
    args = r.args("Organization", nodes[0])
    page = page_of(OLDEST_FIRST, args)
    return children(r, nodes, "Member", organizations.MEMBERS, f"{a}.id", page)


def projects_of(r: Render, a: str, nodes: list[FieldNode]) -> str:
    args = r.args("Organization", nodes[0])
    base = PROJECT_ORDERS[
        member(ProjectOrderField, args.get("orderBy"), ProjectOrderField.CREATED_AT)
    ]
    descending = member(Direction, args.get("direction"), Direction.DESC) is Direction.DESC
    order = Order(base.key, base.type, descending=descending)
    page = page_of(order, args)
    given = handled("ProjectFilter", args.get("filter") or {})
    statuses = given.get("status")
    where = projects.ProjectFilter(
        statuses=tuple(member(ProjectStatus, s, None).value for s in statuses)
        if statuses is not None
        else None,
        include_archived=bool(given.get("includeArchived", False)),
        search=given.get("search") or None,
    )
    return children(r, nodes, "Project", projects.PROJECTS, f"{a}.id", page, where)


def memberships(r: Render, a: str, nodes: list[FieldNode]) -> str:
    args = r.args("Viewer", nodes[0])
    page = page_of(OLDEST_FIRST, args)
    # The viewer's own memberships span tenants (no tenant condition), as in the resolver.
    return children(
        r, nodes, "Member", organizations.MEMBERSHIPS, r.viewer, page, tenant_scoped=False
    )


def ancestors(r: Render, a: str, nodes: list[FieldNode]) -> str:
    r.require_tenant()
    b = r.alias()
    return (
        f"(SELECT {json_array(r.object('Task', b, nodes), 'up.depth')} "
        f"FROM (WITH RECURSIVE up (id, depth) AS ("
        f"SELECT {a}.parent_task_id, 1 WHERE {a}.parent_task_id IS NOT NULL "
        f"UNION ALL SELECT t.parent_task_id, up.depth + 1 FROM up "
        f"JOIN tasks AS t ON t.organization_id = {r.tenant} AND t.id = up.id "
        f"WHERE t.parent_task_id IS NOT NULL) SELECT id, depth FROM up) AS up "
        f"JOIN tasks AS {b} ON {b}.organization_id = {r.tenant} AND {b}.id = up.id)"
    )


_STATUS_ARRAY = "ARRAY[" + ", ".join(f"'{s.value}'" for s in TaskStatus) + "]"


def status_counts(r: Render, a: str, nodes: list[FieldNode]) -> str:
    r.require_tenant()
    s = r.alias()
    return (
        f"(SELECT {json_array(r.object('TaskStatusCount', s, nodes), f'{s}.ord')} "
        f"FROM (SELECT u.status, u.ord, coalesce(n.total, 0) AS total "
        f"FROM unnest({_STATUS_ARRAY}::text[]) WITH ORDINALITY AS u (status, ord) "
        f"LEFT JOIN ({tasks.project_counts(r.tenant, f'= {a}.id', by_status=True)}) AS n "
        f"ON n.status = u.status) AS {s})"
    )


# --- root fields ------------------------------------------------------------------------


def viewer(r: Render, a: str, nodes: list[FieldNode]) -> str:
    return r.object("Viewer", "", nodes)


def viewer_user(r: Render, a: str, nodes: list[FieldNode]) -> str:
    b = r.alias()
    return or_null(
        f"(SELECT {r.object('User', b, nodes)} FROM users AS {b} WHERE {b}.id = {r.viewer})"
    )


def by_id(type_name: str, table: str) -> Field:
    def render(r: Render, a: str, nodes: list[FieldNode]) -> str:
        r.require_tenant()
        raw = decode_id(r.args("Query", nodes[0])["id"], type_name)
        b = r.alias()
        return or_null(
            f"(SELECT {r.object(type_name, b, nodes)} FROM {table} AS {b} "
            f"WHERE {b}.organization_id = {r.tenant} AND {b}.id = {r.params(raw, '::uuid')})"
        )

    return render


def organization(r: Render, a: str, nodes: list[FieldNode]) -> str:
    args = r.args("Query", nodes[0])
    b = r.alias()
    if args.get("id") is not None:
        condition = f"{b}.id = {r.params(decode_id(args['id'], 'Organization'), '::uuid')}"
    elif args.get("slug") is not None:
        condition = f"{b}.slug = {r.params(str(args['slug']).lower(), '::text')}"
    else:
        r.require_tenant()
        condition = f"{b}.id = {r.tenant}"
    return or_null(
        f"(SELECT {r.object('Organization', b, nodes)} FROM organizations AS {b} WHERE {condition})"
    )


#: search_hits() rows, best first (the cursor's key is the rank as text).
SEARCH_ORDER = Order("t.rank", "real", descending=True)


def search(r: Render, a: str, nodes: list[FieldNode]) -> str:
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


def search_node(r: Render, a: str, nodes: list[FieldNode]) -> str:
    """SearchHit.node: the Task or Project the hit names (the union's members)."""
    task, project = r.alias(), r.alias()
    return or_null(
        f"(CASE {a}.kind WHEN 'task' THEN (SELECT {r.object('Task', task, nodes)} "
        f"FROM tasks AS {task} WHERE {task}.organization_id = {r.tenant} AND {task}.id = {a}.id) "
        f"WHEN 'project' THEN (SELECT {r.object('Project', project, nodes)} "
        f"FROM projects AS {project} "
        f"WHERE {project}.organization_id = {r.tenant} AND {project}.id = {a}.id) END)"
    )


def audit_log(r: Render, a: str, nodes: list[FieldNode]) -> str:
    """Query.auditLog: the tenant's audit entries (or one entity's), newest first, for
    admins and owners, as the resolver (``api/queries.py``) pages and filters them."""
    r.require_role("admin")
    args = r.args("Query", nodes[0])
    page = page_of(audit.NEWEST_FIRST, {"first": args.get("first"), "after": args.get("after")})
    entity_type = member(AuditEntityType, args.get("entityType"), None)
    where = audit.EntityTypeFilter(entity_type.value if entity_type is not None else None)
    conditions = [f"t.organization_id = {r.tenant}"]
    if args.get("entityId") is not None:
        _, raw = from_global_id(args["entityId"])
        conditions.append(f"t.entity_id = {r.params(raw, '::uuid')}")
    return r.connection(nodes, "AuditEntry", audit.BY_ORGANIZATION.table, conditions, page, where)


def comment_history(r: Render, a: str, nodes: list[FieldNode]) -> str:
    """Comment.history: the elements of ``content_history`` as rows of COMMENT_VERSION's
    columns, oldest first; empty for a deleted comment (a tombstone), as in the resolver."""
    b = r.alias()
    versions = (
        f"SELECT h.v->>'content' AS content, (h.v->>'replaced_at')::timestamptz AS replaced_at, "
        f"(h.v->>'replaced_by')::uuid AS replaced_by, h.ord "
        f"FROM jsonb_array_elements({a}.content_history) WITH ORDINALITY AS h (v, ord)"
    )
    listed = (
        f"(SELECT {json_array(r.object('CommentVersion', b, nodes), f'{b}.ord')} "
        f"FROM ({versions}) AS {b})"
    )
    return f"(CASE WHEN {a}.{COMMENT.deleted} IS NULL THEN {listed} ELSE '[]' END)"


#: The types ``node(id:)`` fetches and their tables (by their registry's type name), and
#: whether they belong to a tenant (the resolver asks for X-Organization then).
NODE_TABLES = {
    "User": ("users", False),
    "Organization": ("organizations", False),
    "Member": ("organization_members", True),
    "Project": ("projects", True),
    "Task": ("tasks", True),
    "Comment": ("task_comments", True),
}


def node(r: Render, a: str, nodes: list[FieldNode]) -> str:
    """Query.node: the object the global id names, of its type (fragments on other types
    do not apply); a malformed id, or a type node(id:) does not fetch, goes to the
    resolvers, which report it."""
    kind, raw = from_global_id(r.args("Query", nodes[0])["id"])
    if kind not in NODE_TABLES:
        raise Unsupported(f"node(id:) of a {kind}")
    table, tenant_scoped = NODE_TABLES[kind]
    b = r.alias()
    conditions = [f"{b}.id = {r.params(raw, '::uuid')}"]
    if tenant_scoped:
        conditions.insert(0, f"{b}.organization_id = {r.tenant}")
    return or_null(
        f"(SELECT {r.object(kind, b, nodes)} FROM {table} AS {b} WHERE {' AND '.join(conditions)})"
    )
