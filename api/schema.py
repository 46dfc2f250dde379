"""The GraphQL schema. For now: the service's health; the full API is issue #3."""

from __future__ import annotations

import strawberry
from strawberry.types import Info

from db.engine import DB


@strawberry.type(description="What the API knows about its own state.")
class Health:
    database: bool = strawberry.field(description="Whether PostgreSQL answered.")
    postgres_version: str | None = strawberry.field(
        description="The PostgreSQL server's version, when it answered."
    )


@strawberry.type
class Query:
    @strawberry.field(description="Service health: whether PostgreSQL answers, and its version.")
    async def health(self, info: Info) -> Health:
        async with DB.transaction() as tx:
            version = await tx.connection.fetchval("SELECT current_setting('server_version')")
        return Health(database=True, postgres_version=version)


schema = strawberry.Schema(query=Query)
