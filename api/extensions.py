"""Schema extensions: one transaction per operation, error codes and masking, the operation
limits of ``api.cost``, and statement counts."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator
from typing import Any

import asyncpg
from graphql import (
    DocumentNode,
    GraphQLError,
    GraphQLSchema,
    OperationDefinitionNode,
)
from strawberry.extensions import SchemaExtension
from strawberry.schema.schema import StrawberryGraphQLCoreExecutionContext

from api import cost, errors, faults, inputs, metrics, readback
from api.auth import TRANSACTION_KEY, Auth
from api.context import Context
from api.logs import RateLimitedLog, failure_kind
from api.mutations.base import rolled_back
from api.settings import Settings, get_settings
from db.errors import DatabaseError
from db.tenancy import LazyExecutor, OpenTransaction, TenantContext

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
        if self.execution_context.result is not None:
            # Refused before execution (variables that do not coerce, over the node limit):
            # nothing runs, so no connection is taken.
            yield
            return
        opened: OpenTransaction | None = context.request.scope.get(TRANSACTION_KEY)
        if opened is not None and opened.open:
            # Begun by the middleware, whose first statement authenticated the caller.
            context.executor = opened.executor
            read_back = self._plan_read_back(context)
            try:
                yield
                if read_back is not None and not self._failed(context):
                    await self._read_back(context, read_back)
            except BaseException:
                await opened.close()
                raise
            if self._failed(context):
                await opened.rollback()
                self._report_rollback(context)
                if read_back is not None and self.execution_context.result is not None:
                    read_back.clear(self.execution_context.result.data)
            else:
                await opened.commit()
            return
        # No transaction yet (an anonymous caller): one is begun at the operation's first
        # statement, so what never reaches the database takes no pooled connection, and
        # sign-up's and log-in's argon2 run with none held.
        executor = LazyExecutor(operation_context(context.auth, context.settings))
        context.executor = executor
        try:
            yield
        except BaseException:
            await executor.close()
            raise
        failed = self._failed(context)
        await executor.end(commit=not failed)
        if failed:
            self._report_rollback(context)

    def _plan_read_back(self, context: Context) -> readback.ReadBack | None:
        """The compiled read-back of this mutation's payload objects (``api.readback``);
        the document executed becomes the one whose payloads select only ids."""
        execution = self.execution_context
        auth = context.auth
        document = execution.graphql_document
        if context.compiler is None or document is None or auth.viewer is None:
            return None
        if auth.tenant is None:
            return None
        try:
            operation = cost.select_operation(
                document, getattr(execution, "_provided_operation_name", None)
            )
        except GraphQLError:
            return None
        planned = readback.plan(
            context.compiler,
            execution.schema._schema,
            document,
            operation,
            execution.variables or {},
        )
        if planned is not None:
            context.requested = (document, operation)
            execution.graphql_document = planned.document
        return planned

    async def _read_back(self, context: Context, planned: readback.ReadBack) -> None:
        result = self.execution_context.result
        if result is not None and result.data is not None:
            await readback.read_back(context, planned, result.data)

    def _report_rollback(self, context: Context) -> None:
        """The payloads of the mutations that completed say they were rolled back."""
        result = self.execution_context.result
        if context.completed_mutations and result is not None:
            rolled_back(result.data, context.completed_mutations)

    def _failed(self, context: Context) -> bool:
        result = self.execution_context.result
        return context.failed or (result is not None and bool(result.errors))


def coded_errors(
    errors_: list[GraphQLError], request_id: str | None, settings: Settings
) -> list[GraphQLError]:
    """Give every error an ``extensions.code``; mask unexpected ones, keeping the request id
    so the log line can be found. Applied by the view to every result (parse, validation,
    limits and execution errors alike)."""
    return [_coded(error, request_id, settings) for error in errors_]


def _client_mistake(error: GraphQLError) -> bool:
    """An error graphql-core reports about the request itself, before any field runs: a
    syntax or validation error, a limit, a variable or literal that does not coerce (its
    original error is the scalar's refusal: strawberry's DateTime raises a ValueError)."""
    original = error.original_error
    if original is None:
        return True
    return (
        error.path is None
        and bool(error.nodes)
        and isinstance(original, GraphQLError | ValueError | TypeError)
    )


def _coded(error: GraphQLError, request_id: str | None, settings: Settings) -> GraphQLError:
    """The error with its code. Logged here, once, for every error (``api.schema`` keeps
    Strawberry from logging each with a traceback): client errors in one line with the
    request id and code; a database outage in one line per kind and interval
    (``api.logs``); a traceback only for an unexpected error, which the client sees masked."""
    original = error.original_error
    if isinstance(original, errors.ApiError):
        extensions = {**(original.extensions or {}), "requestId": request_id}
        _log_client_error(request_id, extensions.get("code"), original.message)
        return GraphQLError(
            original.message,
            error.nodes,
            error.source,
            error.positions,
            error.path,
            extensions=extensions,
        )
    known = faults.fault(original, settings)
    if known is not None and original is not None:
        faults.log(original, request_id, f"operation failed at {error.path}")
        return GraphQLError(
            known.message,
            error.nodes,
            error.source,
            error.positions,
            error.path,
            extensions={**(known.extensions or {}), "requestId": request_id},
        )
    if _client_mistake(error):
        # The client's document or variables are at fault; graphql-core's message says how.
        code = (error.extensions or {}).get("code", errors.BAD_USER_INPUT)
        _log_client_error(request_id, code, error.message)
        return GraphQLError(
            error.message,
            error.nodes,
            error.source,
            error.positions,
            error.path,
            extensions={**(error.extensions or {}), "code": code},
        )
    if isinstance(original, OUTAGE):
        _outage.error(
            f"database:{failure_kind(original)}",
            "database unavailable [request %s] at %s: %s",
            request_id,
            error.path,
            _one_line(str(original) or type(original).__name__),
        )
    else:
        _log.error("unexpected error [request %s] at %s", request_id, error.path, exc_info=original)
    return GraphQLError(
        "Unexpected error.",
        error.nodes,
        error.source,
        error.positions,
        error.path,
        extensions={"code": errors.INTERNAL_SERVER_ERROR, "requestId": request_id},
    )


#: What PostgreSQL being away (down, restarting, the pool exhausted) raises in a resolver:
#: logged as an outage, rate-limited, without a traceback.
OUTAGE = (
    DatabaseError,
    OSError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
    asyncpg.CannotConnectNowError,
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
)
_outage = RateLimitedLog(_log)


def _one_line(text: str, limit: int = 300) -> str:
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


def _log_client_error(request_id: str | None, code: object, message: str) -> None:
    _log.info("client error [request %s] %s: %s", request_id, code, _one_line(message))


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
    """The bounds of ``api.cost`` on the resolver path that need no variables: the
    document's (operations, expanded fields, authentication mutations alone,
    introspection), before validation, so a costly document is refused before graphql-core
    walks it. The bounds that need the coerced variables are checked by
    ``CheckedExecutionContext`` on the values execution uses."""

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
                inputs.check_variables(context.variables)
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


class CheckedExecutionContext(StrawberryGraphQLCoreExecutionContext):
    """graphql-core's execution context, with the bounds that need the coerced variables
    (``api.cost.check_operation``: string maxima, the node cost) checked on the very values
    execution then uses: the variables are coerced once, by graphql-core (defaults
    applied, ``null`` as the spec says), as the compiler coerces them once per statement.
    Variables that do not coerce are graphql-core's errors; nothing runs either way."""

    @classmethod
    def build(cls, schema: GraphQLSchema, document: DocumentNode, *args: Any, **kwargs: Any) -> Any:
        built = super().build(schema, document, *args, **kwargs)
        if isinstance(built, list):
            return built
        context = built.context_value
        settings = getattr(context, "settings", None) or get_settings()
        # The client's document, not its cut-down form (``api.readback``).
        requested = getattr(context, "requested", None)
        checked, operation = requested if requested is not None else (document, built.operation)
        try:
            cost.check_operation(schema, checked, operation, built.variable_values, settings)
        except (cost.CostError, errors.ApiError) as over:
            return [over]
        return built
