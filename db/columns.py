"""Column types Piccolo lacks, for ``db.tables``: PostgreSQL's ``inet`` and ``xid8``.

Piccolo names a column's SQL type after its class (``Column.column_type`` is the class
name in upper case), so a subclass of ``Column`` is all a custom type needs. Values are
what asyncpg makes of them: ``ipaddress.IPv4Address``/``IPv6Address`` for ``inet`` (a
``str`` is accepted when writing), ``int`` for ``xid8``.
"""

from __future__ import annotations

from typing import Any

from piccolo.columns.base import Column


class Inet(Column):
    """``inet``: an IPv4 or IPv6 host address. Nullable, no default, in every use here."""

    value_type = str

    def __init__(self, default: str | None = None, **kwargs: Any) -> None:
        self._validate_default(default, (str, None))
        self.default = default
        super().__init__(default=default, **kwargs)


class Xid8(Column):
    """``xid8``: a 64-bit transaction id (``pg_current_xact_id()``). Written by the
    database only (triggers and column defaults); Piccolo reads it."""

    value_type = int

    def __init__(self, default: int | None = None, **kwargs: Any) -> None:
        self._validate_default(default, (int, None))
        self.default = default
        super().__init__(default=default, **kwargs)
