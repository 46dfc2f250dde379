"""The field registry (``api/registry.py``) is the one declaration both paths read.

Each registry entry names a field of the schema; the resolvers' ``from_row`` builds every
entry's value from a row and the compiler renders every entry; and every field of a
registered type is accounted for: a registry entry, a compiler relation, or a field the
resolvers alone answer (listed here, each with its reason). A field added to a type
without a declaration fails here."""

from __future__ import annotations

from datetime import UTC, datetime
from ipaddress import ip_address, ip_network
from typing import Any

import pytest
from graphql import GraphQLObjectType

from api.compiler import FIELDS
from api.compiler.fields import RELATIONS, SPECS
from api.registry import Column, ObjectSpec, Present, Ref, snake
from api.schema import build_schema
from api.settings import Settings
from api.types.audit import AUDIT_ENTRY, AuditEntry
from api.types.comments import COMMENT, Comment
from db.uuid7 import uuid7

SCHEMA = build_schema(Settings())._schema

#: Fields of registered types that only the resolvers answer, and why.
RESOLVER_ONLY = {
    ("Organization", "invitations"): "admin-only invitations are not compiled",
}


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.type_name)
def test_every_entry_names_a_field_of_its_type(spec: ObjectSpec) -> None:
    found = SCHEMA.get_type(spec.type_name)
    assert isinstance(found, GraphQLObjectType)
    assert set(spec.fields) <= set(found.fields), set(spec.fields) - set(found.fields)
    for name, entry in spec.fields.items():
        if isinstance(entry, Ref):
            target = found.fields[name].type
            while hasattr(target, "of_type"):
                target = target.of_type
            assert target.name == entry.type_name, name


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.type_name)
def test_every_field_of_a_registered_type_is_accounted_for(spec: ObjectSpec) -> None:
    found = SCHEMA.get_type(spec.type_name)
    assert isinstance(found, GraphQLObjectType)
    relations = RELATIONS.get(spec.type_name, {})
    for name in found.fields:
        declared = name in spec.fields or (name == "id" and spec.node) or name in relations
        assert declared or (spec.type_name, name) in RESOLVER_ONLY, (
            f"{spec.type_name}.{name}: declare it in the registry, the compiler's relations, "
            "or RESOLVER_ONLY"
        )
        if (spec.type_name, name) not in RESOLVER_ONLY:
            assert name in FIELDS[spec.type_name], f"{spec.type_name}.{name} is not compiled"


def _row(spec: ObjectSpec, **given: Any) -> dict[str, Any]:
    row: dict[str, Any] = {"id": uuid7()}
    for entry in spec.fields.values():
        if isinstance(entry, Column | Present | Ref):
            row.setdefault(entry.column, None)
    row.update({column: None for column in spec.private.values() if column not in row})
    row["id"] = row["id"] or uuid7()
    row.update(given)
    return row


def test_from_row_follows_the_registry_conversions_and_privacy_rules() -> None:
    now = datetime(2026, 12, 2, tzinfo=UTC)
    row = _row(
        AUDIT_ENTRY,
        action="update",
        entity_type="tasks",
        entity_id=uuid7(),
        changes='{"after": {"title": "x"}}',
        request_id="r1",
        ip_address=ip_address("10.0.0.1"),
        user_agent="ua",
        created_at=now,
    )
    shown = AuditEntry.from_row(row, network=True)
    assert (shown.ip_address, shown.request_id, shown.user_agent) == ("10.0.0.1", "r1", "ua")
    changes: Any = shown.changes
    assert changes == {"after": {"title": "x"}}
    hidden = AuditEntry.from_row(row, network=False)
    assert (hidden.ip_address, hidden.request_id, hidden.user_agent) == (None, None, None)
    network = AuditEntry.from_row({**row, "ip_address": ip_network("10.0.0.0/24")}, network=True)
    assert network.ip_address == "10.0.0.0/24"

    live = _row(COMMENT, content="hi", author_id=uuid7(), task_id=uuid7(), created_at=now)
    live.update(updated_at=now, content_history="[]")
    comment = Comment.from_row(live)
    assert (comment.content, comment.author_id) == ("hi", live["author_id"])
    tombstone = Comment.from_row({**live, "deleted_at": now})
    assert (tombstone.content, tombstone.author_id, tombstone.history()) == (None, None, [])
    assert tombstone.task_id == live["task_id"]


def test_snake_case_matches_strawberry_names() -> None:
    assert snake("displayName") == "display_name"
    assert snake("taskCountsByStatus") == "task_counts_by_status"
