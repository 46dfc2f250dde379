"""The per-request GraphQL context: identity, the transaction's executor, DataLoaders."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeAlias
from uuid import UUID

import strawberry
from graphql import DocumentNode, OperationDefinitionNode
from starlette.requests import HTTPConnection
from starlette.responses import Response

from api.auth import Auth, Tenant, Viewer
from api.errors import Forbidden, Unauthenticated
from api.settings import Settings
from db.engine import Transaction
from db.executor import Executor

if TYPE_CHECKING:
    from api.compiler import Compiler
    from api.loaders import Loaders
    from api.ratelimit import LoginLimits


@dataclass
class Context:
    #: The HTTP request, or the WebSocket of a subscription's connection.
    request: HTTPConnection
    response: Response | None
    auth: Auth
    settings: Settings
    #: Log-in protection (logIn, changePassword): see api.ratelimit.
    login_limits: LoginLimits
    #: Set by the transaction extension around execution.
    transaction: Transaction | None = None
    executor: Executor | None = None
    #: The tenant statements are scoped to; a new organization becomes it when created.
    organization_id: UUID | None = None
    #: A mutation returned expected errors: the whole operation rolls back.
    failed: bool = False
    #: The resolve info of every mutation that completed (rewritten if the operation fails).
    completed_mutations: list[Any] = field(default_factory=list)
    #: The compiler (None with compiled queries off): mutation payloads are read back by it.
    compiler: Compiler | None = None
    #: The client's document and operation when the one executed is another (a mutation
    #: whose payload objects are read back executes them cut down to ids): the node limit
    #: and the other bounds are checked on what the client asked for.
    requested: tuple[DocumentNode, OperationDefinitionNode] | None = None
    _loaders: Loaders | None = None

    @property
    def db(self) -> Executor:
        if self.executor is None:
            raise RuntimeError("no transaction: resolvers run inside the operation's transaction")
        return self.executor

    @property
    def loaders(self) -> Loaders:
        if self._loaders is None:
            from api.loaders import Loaders

            self._loaders = Loaders(self)
        return self._loaders

    @property
    def viewer(self) -> Viewer:
        if self.auth.viewer is None:
            raise Unauthenticated("log in first: send Authorization: Bearer <token>")
        return self.auth.viewer

    @property
    def tenant(self) -> Tenant:
        self.viewer  # noqa: B018 - raises UNAUTHENTICATED first when anonymous
        if self.auth.tenant is None:
            raise Forbidden("this needs a tenant: send X-Organization: <slug or id>")
        return self.auth.tenant

    def require_role(self, role: str) -> Tenant:
        tenant = self.tenant
        if not tenant.at_least(role):
            raise Forbidden(
                f"needs the {role} role or higher; you are {tenant.role}", required=role
            )
        return tenant

    @property
    def scope_id(self) -> UUID:
        """The tenant id statements are scoped to."""
        if self.organization_id is not None:
            return self.organization_id
        return self.tenant.organization_id


Info: TypeAlias = strawberry.Info[Context, None]
