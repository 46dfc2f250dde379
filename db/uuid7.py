"""UUIDv7 (RFC 9562) for Python < 3.14, and a Piccolo column default that uses it."""

from __future__ import annotations

import os
import time
import uuid

from piccolo.columns.defaults.uuid import UUID7


def uuid7() -> uuid.UUID:
    """A time-ordered UUID: 48-bit Unix milliseconds, version 7, 74 random bits."""
    value = (time.time_ns() // 1_000_000) << 80 | int.from_bytes(os.urandom(10), "big")
    value = value & ~(0xF << 76) | 0x7 << 76  # version 7
    value = value & ~(0x3 << 62) | 0x2 << 62  # RFC 4122 variant
    return uuid.UUID(int=value)


class UUIDv7(UUID7):
    """Column default: ``uuidv7()`` in the database (built in on PG18, our SQL function on
    PG15-17), :func:`uuid7` in Python (Piccolo's own default needs Python 3.14)."""

    def python(self) -> uuid.UUID:
        return uuid7()
