"""A lone write answered without GraphQL execution: the mutation's own resolver, then its
payload object read back by the compiler (``api.readback``), then the response.

What a write request costs in Python was mostly GraphQL machinery around two statements:
Strawberry's execution and its eight extensions' hooks, graphql-core's executor completing
a payload whose object the read-back replaces anyway. For the common shape of a write
(one mutation of :data:`MUTATIONS`, its payload selecting its object and ``errors`` and
``__typename`` at most) this module calls the field's resolver itself, exactly as
graphql-core would (the field's own resolve function, which Strawberry built: argument
conversion, the resolver, its typed errors), in the request's open transaction.

It answers only a write that succeeds. Everything that would be an error goes to the
resolvers' path, which reports it as it always does:

- before anything runs (a document or variables that are not valid, over a limit, an
  argument that does not coerce): nothing was done, the request is simply handed over;
- a resolver that reports typed errors, or raises: its transaction is rolled back (nothing
  of it is written, as on the other path) and the operation runs again on the resolvers'
  path, in a transaction of its own, which answers it (the same typed errors, the same
  codes). The mutations of :data:`MUTATIONS` touch nothing but their transaction, so
  running one again after a rollback is the same as running it once.

The rules stay where they are: validation, role checks and statements in the resolvers and
``db.queries``, the bounds in ``api.cost`` and ``api.inputs`` (checked here on the same
coerced values), the payload object's read in the compiler's registry. A property test
sends the same generated writes, failing ones included, to both paths and compares the
responses key for key, new ids and times masked alike (``tests/api/test_direct.py``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from graphql import (
    DocumentNode,
    FieldNode,
    GraphQLError,
    GraphQLField,
    GraphQLObjectType,
    GraphQLResolveInfo,
    GraphQLSchema,
    OperationDefinitionNode,
    OperationType,
    get_named_type,
    parse,
    validate,
)
from graphql.execution.values import get_argument_values, get_variable_values
from graphql.pyutils import Path, is_awaitable
from strawberry.schema.schema import Schema as StrawberrySchema

from api import cost, errors, inputs, readback
from api.compiler import Compiler
from api.context import Context
from api.extensions import operation_context
from api.memo import Recent
from api.settings import Settings
from db.tenancy import OpenTransaction

_log = logging.getLogger("taskql.direct")

#: The mutations answered here: each writes only in its transaction (no session, no log-in
#: limit, no new tenant, no e-mail) and returns one object its payload reads back.
MUTATIONS = frozenset(
    {
        "createTask",
        "updateTask",
        "moveTask",
        "assignTask",
        "completeTask",
        "reopenTask",
        "addComment",
        "editComment",
        "deleteComment",
        "createProject",
        "updateProject",
    }
)


@dataclass(frozen=True)
class Plan:
    document: DocumentNode
    operation: OperationDefinitionNode
    node: FieldNode
    field: GraphQLField
    payload: GraphQLObjectType
    #: Response key of the mutation field.
    root: str
    #: The payload's selection in order: (response key, field name).
    selection: tuple[tuple[str, str], ...]
    #: The payload's GraphQL field names -> its Python attribute names.
    attributes: dict[str, str]


class DirectWrites:
    """Plans (per document and operation name) and answers of lone writes."""

    def __init__(
        self, schema: StrawberrySchema, compiler: Compiler, settings: Settings, size: int = 1000
    ) -> None:
        self.strawberry = schema
        self.schema: GraphQLSchema = schema._schema
        self.compiler = compiler
        self.settings = settings
        self._plans: Recent[tuple[str, str | None], Plan | None] = Recent(size)

    def plan(self, query: str, operation_name: str | None) -> Plan | None:
        return self._plans.get((query, operation_name), lambda: self._plan(query, operation_name))

    def _plan(self, query: str, operation_name: str | None) -> Plan | None:
        try:
            document = parse(query, max_tokens=self.settings.taskql_max_tokens)
            operation = cost.check_document(document, operation_name, self.settings)
        except GraphQLError:
            return None
        if operation.operation is not OperationType.MUTATION or operation.directives:
            return None
        selections = operation.selection_set.selections
        if len(selections) != 1 or not isinstance(selections[0], FieldNode):
            return None
        node = selections[0]
        if node.name.value not in MUTATIONS or node.directives or node.selection_set is None:
            return None
        if validate(self.schema, document, self.compiler.rules):
            return None
        mutation_type = self.schema.mutation_type
        assert mutation_type is not None
        field = mutation_type.fields[node.name.value]
        payload = get_named_type(field.type)
        if not isinstance(payload, GraphQLObjectType):
            return None
        selection: list[tuple[str, str]] = []
        for item in node.selection_set.selections:
            # Fields only, each key once: anything else is the resolvers' to complete.
            if not isinstance(item, FieldNode) or item.directives:
                return None
            key = item.alias.value if item.alias else item.name.value
            if key in {k for k, _ in selection}:
                return None
            selection.append((key, item.name.value))
        definition = self.strawberry.get_type_by_name(payload.name)
        if definition is None or not hasattr(definition, "fields"):
            return None
        attributes = {
            self.strawberry.config.name_converter.get_graphql_name(f): f.python_name
            for f in definition.fields
        }
        return Plan(
            document,
            operation,
            node,
            field,
            payload,
            node.alias.value if node.alias else node.name.value,
            tuple(selection),
            attributes,
        )

    async def answer(
        self,
        plan: Plan,
        variables: dict[str, Any],
        context: Context,
        opened: OpenTransaction,
    ) -> dict[str, Any] | None:
        """The response's ``data`` for a write that succeeded and was committed, or None:
        nothing was done (or it was rolled back), and the resolvers must answer."""
        try:
            inputs.check_variables(variables)
        except errors.ApiError:
            return None
        coerced = get_variable_values(
            self.schema, plan.operation.variable_definitions or (), variables
        )
        if isinstance(coerced, list):
            return None
        try:
            cost.check_operation(self.schema, plan.document, plan.operation, coerced, self.settings)
        except (cost.CostError, errors.ApiError):
            return None
        planned = readback.plan(
            self.compiler, self.schema, plan.document, plan.operation, variables
        )
        if planned is None or len(planned.targets) != 1 or planned.targets[0].root != plan.root:
            return None
        target = planned.targets[0]
        names = {name for _, name in plan.selection}
        target_field = dict(plan.selection).get(target.key)
        if target_field is None or not names <= {target_field, "errors", "__typename"}:
            return None
        try:
            arguments = get_argument_values(plan.field, plan.node, coerced)
        except GraphQLError:
            return None
        mutation_type = self.schema.mutation_type
        assert mutation_type is not None
        info: GraphQLResolveInfo[Context] = GraphQLResolveInfo(
            plan.node.name.value,
            [plan.node],
            plan.field.type,
            mutation_type,
            Path(None, plan.root, mutation_type.name),
            self.schema,
            {},
            None,
            plan.operation,
            coerced,
            context,
            is_awaitable,
            None,
            None,  # type: ignore[arg-type]  # async helpers: no resolver here uses them
        )
        context.executor = opened.executor
        assert plan.field.resolve is not None
        try:
            result = plan.field.resolve(None, info, **arguments)
            if is_awaitable(result):
                result = await result
        except Exception as exc:
            # The resolvers' path reports it (a fault, an unexpected error) with its code.
            _log.debug("direct write handed to the resolvers: %s", type(exc).__name__)
            await _give_back(opened, context)
            return None
        except BaseException:
            await opened.close()
            raise
        payload_errors = getattr(result, plan.attributes.get("errors", "errors"), None)
        if result is None or context.failed or payload_errors:
            await _give_back(opened, context)
            return None
        attribute = plan.attributes.get(target_field)
        obj = getattr(result, attribute) if attribute else None
        data: dict[str, Any] = {
            plan.root: {target.key: {readback.ID_KEY: obj.id} if obj is not None else None}
        }
        try:
            await readback.read_back(context, planned, data)
        except BaseException:
            await opened.close()
            raise
        await opened.commit()
        read = data[plan.root]
        payload: dict[str, Any] = {}
        for key, name in plan.selection:
            if name == "__typename":
                payload[key] = plan.payload.name
            elif name == "errors":
                payload[key] = []
            else:
                payload[key] = read[key]
        return {plan.root: payload}


async def _give_back(opened: OpenTransaction, context: Context) -> None:
    """Roll back what the write did and begin the request's transaction again as the
    middleware left it (authenticated, the context applied, one statement counted), for the
    resolvers' path; if that fails, it is closed and that path opens its own."""
    try:
        await opened.restart(operation_context(context.auth, context.settings))
    except Exception:
        await opened.close()
