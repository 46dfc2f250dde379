"""Relay cursor connections over keyset pages (never OFFSET)."""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
import struct
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import Generic, TypeVar
from uuid import UUID

import asyncpg
import strawberry

from api import inputs
from api.errors import BadUserInput
from db.sql import Order, Page

T = TypeVar("T")
MAX_PAGE = 100


@strawberry.type(description="Where a page sits in its list (Relay).")
class PageInfo:
    has_next_page: bool
    has_previous_page: bool
    start_cursor: str | None
    end_cursor: str | None


@strawberry.type(description="One item of a connection and the cursor to continue after it.")
class Edge(Generic[T]):
    cursor: str
    node: T


@strawberry.type(description="A page of a list, paginated by keyset cursors.")
class Connection(Generic[T]):
    edges: list[Edge[T]]
    page_info: PageInfo
    _count: strawberry.Private[Callable[[], Awaitable[int]]]

    @strawberry.field(description="Number of items in the whole list (one more statement).")
    async def total_count(self) -> int:
        return await self._count()

    @strawberry.field(description="The nodes of this page, without cursors.")
    def nodes(self) -> list[T]:
        return [edge.node for edge in self.edges]


def encode_cursor(key: str | None, row_id: UUID) -> str:
    """The cursor of a row, exactly as the compiled path's ``gql_cursor(key, id)`` writes
    it: ``[key, "id"]`` as ``to_json`` writes the key (UTF-8, not ``\\u`` escapes), base64url
    without padding. One encoding, so a page's cursors do not depend on the path."""
    text = json.dumps([key, str(row_id)], ensure_ascii=False)
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


#: PostgreSQL's text output of the sort keys cursors carry, by the key's SQL type; a key must
#: read back as its type, or the page's statement would fail in PostgreSQL (a 500 for a
#: client's typo). ASCII digits only (Python's ``\\d``, ``int`` and ``float`` take other
#: digits, and ``float`` underscores, which PostgreSQL refuses). Timestamps: ISO output
#: (``2025-03-01 12:34:56.789+00``) or infinities, offsets within PostgreSQL's +-15:59:59.
_TIMESTAMP = re.compile(
    r"-?infinity|[0-9]{4}-[0-9]{2}-[0-9]{2} [0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,6})?"
    r"[+-](0[0-9]|1[0-5])(:[0-5][0-9]){0,2}"
)
_SMALLINT = re.compile(r"-?[0-9]{1,5}")
_REAL = re.compile(r"NaN|-?Infinity|-?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+)?")


def _real_fits(key: str) -> bool:
    """``key`` reads as a PostgreSQL ``real``: its syntax, and a value that neither
    overflows nor underflows to zero (PostgreSQL refuses both, Python's float does not)."""
    if _REAL.fullmatch(key) is None:
        return False
    value = float(key)
    if math.isnan(value) or math.isinf(value):
        return True
    try:
        single = struct.unpack("<f", struct.pack("<f", value))[0]
    except OverflowError:
        return False
    return single != 0.0 or value == 0.0


def _key_fits(key: str, key_type: str) -> bool:
    if inputs.text_problem(key) is not None:
        return False  # NUL or a lone surrogate: PostgreSQL text cannot hold it
    if key_type == "timestamptz":
        if not _TIMESTAMP.fullmatch(key):
            return False
        if "infinity" in key:
            return True
        try:
            datetime.fromisoformat(key)
        except ValueError:
            return False
        return True
    if key_type == "smallint":
        return _SMALLINT.fullmatch(key) is not None and -32768 <= int(key) <= 32767
    if key_type == "real":
        return _real_fits(key)
    return key_type == "text"


def decode_cursor(
    cursor: str, key_type: str | None = None, argument: str = "after"
) -> tuple[str, UUID]:
    """The (sort key as text, id) of a cursor; with ``key_type``, the key must also read as
    that SQL type. Anything else is BAD_USER_INPUT."""
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        key, row_id = json.loads(base64.urlsafe_b64decode(padded.encode()))
        if not isinstance(key, str) or (key_type is not None and not _key_fits(key, key_type)):
            raise ValueError(key)
        return key, UUID(row_id)
    except (ValueError, TypeError, binascii.Error, UnicodeDecodeError):
        raise BadUserInput(f"malformed cursor {cursor[:80]!r}", argument=argument) from None


def page_request(
    order: Order,
    first: int | None,
    after: str | None,
    last: int | None = None,
    before: str | None = None,
) -> Page:
    """Validate Relay arguments: exactly one of ``first``/``last``, 1 to MAX_PAGE."""
    if (first is None) == (last is None):
        raise BadUserInput("give exactly one of `first` or `last`", argument="first")
    size = first if first is not None else last
    assert size is not None
    if not 1 <= size <= MAX_PAGE:
        raise BadUserInput(f"`first`/`last` must be between 1 and {MAX_PAGE}", argument="first")
    if (first is not None and before is not None) or (last is not None and after is not None):
        raise BadUserInput("use `after` with `first`, `before` with `last`", argument="after")
    if last is not None:
        cursor = decode_cursor(before, order.type, "before") if before else None
        return Page(size, order, cursor, backwards=True)
    return Page(size, order, decode_cursor(after, order.type) if after else None)


def connection(
    rows: Sequence[asyncpg.Record],
    page: Page,
    node: Callable[[asyncpg.Record], T],
    count: Callable[[], Awaitable[int]],
) -> Connection[T]:
    """Build a connection from up to ``page.size + 1`` rows (the extra one means: more)."""
    more = len(rows) > page.size
    if page.backwards:
        visible = list(rows[len(rows) - page.size :]) if more else list(rows)
    else:
        visible = list(rows[: page.size])
    edges = [Edge(cursor=encode_cursor(row["_key"], row["id"]), node=node(row)) for row in visible]
    continued = page.cursor is not None
    return Connection(
        edges=edges,
        page_info=PageInfo(
            has_next_page=more if not page.backwards else continued,
            has_previous_page=more if page.backwards else continued,
            start_cursor=edges[0].cursor if edges else None,
            end_cursor=edges[-1].cursor if edges else None,
        ),
        _count=count,
    )
