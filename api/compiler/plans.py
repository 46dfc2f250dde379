"""What the compiler produces: plans of documents, statements, and the refusal (Unsupported)
that sends a request to the resolvers."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from uuid import UUID

from graphql import (
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    OperationDefinitionNode,
)

from api.types.audit import may_read_network

if TYPE_CHECKING:
    from api.compiler.render import Render


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


Field = Callable[["Render", str, list[FieldNode]], str]


def key_of(node: FieldNode) -> str:
    return node.alias.value if node.alias else node.name.value


def literal(name: str) -> str:
    # GraphQL names match [_A-Za-z][_0-9A-Za-z]*; refuse anything else outright.
    if not name.replace("_", "a").isalnum() or not name.isascii():
        raise Unsupported(name)
    return f"'{name}'"


# --- JSON text: every renderer returns an SQL expression of type text holding JSON ---------
#
# The statement writes the response's bytes exactly as the resolvers' encoder does
# (``json.dumps(..., ensure_ascii=False)``: ``", "`` and ``": "``, UTF-8 unescaped, the
# separators PostgreSQL's jsonb output uses too), so both paths answer byte for byte.


def json_text(expr: str) -> str:
    """A scalar SQL value as JSON (``null`` for NULL), escaped by ``to_json``."""
    return f"coalesce(to_json({expr})::text, 'null')"


def quoted(expr: str) -> str:
    """A text value that needs no escaping (base64url ids and cursors, times, enum names)
    as a JSON string (``null`` for NULL)."""
    return f"coalesce('\"' || {expr} || '\"', 'null')"


def or_null(expr: str) -> str:
    """JSON text, or ``null`` where the expression is NULL (a missing row)."""
    return f"coalesce({expr}, 'null')"


def json_key(key: str) -> str:
    """An SQL literal of ``"key": `` for a response key (a GraphQL name)."""
    literal(key)
    return f"'\"{key}\": '"


def json_object(pairs: list[tuple[str, str]]) -> str:
    """A JSON object of (response key, JSON text expression), in that order."""
    if not pairs:
        return "'{}'::text"  # every field skipped, or fragments of other types only
    parts = " || ', ' || ".join(f"{json_key(key)} || {value}" for key, value in pairs)
    return f"('{{'::text || {parts} || '}}')"


def json_array(element: str, order: str, only: str = "") -> str:
    """The JSON array of ``element`` over the rows of the enclosing aggregate, in ``order``
    (``only``: a FILTER clause); ``[]`` for no rows."""
    return f"coalesce('[' || string_agg({element}, ', ' ORDER BY {order}) {only} || ']', '[]')"


def typename(name: str) -> str:
    """``__typename``'s JSON string (a GraphQL name: no escaping)."""
    literal(name)
    return f"'\"{name}\"'"
