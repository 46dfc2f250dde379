"""Outbox events as the listener receives them, and the resume cursor.

A NOTIFY on ``taskql_realtime`` (migration 22) carries the routing keys of up to 40 events
of one statement, never their content::

    {"h": "<horizon xid8>", "t": "task", "a": "update", "e": [[id, org, entity, scope], ...]}

or the ids of sessions that ended: ``{"revoked": ["<session id>", ...]}``.

A cursor is ``<id>.<horizon>.<unix seconds>``: resuming after it replays the events with a
larger id, and those of transactions that were still running when it was written (``xid >=
horizon``), which may have drawn smaller ids and committed later. Nothing committed is
missed; a few events may come twice (a client deduplicates by cursor id).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from api.errors import BadUserInput

CHANNEL = "taskql_realtime"
TOPICS = ("project", "task", "comment", "member")
ACTIONS = ("insert", "update", "delete")


@dataclass(frozen=True, slots=True)
class Cursor:
    id: int
    horizon: int
    #: When the event was received (for the retention window).
    at: int

    def encode(self) -> str:
        return f"{self.id}.{self.horizon}.{self.at}"

    @classmethod
    def decode(cls, text: str, retention_seconds: int) -> Cursor:
        parts = text.split(".")
        if len(text) > 64 or len(parts) != 3 or not all(p.isdigit() for p in parts):
            raise BadUserInput(f"malformed cursor {text[:64]!r}", argument="after")
        cursor = cls(int(parts[0]), int(parts[1]), int(parts[2]))
        if time.time() - cursor.at > retention_seconds:
            raise BadUserInput(
                f"cursor {text!r} is older than the {retention_seconds} s retention window: "
                "refetch, then subscribe without `after`",
                argument="after",
                retentionSeconds=retention_seconds,
            )
        return cursor


@dataclass(frozen=True, slots=True)
class Event:
    id: int
    organization_id: UUID
    topic: str
    action: str
    entity_id: UUID
    scope_id: UUID
    horizon: int
    at: int

    @property
    def cursor(self) -> Cursor:
        return Cursor(self.id, self.horizon, self.at)


@dataclass(frozen=True, slots=True)
class Notification:
    events: tuple[Event, ...] = ()
    revoked_sessions: tuple[UUID, ...] = ()


def parse(payload: str) -> Notification:
    """A notification's events; raises ValueError (or KeyError, TypeError) if malformed."""
    data: dict[str, Any] = json.loads(payload)
    if "revoked" in data:
        return Notification(revoked_sessions=tuple(UUID(s) for s in data["revoked"]))
    topic, action, horizon = data["t"], data["a"], int(data["h"])
    if topic not in TOPICS or action not in ACTIONS:
        raise ValueError(f"unknown topic or action: {topic!r} {action!r}")
    now = int(time.time())
    return Notification(
        events=tuple(
            Event(int(i), UUID(org), topic, action, UUID(entity), UUID(scope), horizon, now)
            for i, org, entity, scope in data["e"]
        )
    )


#: Replay after a cursor, under the subscriber's tenant (RLS filters it again). The member
#: topic spans tenants (the viewer's own memberships, by the own-membership policy).
REPLAY_SQL = """
SELECT id, organization_id, topic, action, entity_id, scope_id, horizon::text::bigint AS horizon,
       extract(epoch FROM created_at)::bigint AS at
FROM realtime_events
WHERE topic = $1 AND scope_id = $2 AND ($3::uuid IS NULL OR organization_id = $3)
  AND (id > $4 OR (xid >= $5::text::xid8 AND id <> $4))
ORDER BY id
LIMIT $6
"""


def from_row(row: Any) -> Event:
    return Event(
        row["id"],
        row["organization_id"],
        row["topic"],
        row["action"],
        row["entity_id"],
        row["scope_id"],
        row["horizon"],
        row["at"],
    )
