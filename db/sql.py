"""Composing SQL from constant fragments, with every value bound as a parameter.

Fragments are string constants of this code base (column names from whitelists, operators);
values supplied by users only ever become ``$n`` parameters. Nothing a client sends is
formatted into SQL text.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Params:
    """Collects parameter values and hands out their ``$n`` placeholders."""

    values: list[Any] = field(default_factory=list)

    def __call__(self, value: Any, cast: str = "") -> str:
        self.values.append(value)
        return f"${len(self.values)}{cast}"


@dataclass(frozen=True)
class Order:
    """A keyset ordering: a sort key (an expression over the table alias ``t``) and ``t.id``."""

    #: SQL expression of the sort key, a constant of this code base.
    key: str
    #: SQL type of the key. Cursors carry the key as text (exact for every type, including
    #: 'infinity'), cast back to this type when bound.
    type: str
    descending: bool = False

    def reversed(self) -> Order:
        return Order(self.key, self.type, not self.descending)

    def order_by(self) -> str:
        direction = "DESC" if self.descending else "ASC"
        return f"{self.key} {direction}, t.id {direction}"

    def after(self, params: Params, cursor: tuple[Any, Any]) -> str:
        """The keyset condition: rows strictly after ``cursor`` in this order."""
        operator = "<" if self.descending else ">"
        key, row_id = cursor
        bound_key = f"({params(str(key), '::text')})::{self.type}"
        return f"({self.key}, t.id) {operator} ({bound_key}, {params(row_id, '::uuid')})"


@dataclass(frozen=True)
class Page:
    """What a connection field asks for, once validated: size, direction and cursor."""

    size: int
    order: Order
    #: Decoded cursor (key as text, id) to continue from, if any.
    cursor: tuple[str, Any] | None = None
    #: True for ``last``/``before``: rows are fetched in reverse and flipped back.
    backwards: bool = False

    @property
    def fetch_order(self) -> Order:
        return self.order.reversed() if self.backwards else self.order
