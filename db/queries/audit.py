"""Reading the audit log (only triggers write it), through ``audit_entries``: the view whose
network details are null unless the caller is an admin or owner (migration 15)."""

from __future__ import annotations

from dataclasses import dataclass

from db.queries.connections import Source
from db.sql import Order, Params

BY_ENTITY = Source(table="audit_entries", parent_column="entity_id")
BY_ORGANIZATION = Source(table="audit_entries", parent_column="organization_id")
NEWEST_FIRST = Order("t.created_at", "timestamptz", descending=True)


@dataclass(frozen=True)
class EntityTypeFilter:
    table: str | None

    def __call__(self, params: Params) -> list[str]:
        if self.table is None:
            return []
        return [f"t.entity_type = {params(self.table, '::text')}"]
