"""Schema extensions: one transaction per operation, error codes and masking, the operation
limits of ``api.cost``, and statement counts."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator
from typing import Any

from graphql import DocumentNode, ExecutionResult, GraphQLError, OperationDefinitionNode
from graphql.execution.values import get_variable_values
from strawberry.extensions import SchemaExtension

from api import cost, errors, metrics
from api.auth import TRANSACTION_KEY, Auth
from api.context import Context
from api.mutations.base import rolled_back
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
                self._report_rollback(context)
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
                self._report_rollback(context)

    def _report_rollback(self, context: Context) -> None:
        """The payloads of the mutations that completed say they were rolled back."""
        result = self.execution_context.result
        if context.completed_mutations and result is not None:
            rolled_back(result.data, context.completed_mutations)

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


class Observe(SchemaExtension):
    """Tell the metrics middleware (``api.metrics``) which operation ran on the resolvers and
    how many statements it sent. The name is the selected operation's own, from the parsed
    document: a name the client claims but the document lacks is never a label."""

    def on_operation(self) -> Iterator[None]:
        yield
        context_: Context | None = self.execution_context.context
        if context_ is None:
            return
        seen = metrics.observation(context_.request.scope)
        if seen is None:
            return
        seen.path = "resolvers"
        document = self.execution_context.graphql_document
        if document is not None:
            try:
                operation = cost.select_operation(
                    document, getattr(self.execution_context, "_provided_operation_name", None)
                )
            except GraphQLError:
                operation = None
            if operation is not None:
                seen.operation = metrics.OPERATION_NAMES.label(
                    operation.name.value if operation.name else None
                )
                seen.type = operation.operation.value
        if context_.executor is not None:
            seen.statements = context_.executor.statements


class OperationLimits(SchemaExtension):
    """The bounds of ``api.cost`` on the resolver path: the document's (operations, expanded
    fields, authentication mutations alone, introspection) before validation, so a costly
    document is refused before graphql-core walks it; the node cost at execution, from the
    coerced variables (defaults applied), before the transaction opens."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def on_validate(self) -> Iterator[None]:
        context = self.execution_context
        document = context.graphql_document
        if document is not None and context.pre_execution_errors is None:
            try:
                operation = cost.check_document(
                    document, getattr(context, "_provided_operation_name", None), self.settings
                )
                self._check_introspection(document, operation)
            except GraphQLError as error:
                context.pre_execution_errors = [error]
        yield

    def _check_introspection(
        self, document: DocumentNode, operation: OperationDefinitionNode
    ) -> None:
        if self.settings.taskql_public_introspection:
            return
        context: Context | None = self.execution_context.context
        if context is not None and context.auth.viewer is not None:
            return
        if {"__schema", "__type"}.intersection(cost.root_fields(document, operation)):
            raise errors.Unauthenticated("introspection needs an authenticated caller here")

    def on_execute(self) -> Iterator[None]:
        context = self.execution_context
        document = context.graphql_document
        if document is not None and context.result is None:
            try:
                operation = cost.select_operation(
                    document, getattr(context, "_provided_operation_name", None)
                )
            except GraphQLError:
                operation = None
            coerced = (
                get_variable_values(
                    context.schema._schema,
                    operation.variable_definitions or (),
                    context.variables or {},
                )
                if operation is not None
                else []
            )
            # Variables that do not coerce: execution reports them, and runs nothing.
            if operation is not None and not isinstance(coerced, list):
                over = cost.over_node_limit(
                    cost.node_cost(
                        context.schema._schema, document, operation, coerced, self.settings
                    ),
                    self.settings,
                )
                if over is not None:
                    context.result = ExecutionResult(data=None, errors=[over])
        yield
