"""Scalar fields and references: SQL expressions over a row alias, derived from the field
registry (``api/registry.py``) so that the compiled path reads and renders each column as
the resolvers do."""

from __future__ import annotations

from enum import Enum
from typing import TYPE_CHECKING

from graphql import (
    FieldNode,
)

from api.compiler.plans import (
    Field,
    json_text,
    literal,
    or_null,
    quoted,
)
from api.registry import ENUM, FLOAT, IP, JSON, TIME, Column, Entry, ObjectSpec, Present, Ref
from api.types.audit import NODE_TYPE_OF

if TYPE_CHECKING:
    from api.compiler.render import Render


def global_id(type_name: str) -> Field:
    return lambda r, a, nodes: quoted(f"gql_id('{type_name}', {a}.id)")


def enum_of(enum: type[Enum], column: str) -> Field:
    """The member's name for its stored value: ``upper()`` where every name is its value
    upper-cased (TaskStatus.IN_PROGRESS = 'in_progress'), a CASE otherwise."""
    if all(m.name == str(m.value).upper() for m in enum):
        return lambda r, a, nodes: quoted(f"upper({a}.{column})")
    cases = " ".join(f"WHEN {literal(str(m.value))} THEN {literal(m.name)}" for m in enum)
    return lambda r, a, nodes: quoted(f"(CASE {a}.{column} {cases} END)")


def float_of(column: str) -> Field:
    """A Float as Python's json writes it: the shortest repr, and ``2.0`` for an integral
    value (PostgreSQL would write ``2``)."""

    def render(r: Render, a: str, nodes: list[FieldNode]) -> str:
        v = f"{a}.{column}::float8"
        return or_null(
            f"(CASE WHEN {v} = trunc({v}) AND abs({v}) < 1e16 "
            f"THEN trunc({v})::bigint::text || '.0' ELSE {v}::text END)"
        )

    return render


def ip_of(column: str) -> Field:
    # asyncpg returns a host address for a full mask (str: '10.0.0.1') and a network
    # otherwise (str: '10.0.0.0/24'), like inet's own text form.
    return lambda r, a, nodes: quoted(
        f"CASE WHEN masklen({a}.{column}) = CASE family({a}.{column}) WHEN 4 THEN 32 "
        f"ELSE 128 END THEN host({a}.{column}) ELSE {a}.{column}::text END"
    )


def to_one(type_name: str, table: str, column: str) -> Field:
    def render(r: Render, a: str, nodes: list[FieldNode]) -> str:
        b = r.alias()
        return or_null(
            f"(SELECT {r.object(type_name, b, nodes)} FROM {table} AS {b} "
            f"WHERE {b}.id = {a}.{column})"
        )

    return render


def column_of(entry: Column) -> Field:
    column = entry.column
    if entry.kind == TIME:
        return lambda r, a, nodes: quoted(f"gql_time({a}.{column})")
    if entry.kind == ENUM:
        assert entry.enum is not None
        return enum_of(entry.enum, column)
    if entry.kind == FLOAT:
        return float_of(column)
    if entry.kind == IP:
        return ip_of(column)
    if entry.kind == JSON:
        # jsonb's text: the separators and key order the resolvers' json.loads keeps.
        return lambda r, a, nodes: or_null(f"{a}.{column}::text")
    return lambda r, a, nodes: json_text(f"{a}.{column}")


def network(field: Field) -> Field:
    """An audit entry's network detail: null unless the caller's role may read it (bound per
    request, as the statement is shared by every caller of the same query)."""
    return lambda r, a, nodes: f"(CASE WHEN {r.network} THEN {field(r, a, nodes)} ELSE 'null' END)"


def unless_deleted(deleted: str, field: Field) -> Field:
    """A field a deleted row (a tombstone) answers with null."""
    return lambda r, a, nodes: (
        f"(CASE WHEN {a}.{deleted} IS NULL THEN {field(r, a, nodes)} ELSE 'null' END)"
    )


def entry_of(spec: ObjectSpec, entry: Entry) -> Field:
    """The SQL rendering of one registry entry, with its privacy rules."""
    if isinstance(entry, Ref):
        field = to_one(entry.type_name, entry.table, entry.column)
        hidden = entry.hidden_when_deleted
    elif isinstance(entry, Present):
        column = entry.column
        return lambda r, a, nodes: (
            f"(CASE WHEN {a}.{column} IS NOT NULL THEN 'true' ELSE 'false' END)"
        )
    else:
        field = column_of(entry)
        if entry.network:
            field = network(field)
        hidden = entry.hidden_when_deleted
    if hidden:
        assert spec.deleted is not None
        field = unless_deleted(spec.deleted, field)
    return field


def fields_of(spec: ObjectSpec) -> dict[str, Field]:
    """Every field of ``spec`` as the compiler renders it."""
    fields = {name: entry_of(spec, entry) for name, entry in spec.fields.items()}
    if spec.node:
        fields["id"] = global_id(spec.type_name)
    return fields


_ENTITY_NODE_CASE = " ".join(
    f"WHEN {literal(table)} THEN {literal(name)}" for table, name in NODE_TYPE_OF.items()
)


def entity_id(r: Render, a: str, nodes: list[FieldNode]) -> str:
    """AuditEntry.entityId: the global id of the changed row, named by its table."""
    return quoted(f"gql_id(CASE {a}.entity_type {_ENTITY_NODE_CASE} END, {a}.entity_id)")
