"""Global object ids (Relay): base64 of ``TypeName:uuid``, opaque to clients."""

from __future__ import annotations

import base64
import binascii
from uuid import UUID

from api.errors import BadUserInput

NODE_TYPES = (
    "User",
    "Organization",
    "Member",
    "Invitation",
    "Project",
    "Task",
    "Comment",
    "AuditEntry",
)


def to_global_id(type_name: str, raw_id: UUID) -> str:
    return base64.urlsafe_b64encode(f"{type_name}:{raw_id}".encode()).decode().rstrip("=")


def from_global_id(global_id: str) -> tuple[str, UUID]:
    """Decode a global id; a malformed one is BAD_USER_INPUT, never a server error."""
    try:
        padded = global_id + "=" * (-len(global_id) % 4)
        type_name, raw = base64.urlsafe_b64decode(padded.encode()).decode().split(":", 1)
        if type_name not in NODE_TYPES:
            raise ValueError(type_name)
        return type_name, UUID(raw)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise BadUserInput(f"malformed id {global_id[:80]!r}", argument="id") from None


def decode_id(global_id: str, expected: str) -> UUID:
    """The uuid of a global id that must be of type ``expected``."""
    type_name, raw = from_global_id(global_id)
    if type_name != expected:
        raise BadUserInput(
            f"id {global_id[:80]!r} is a {type_name}, not a {expected}", argument="id"
        )
    return raw
