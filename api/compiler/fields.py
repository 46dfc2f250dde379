"""Every field the compiler renders, by type: the registry's scalars and references plus
the relation renderers, and the shapes (connections, edges, unions) it knows."""

from __future__ import annotations

from graphql.language import NamedTypeNode

from api.compiler.plans import (
    Field,
)
from api.compiler.relations import (
    ancestors,
    audit_log,
    by_id,
    comment_history,
    members,
    memberships,
    node,
    organization,
    project_tasks,
    projects_of,
    search,
    search_node,
    status_counts,
    subtasks,
    task_comments,
    task_history,
    viewer,
    viewer_user,
)
from api.compiler.scalars import entity_id, fields_of, float_of, global_id
from api.types.audit import (
    AUDIT_ENTRY,
)
from api.types.comments import COMMENT, COMMENT_VERSION
from api.types.organizations import ORGANIZATION
from api.types.projects import PROJECT, STATUS_COUNT
from api.types.tasks import TASK
from api.types.users import MEMBER, USER

#: The registry's declarations (scalars and references), by type.
SPECS = (
    USER,
    ORGANIZATION,
    MEMBER,
    PROJECT,
    STATUS_COUNT,
    TASK,
    COMMENT,
    COMMENT_VERSION,
    AUDIT_ENTRY,
)

#: What the compiler renders beyond the registry's scalars: relations, connections, root
#: fields and the few fields computed from more than one column.
RELATIONS: dict[str, dict[str, Field]] = {
    "Query": {
        "viewer": viewer,
        "organization": organization,
        "project": by_id("Project", "projects"),
        "task": by_id("Task", "tasks"),
        "search": search,
        "auditLog": audit_log,
        "node": node,
    },
    "SearchHit": {"rank": float_of("rank"), "node": search_node},
    "Viewer": {"user": viewer_user, "memberships": memberships},
    "Organization": {"members": members, "projects": projects_of},
    "Project": {"tasks": project_tasks, "taskCountsByStatus": status_counts},
    "Task": {
        "ancestors": ancestors,
        "subtasks": subtasks,
        "comments": task_comments,
        "history": task_history,
    },
    "Comment": {"history": comment_history},
    "AuditEntry": {"id": global_id("AuditEntry"), "entityId": entity_id},
}

FIELDS: dict[str, dict[str, Field]] = {
    **{name: dict(fields) for name, fields in RELATIONS.items()},
}
for _spec in SPECS:
    FIELDS.setdefault(_spec.type_name, {}).update(fields_of(_spec))

#: Connection and edge types: their fields are rendered by ``Render.connection``.
CONNECTIONS = {
    f"{node}{suffix}": node
    for node in ("Task", "Comment", "AuditEntry", "Member", "Project", "SearchHit")
    for suffix in ("Connection", "Edge")
}
CONNECTION_FIELDS = {"edges", "nodes", "pageInfo", "totalCount"}
EDGE_FIELDS = {"cursor", "node"}
PAGE_INFO_FIELDS = {"hasNextPage", "hasPreviousPage", "startCursor", "endCursor"}
#: Union types and their members (a fragment on the union applies to each member).
UNION_MEMBERS = {
    "SearchResult": ("Project", "Task"),
    # The Node interface, as far as the compiler renders it (node(id:) and its fragments).
    "Node": ("User", "Organization", "Member", "Project", "Task", "Comment"),
}
#: Root fields that read only the viewer's own rows.
VIEWER_ONLY = {"viewer"}
#: json_build_object takes at most 100 arguments.
MAX_KEYS = 50


def applies(condition: NamedTypeNode | None, type_name: str) -> bool:
    if condition is None:
        return True
    name = condition.name.value
    return name == type_name or type_name in UNION_MEMBERS.get(name, ())
