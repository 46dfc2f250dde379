"""What depends only on a parsed document, worked out once per document.

The parser cache (``strawberry``'s ``ParserCache``, and the compiler's plans) hands out the
same ``DocumentNode`` for the same query text, so the checks and plans that depend on the
document alone (not on the variables) need not walk it on every request: the variable
usages of ``api.inputs.check_null_variables``, the document bounds of
``api.cost.check_document``, the shape of a mutation's read-back (``api.readback``).

Keyed by the objects' identity: graphql-core's AST nodes hash by value, recursively and
without caching, which costs as much as the walk saved. An entry holds the objects it is
keyed by, so their ids cannot be reused by other objects while it lives. Bounded (least recently used out).
Results only: a check that raises is not remembered, and is run again next time.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class ByDocument(Generic[V]):
    """A bounded memo of ``compute()`` per (objects by identity, further key by value)."""

    def __init__(self, size: int = 1000) -> None:
        self.size = size
        self._entries: OrderedDict[tuple[Hashable, ...], tuple[tuple[object, ...], V]] = (
            OrderedDict()
        )

    def get(
        self, objects: tuple[object, ...], key: tuple[Hashable, ...], compute: Callable[[], V]
    ) -> V:
        """``compute()``'s value for these ``objects`` (the document, its operation, the
        schema...: compared by identity, and held by the entry) and ``key``."""
        full = (*(id(o) for o in objects), *key)
        entry = self._entries.get(full)
        if entry is not None and all(a is b for a, b in zip(entry[0], objects, strict=True)):
            self._entries.move_to_end(full)
            return entry[1]
        value = compute()
        self._entries[full] = (objects, value)
        self._entries.move_to_end(full)
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)
        return value

    def __len__(self) -> int:
        return len(self._entries)


class Recent(Generic[K, V]):
    """A bounded memo by value: ``compute()``'s value per key, the least recently used out
    (the compiler's plans and read-backs, the direct writes' plans)."""

    def __init__(self, size: int = 1000) -> None:
        self.size = size
        self._entries: OrderedDict[K, V] = OrderedDict()

    def get(self, key: K, compute: Callable[[], V]) -> V:
        if key in self._entries:
            self._entries.move_to_end(key)
            return self._entries[key]
        value = compute()
        self._entries[key] = value
        if len(self._entries) > self.size:
            self._entries.popitem(last=False)
        return value

    def __len__(self) -> int:
        return len(self._entries)
