"""The field registry: how each GraphQL field that reads a column or a related row reads it.

One declaration per field, next to its type (``USER`` in ``api/types/users.py``, ``TASK`` in
``api/types/tasks.py``, ...), and two readers derived from it:

- the resolvers: ``ObjectSpec.values(row)`` gives a Strawberry object's keyword arguments
  for a row (``Task.from_row`` is ``cls(**TASK.values(row))``), with the same conversions
  and privacy rules;
- the compiler: ``api/compiler/scalars.py`` renders each declaration as an SQL expression
  over the row's alias (``Column("due_date", TIME)`` becomes ``gql_time(a.due_date)``, a
  ``Ref`` a correlated sub-select of the referenced row).

So a column's name, its rendering (ids, times, enums, floats, addresses, JSON), the
privacy rules (network details for admins, tombstones for deleted comments) and the
table and column a reference follows are written once. Connections (their sources,
orderings and arguments) are declared in ``db/queries`` (``Source``, ``Order``) and read
by both paths from there; the compiler's handled arguments are checked against the schema
by ``tests/api/test_compiler_arguments.py``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Literal

from api.ids import to_global_id

#: How a column's value reaches the client.
Kind = Literal["value", "time", "enum", "float", "ip", "json"]
VALUE: Kind = "value"
TIME: Kind = "time"
ENUM: Kind = "enum"
FLOAT: Kind = "float"
IP: Kind = "ip"
JSON: Kind = "json"


@dataclass(frozen=True)
class Column:
    """A field read from one column of the type's row."""

    column: str
    kind: Kind = VALUE
    #: The Strawberry enum of an ``ENUM`` column (stored as the members' values).
    enum: type[Enum] | None = None
    #: Privacy inside a tenant: null for callers below the network role (audit entries'
    #: request id, address and user agent; ``api.types.audit.may_read_network``).
    network: bool = False
    #: Null on a deleted row (a comment's tombstone).
    hidden_when_deleted: bool = False


@dataclass(frozen=True)
class Present:
    """A Boolean: whether ``column`` is set (``Project.archived``)."""

    column: str


@dataclass(frozen=True)
class Ref:
    """A related object: the row of ``table`` whose id is in ``column``."""

    type_name: str
    table: str
    column: str
    #: The Python object's private attribute holding the id (its resolver loads the row).
    attr: str
    hidden_when_deleted: bool = False


Entry = Column | Present | Ref


def snake(name: str) -> str:
    """A GraphQL field name as its Python attribute (Strawberry camel-cases them back)."""
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in name)


@dataclass(frozen=True)
class ObjectSpec:
    """The registry entries of one GraphQL object type."""

    type_name: str
    fields: Mapping[str, Entry]
    #: A Relay node: ``id`` is the global id of the row's ``id`` (and ``pk`` the raw one).
    node: bool = True
    #: The column that marks a deleted row, for ``hidden_when_deleted`` fields.
    deleted: str | None = None
    #: Columns computed with the object for resolvers that are not registry fields.
    private: Mapping[str, str] = field(default_factory=dict)

    def values(self, row: Mapping[str, Any], *, network: bool = True) -> dict[str, Any]:
        """Keyword arguments of the type's Strawberry class for ``row``; ``network``:
        whether the caller may read the network fields."""
        deleted = self.deleted is not None and row[self.deleted] is not None
        values: dict[str, Any] = {}
        if self.node:
            values["pk"] = row["id"]
            values["id"] = to_global_id(self.type_name, row["id"])
        for name, entry in self.fields.items():
            if isinstance(entry, Ref):
                hidden = entry.hidden_when_deleted and deleted
                values[entry.attr] = None if hidden else row[entry.column]
            elif isinstance(entry, Present):
                values[snake(name)] = row[entry.column] is not None
            else:
                hidden = (entry.network and not network) or (entry.hidden_when_deleted and deleted)
                values[snake(name)] = None if hidden else convert(entry, row[entry.column])
        for attr, column in self.private.items():
            values[attr] = row[column]
        return values


def convert(entry: Column, value: Any) -> Any:
    """A column's value as the Strawberry field holds it."""
    if value is None:
        return None
    if entry.kind == ENUM:
        assert entry.enum is not None
        return entry.enum(value)
    if entry.kind == FLOAT:
        return float(value)
    if entry.kind == IP:
        return str(value)
    if entry.kind == JSON:
        return json.loads(value) if isinstance(value, str) else value
    return value
