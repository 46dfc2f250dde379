"""Per-request DataLoaders: every relation is loaded in batches, one statement per batch.

Built fresh for each request (``Context.loaders``): nothing is cached across requests, so
one tenant's rows can never be served to another.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any, TypeVar
from uuid import UUID

import asyncpg
from strawberry.dataloader import DataLoader

from api.pagination import Connection, connection
from db.executor import Executor
from db.queries import comments, invitations, organizations, projects, tasks, users
from db.queries.connections import Filter, Source, count_by_parent, no_filter, page_by_parent
from db.sql import Page

if TYPE_CHECKING:
    from api.context import Context

T = TypeVar("T")
K = TypeVar("K")
V = TypeVar("V")
ByIds = Callable[[Executor, Sequence[UUID]], Awaitable[list[asyncpg.Record]]]
ByIdsInTenant = Callable[[Executor, UUID | None, Sequence[UUID]], Awaitable[list[asyncpg.Record]]]


class SharedLoader(DataLoader[K, V]):
    """A DataLoader whose lookups are shared by every field asking for the same key, and
    survive one of them being cancelled.

    graphql-core cancels a failed field's siblings (``gather_with_cancel``); a cancelled
    task awaiting a future cancels that future, and DataLoader hands the SAME future to
    every field loading the key, so another parent's field awaiting it got a
    ``CancelledError`` it never asked for (a plain-text 500). Each caller awaits its own
    shield of the shared future instead."""

    def load(self, key: K) -> Awaitable[V]:
        return asyncio.shield(super().load(key))


@dataclass(frozen=True)
class PageKey:
    """One parent's page of a connection; keys sharing everything but the parent batch."""

    source: Source
    parent_id: UUID
    page: Page
    where: Filter = no_filter
    #: False only for the viewer's own memberships, which span tenants.
    tenant_scoped: bool = True


@dataclass(frozen=True)
class CountKey:
    source: Source
    parent_id: UUID
    where: Filter = no_filter
    tenant_scoped: bool = True


class Loaders:
    """The request's DataLoaders, each made at its first use (a write primes one; most
    requests use a few of them or none)."""

    def __init__(self, context: Context) -> None:
        self._context = context

    @cached_property
    def user(self) -> DataLoader[UUID, asyncpg.Record | None]:
        return self._by_id(users.by_ids)

    @cached_property
    def organization(self) -> DataLoader[UUID, asyncpg.Record | None]:
        return self._by_id(organizations.by_ids)

    @cached_property
    def member(self) -> DataLoader[UUID, asyncpg.Record | None]:
        return self._by_id(organizations.members_by_ids)

    @cached_property
    def invitation(self) -> DataLoader[UUID, asyncpg.Record | None]:
        return self._by_id(invitations.by_ids)

    @cached_property
    def project(self) -> DataLoader[UUID, asyncpg.Record | None]:
        return self._in_tenant(projects.by_ids)

    @cached_property
    def task(self) -> DataLoader[UUID, asyncpg.Record | None]:
        return self._in_tenant(tasks.by_ids)

    @cached_property
    def comment(self) -> DataLoader[UUID, asyncpg.Record | None]:
        return self._in_tenant(comments.by_ids)

    @cached_property
    def page(self) -> DataLoader[PageKey, list[asyncpg.Record]]:
        return SharedLoader(self._pages)

    @cached_property
    def count(self) -> DataLoader[CountKey, int]:
        return SharedLoader(self._counts)

    @cached_property
    def ancestors(self) -> DataLoader[UUID, list[asyncpg.Record]]:
        return SharedLoader(self._ancestors)

    @cached_property
    def status_counts(self) -> DataLoader[UUID, dict[str, int]]:
        return SharedLoader(self._status_counts)

    def _by_id(self, query: ByIds) -> DataLoader[UUID, asyncpg.Record | None]:
        async def load(ids: list[UUID]) -> list[asyncpg.Record | None]:
            found = {row["id"]: row for row in await query(self._context.db, ids)}
            return [found.get(i) for i in ids]

        return SharedLoader(load)

    def _in_tenant(self, query: ByIdsInTenant) -> DataLoader[UUID, asyncpg.Record | None]:
        """By id within the request's tenant (no tenant: nothing, as RLS would answer)."""

        async def load(ids: list[UUID]) -> list[asyncpg.Record | None]:
            rows = await query(self._context.db, self._current_tenant(), ids)
            found = {row["id"]: row for row in rows}
            return [found.get(i) for i in ids]

        return SharedLoader(load)

    def _current_tenant(self) -> UUID | None:
        context = self._context
        if context.organization_id is not None:
            return context.organization_id
        return context.auth.tenant.organization_id if context.auth.tenant else None

    def _tenant(self, scoped: bool) -> UUID | None:
        return self._context.scope_id if scoped else None

    async def _pages(self, keys: list[PageKey]) -> list[list[asyncpg.Record]]:
        groups: dict[tuple[Any, ...], list[UUID]] = defaultdict(list)
        for key in keys:
            groups[(key.source, key.page, key.where, key.tenant_scoped)].append(key.parent_id)
        results: dict[tuple[Any, ...], list[asyncpg.Record]] = {}
        for (source, page, where, scoped), parents in groups.items():
            rows = await page_by_parent(
                self._context.db, source, self._tenant(scoped), parents, page, where
            )
            for parent in parents:
                results[(source, page, where, scoped, parent)] = rows.get(parent, [])
        return [results[(k.source, k.page, k.where, k.tenant_scoped, k.parent_id)] for k in keys]

    async def _counts(self, keys: list[CountKey]) -> list[int]:
        groups: dict[tuple[Any, ...], list[UUID]] = defaultdict(list)
        for key in keys:
            groups[(key.source, key.where, key.tenant_scoped)].append(key.parent_id)
        results: dict[tuple[Any, ...], int] = {}
        for (source, where, scoped), parents in groups.items():
            counted = tasks.counted(where) if source == tasks.PROJECT_TASKS and scoped else None
            if counted is not None:
                # The maintained counts (migration 27), as the compiler reads them.
                counts = await tasks.count_by_project(
                    self._context.db, self._tenant(scoped), parents, counted.statuses
                )
            else:
                counts = await count_by_parent(
                    self._context.db, source, self._tenant(scoped), parents, where
                )
            for parent in parents:
                results[(source, where, scoped, parent)] = counts.get(parent, 0)
        return [results[(k.source, k.where, k.tenant_scoped, k.parent_id)] for k in keys]

    async def _ancestors(self, ids: list[UUID]) -> list[list[asyncpg.Record]]:
        grouped: dict[UUID, list[asyncpg.Record]] = defaultdict(list)
        for row in await tasks.ancestors(self._context.db, self._context.scope_id, ids):
            grouped[row["_origin"]].append(row)
        return [grouped.get(i, []) for i in ids]

    async def _status_counts(self, project_ids: list[UUID]) -> list[dict[str, int]]:
        grouped: dict[UUID, dict[str, int]] = defaultdict(dict)
        for row in await tasks.counts_by_status(
            self._context.db, self._context.scope_id, project_ids
        ):
            grouped[row["project_id"]][row["status"]] = row["total"]
        return [grouped.get(i, {}) for i in project_ids]

    def prime(self, loader: DataLoader[UUID, asyncpg.Record | None], row: asyncpg.Record) -> None:
        """Put a row just written into its loader, so resolving it costs no statement."""
        loader.prime(row["id"], row, force=True)


async def load_connection(
    context: Context,
    source: Source,
    parent_id: UUID,
    page: Page,
    node: Callable[[asyncpg.Record], T],
    where: Filter = no_filter,
    tenant_scoped: bool = True,
) -> Connection[T]:
    """A parent's page of a connection, batched with its siblings' pages; ``totalCount``
    costs one more (batched) statement, only when a client asks for it."""
    loaders = context.loaders
    rows = await loaders.page.load(PageKey(source, parent_id, page, where, tenant_scoped))

    def count() -> Awaitable[int]:
        return loaders.count.load(CountKey(source, parent_id, where, tenant_scoped))

    return connection(rows, page, node, count)


async def load_one(
    loader: DataLoader[UUID, asyncpg.Record | None],
    key: UUID | None,
    node: Callable[[asyncpg.Record], T],
) -> T | None:
    """One object by id through its loader (batched with its siblings); None if absent."""
    if key is None:
        return None
    row = await loader.load(key)
    return node(row) if row is not None else None
