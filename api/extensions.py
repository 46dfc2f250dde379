"""Schema extensions: one transaction per operation, error codes and masking, the node
limit, and statement counts."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator
from typing import Any

from graphql import (
    DocumentNode,
    ExecutionResult,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    InlineFragmentNode,
    IntValueNode,
    OperationDefinitionNode,
    SelectionSetNode,
    VariableNode,
)
from strawberry.extensions import SchemaExtension

from api import errors
from api.auth import TRANSACTION_KEY, Auth
from api.context import Context
from api.settings import Settings
from db.tenancy import OpenTransaction, TenantContext, request_transaction

_log = logging.getLogger("taskql.graphql")


def operation_context(auth: Auth, settings: Settings) -> TenantContext:
    """Who acts for whom in an operation's transaction (resolvers and compiled queries)."""
    return TenantContext(
        organization_id=auth.tenant.organization_id if auth.tenant else None,
        user_id=auth.viewer.user_id if auth.viewer else None,
        role=auth.tenant.role if auth.tenant else None,
        request_id=auth.request_id,
        client_ip=auth.client_ip,
        user_agent=auth.user_agent,
        statement_timeout_ms=settings.taskql_request_statement_timeout_ms,
    )


class OperationTransaction(SchemaExtension):
    """Run the whole operation in ONE transaction on ONE pooled connection, with the tenant
    settings applied as its first statement. Errors, or a mutation's typed errors, roll it
    back: nothing of a failed operation is written."""

    async def on_execute(self) -> AsyncIterator[None]:
        context: Context = self.execution_context.context
        opened: OpenTransaction | None = context.request.scope.get(TRANSACTION_KEY)
        if opened is not None and opened.open:
            # Begun by the middleware, whose first statement authenticated the caller.
            context.executor = opened.executor
            try:
                yield
            except BaseException:
                await opened.close()
                raise
            if self._failed(context):
                await opened.rollback()
            else:
                await opened.commit()
            return
        tenant_context = operation_context(context.auth, context.settings)
        async with request_transaction(tenant_context) as (transaction, executor):
            context.transaction = transaction
            context.executor = executor
            yield
            if self._failed(context):
                await transaction.rollback()  # type: ignore[no-untyped-call]

    def _failed(self, context: Context) -> bool:
        result = self.execution_context.result
        return context.failed or (result is not None and bool(result.errors))


def coded_errors(errors_: list[GraphQLError], request_id: str | None) -> list[GraphQLError]:
    """Give every error an ``extensions.code``; mask unexpected ones, keeping the request id
    so the log line can be found. Applied by the view to every result (parse, validation,
    limits and execution errors alike)."""
    return [_coded(error, request_id) for error in errors_]


def _coded(error: GraphQLError, request_id: str | None) -> GraphQLError:
    original = error.original_error
    if isinstance(original, errors.ApiError):
        return GraphQLError(
            original.message,
            error.nodes,
            error.source,
            error.positions,
            error.path,
            extensions={**(original.extensions or {}), "requestId": request_id},
        )
    if original is None:
        # Syntax and validation errors, limits: the client's query is at fault.
        code = (error.extensions or {}).get("code", errors.BAD_USER_INPUT)
        return GraphQLError(
            error.message,
            error.nodes,
            error.source,
            error.positions,
            error.path,
            extensions={**(error.extensions or {}), "code": code},
        )
    _log.error("unexpected error [request %s] at %s", request_id, error.path, exc_info=original)
    return GraphQLError(
        "Unexpected error.",
        error.nodes,
        error.source,
        error.positions,
        error.path,
        extensions={"code": errors.INTERNAL_SERVER_ERROR, "requestId": request_id},
    )


class SqlStatements(SchemaExtension):
    """Report the operation's statement count in ``extensions.sqlStatements`` (tests, benchmarks)."""

    def get_results(self) -> dict[str, Any]:
        context: Context | None = self.execution_context.context
        if context is None or context.executor is None or not context.settings.taskql_sql_stats:
            return {}
        return {"sqlStatements": context.executor.statements}


class NodeLimit(SchemaExtension):
    """GitHub-style node limit: every connection field costs ``first`` (or ``last``) times
    the product of its ancestors'. Checked before execution, with the request's variables
    (so validation results can be cached per document)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit

    def on_execute(self) -> Iterator[None]:
        document = self.execution_context.graphql_document
        if document is not None:
            cost = node_cost(
                document, self.execution_context.operation_name, self.execution_context.variables
            )
            if cost > self.limit:
                self.execution_context.result = ExecutionResult(
                    data=None,
                    errors=[
                        GraphQLError(
                            f"this operation could return {cost} nodes; the limit is {self.limit}: "
                            "ask for smaller pages (`first`/`last`) or fewer nested connections",
                            extensions={
                                "code": errors.BAD_USER_INPUT,
                                "limit": self.limit,
                                "cost": cost,
                            },
                        )
                    ],
                )
        yield


def node_cost(
    document: DocumentNode, operation_name: str | None, variables: dict[str, Any] | None
) -> int:
    fragments = {
        d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)
    }
    operations = [d for d in document.definitions if isinstance(d, OperationDefinitionNode)]
    if operation_name is not None:
        operations = [
            o for o in operations if o.name is not None and o.name.value == operation_name
        ]
    if not operations:
        return 0

    def page_size(field: FieldNode) -> int | None:
        for argument in field.arguments or ():
            if argument.name.value in ("first", "last"):
                value = argument.value
                if isinstance(value, IntValueNode):
                    return int(value.value)
                if isinstance(value, VariableNode) and variables:
                    given = variables.get(value.name.value)
                    return given if isinstance(given, int) else None
        return None

    def cost(selection_set: SelectionSetNode | None, multiplier: int, seen: frozenset[str]) -> int:
        if selection_set is None:
            return 0
        total = 0
        for selection in selection_set.selections:
            if isinstance(selection, FieldNode):
                size = page_size(selection)
                inner = multiplier
                if size is not None:
                    inner = multiplier * max(size, 1)
                    total += inner
                total += cost(selection.selection_set, inner, seen)
            elif isinstance(selection, InlineFragmentNode):
                total += cost(selection.selection_set, multiplier, seen)
            elif isinstance(selection, FragmentSpreadNode):
                name = selection.name.value
                if name in fragments and name not in seen:
                    total += cost(fragments[name].selection_set, multiplier, seen | {name})
        return total

    return cost(operations[0].selection_set, 1, frozenset())
