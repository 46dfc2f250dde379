"""The compiler: plans (parsed, validated, checked documents) and statements, both cached."""

from __future__ import annotations

import dataclasses
import json
from collections import OrderedDict
from typing import Any
from uuid import UUID, uuid4

from graphql import (
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    GraphQLObjectType,
    GraphQLSchema,
    InlineFragmentNode,
    OperationType,
    SelectionSetNode,
    get_named_type,
    parse,
    specified_rules,
    validate,
)
from graphql.execution.values import VariableValues, get_variable_values
from strawberry.extensions import MaxAliasesLimiter, QueryDepthLimiter

from api import cost, inputs
from api.auth import ROLE_RANK
from api.compiler.arguments import ARGUMENTS, DIRECTIVES
from api.compiler.fields import (
    CONNECTION_FIELDS,
    CONNECTIONS,
    EDGE_FIELDS,
    FIELDS,
    MAX_KEYS,
    PAGE_INFO_FIELDS,
    UNION_MEMBERS,
    VIEWER_ONLY,
    applies,
)
from api.compiler.plans import (
    Plan,
    Statement,
    Unsupported,
    json_object,
    typename,
)
from api.compiler.render import Render
from api.errors import ApiError
from api.ids import from_global_id, to_global_id
from api.memo import Recent
from api.settings import Settings


class Compiler:
    """Plans (cached per document and operation name) and statements for compiled queries."""

    def __init__(self, schema: GraphQLSchema, settings: Settings, cache_size: int = 1000) -> None:
        self.schema = schema
        self.settings = settings
        self.rules = (
            *specified_rules,
            *QueryDepthLimiter(max_depth=settings.taskql_max_depth).validation_rules,
            *MaxAliasesLimiter(max_alias_count=settings.taskql_max_aliases).validation_rules,
        )
        self.cache_size = cache_size
        #: Documents planned (parsed, validated, checked) so far: cache misses.
        self.plans_made = 0
        self._plans: Recent[tuple[str, str | None], Plan | None] = Recent(cache_size)
        #: By the variables as sent (the hot path: no coercion), and by their coerced values.
        self._statements: OrderedDict[tuple[str, str | None, str, bool], Statement | None] = (
            OrderedDict()
        )
        self._by_coerced: OrderedDict[tuple[str, str | None, str, bool], Statement | None] = (
            OrderedDict()
        )
        #: Whether a read-back compiles, by its query and variables (its ids stand-ins).
        self._read_backs: Recent[tuple[str, str], bool] = Recent(cache_size)
        #: Read-back statements with the places of their ids, by query, other variables and
        #: the ids' types (None: rendered per write).
        self._read_back_statements: Recent[
            tuple[str, str, tuple[tuple[str, str], ...]],
            tuple[Statement, tuple[tuple[int, str], ...]] | None,
        ] = Recent(cache_size)

    def plan(self, query: str, operation_name: str | None) -> Plan | None:
        """The plan for a query, or None when the resolvers must answer it."""
        return self._plans.get((query, operation_name), lambda: self._plan(query, operation_name))

    def _plan(self, query: str, operation_name: str | None) -> Plan | None:
        self.plans_made += 1
        try:
            document = parse(query, max_tokens=self.settings.taskql_max_tokens)
        except GraphQLError:
            return None
        try:
            # The document's bounds before validation walks it (the resolvers report them).
            operation = cost.check_document(document, operation_name, self.settings)
        except GraphQLError:
            return None
        if operation.operation is not OperationType.QUERY or operation.directives:
            return None
        if validate(self.schema, document, self.rules):
            return None
        fragments = {
            d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)
        }
        if not self._supported("Query", operation.selection_set, fragments, set()):
            return None
        roots = {
            s.name.value for s in operation.selection_set.selections if isinstance(s, FieldNode)
        }
        needs_tenant = not roots <= VIEWER_ONLY or any(
            not isinstance(s, FieldNode) for s in operation.selection_set.selections
        )
        return Plan(document, operation, fragments, needs_tenant)

    def _supported(
        self,
        type_name: str,
        selection_set: SelectionSetNode,
        fragments: dict[str, FragmentDefinitionNode],
        seen: set[str],
    ) -> bool:
        """Every field that may be selected (whatever the variables) is one we render."""
        if type_name in UNION_MEMBERS:
            return all(
                self._supported(member, selection_set, fragments, seen)
                for member in UNION_MEMBERS[type_name]
            )
        for selection in selection_set.selections:
            if any(d.name.value not in DIRECTIVES for d in selection.directives or ()):
                return False
            if isinstance(selection, FieldNode):
                name = selection.name.value
                if name == "__typename":
                    continue
                known = self._known(type_name, name)
                if not known:
                    return False
                given = {argument.name.value for argument in selection.arguments or ()}
                if not given <= ARGUMENTS.get((type_name, name), frozenset()):
                    return False
                if selection.selection_set is not None:
                    child = get_named_type(self._field_type(type_name, name))
                    if not self._supported(child.name, selection.selection_set, fragments, seen):
                        return False
            elif isinstance(selection, InlineFragmentNode):
                if applies(selection.type_condition, type_name) and not self._supported(
                    type_name, selection.selection_set, fragments, seen
                ):
                    return False
            elif isinstance(selection, FragmentSpreadNode):
                fragment = fragments[selection.name.value]
                if selection.name.value in seen:
                    continue
                if applies(fragment.type_condition, type_name) and not self._supported(
                    type_name, fragment.selection_set, fragments, seen | {selection.name.value}
                ):
                    return False
        return True

    def _known(self, type_name: str, name: str) -> bool:
        if type_name in CONNECTIONS:
            allowed = EDGE_FIELDS if type_name.endswith("Edge") else CONNECTION_FIELDS
            return name in allowed
        if type_name == "PageInfo":
            return name in PAGE_INFO_FIELDS
        return name in FIELDS.get(type_name, {})

    def _field_type(self, type_name: str, name: str) -> Any:
        found = self.schema.get_type(type_name)
        assert isinstance(found, GraphQLObjectType)
        return found.fields[name].type

    def prepare(
        self,
        query: str,
        operation_name: str | None,
        variables: dict[str, Any],
        tenant_id: UUID | None,
        viewer_id: UUID,
        role: str | None = None,
    ) -> tuple[str, list[Any]] | None:
        """The statement (SQL and parameters) answering this request, or None when the
        resolvers must answer it: not compilable, or an error to report (bad ids, bad page
        sizes, variables that do not match, over the node limit, no tenant, a role below
        what a field needs). ``role``: the caller's role in the tenant."""
        if self.plan(query, operation_name) is None:
            # Not compilable whatever the variables (a mutation, an unsupported field): its
            # requests never enter the statement cache, where a write's new variables each
            # time would push out the statements of the queries.
            return None
        try:
            key = (query, operation_name, json.dumps(variables, sort_keys=True), tenant_id is None)
        except (TypeError, ValueError):
            return None
        if key in self._statements:
            self._statements.move_to_end(key)
            statement = self._statements[key]
        else:
            statement = self._coerced_statement(query, operation_name, variables, tenant_id)
            _remember(self._statements, key, statement, self.cache_size)
        if statement is None or statement.cost > self.settings.taskql_max_nodes:
            return None
        if statement.role is not None and (
            role is None or ROLE_RANK[role] < ROLE_RANK[statement.role]
        ):
            return None
        return statement.sql, statement.bind(tenant_id, viewer_id, role)

    def read_back(
        self,
        query: str,
        variables: dict[str, Any],
        tenant_id: UUID,
        viewer_id: UUID,
        role: str | None,
        ids: dict[str, str] | None = None,
    ) -> tuple[str, list[Any]] | None:
        """A mutation payload's read-back (``api.readback``): like ``prepare``, with the
        objects' global ids in ``ids`` (variables of the query too). The statement is
        rendered once per query, other variables and id types, with a random stand-in for
        each id, and cached when each stand-in is only ever a parameter of its own; each
        write then binds its ids in their places. Otherwise (a stand-in rendered into the
        text, or passed on in another form) it is rendered for every write."""
        ids = ids or {}
        kinds: list[tuple[str, str]] = []
        real: dict[str, UUID] = {}
        for name, value in sorted(ids.items()):
            try:
                kind, raw = from_global_id(value)
            except ApiError:
                return self._read_back_rendered(
                    query, {**variables, **ids}, tenant_id, viewer_id, role
                )
            kinds.append((name, kind))
            real[name] = raw
        key = (query, json.dumps(variables, sort_keys=True, default=repr), tuple(kinds))
        cached = self._read_back_statements.get(
            key, lambda: self._read_back_statement(query, variables, kinds)
        )
        if cached is None:
            return self._read_back_rendered(query, {**variables, **ids}, tenant_id, viewer_id, role)
        statement, places = cached
        params = list(statement.params)
        for index, name in places:
            params[index] = real[name]
        bound = dataclasses.replace(statement, params=tuple(params))
        return bound.sql, bound.bind(tenant_id, viewer_id, role)

    def _read_back_statement(
        self, query: str, variables: dict[str, Any], kinds: list[tuple[str, str]]
    ) -> tuple[Statement, tuple[tuple[int, str], ...]] | None:
        """The read-back rendered with a random stand-in per id, and the parameters that
        hold each; None when a stand-in shows anywhere but as a parameter of its own."""
        stand_ins = {name: uuid4() for name, _ in kinds}
        given = {name: to_global_id(kind, stand_ins[name]) for name, kind in kinds}
        statement = self._read_back_statement_for(query, {**variables, **given})
        if statement is None:
            return None
        places: list[tuple[int, str]] = []
        others: list[Any] = []
        for index, param in enumerate(statement.params):
            owner = next((n for n, u in stand_ins.items() if param == u), None)
            if owner is not None:
                places.append((index, owner))
            else:
                others.append(param)
        shown = repr(others) + statement.sql
        for name, stand_in in stand_ins.items():
            if name not in {n for _, n in places}:
                return None
            if str(stand_in) in shown or stand_in.hex in shown or given[name] in shown:
                return None
        return statement, tuple(places)

    def _read_back_statement_for(self, query: str, variables: dict[str, Any]) -> Statement | None:
        plan = self.plan(query, None)
        if plan is None:
            return None
        coerced = get_variable_values(
            self.schema, plan.operation.variable_definitions or (), variables
        )
        if isinstance(coerced, list):
            return None
        try:
            statement = self.statement(plan, coerced, True)
        except (Unsupported, ApiError):
            return None
        if statement.cost > self.settings.taskql_max_nodes or statement.role is not None:
            return None
        return statement

    def _read_back_rendered(
        self,
        query: str,
        variables: dict[str, Any],
        tenant_id: UUID,
        viewer_id: UUID,
        role: str | None,
    ) -> tuple[str, list[Any]] | None:
        statement = self._read_back_statement_for(query, variables)
        if statement is None:
            return None
        return statement.sql, statement.bind(tenant_id, viewer_id, role)

    def read_back_compiles(self, query: str, variables: dict[str, Any]) -> bool:
        """Whether ``read_back`` answers this query with these variables (the ids being
        stand-ins): remembered, as the answer is the same for any tenant, viewer and role
        (a read-back that needs a role is never compiled)."""
        key = (query, json.dumps(variables, sort_keys=True, default=repr))
        return self._read_backs.get(
            key,
            lambda: self._read_back_rendered(query, variables, _NOBODY, _NOBODY, None) is not None,
        )

    def _coerced_statement(
        self,
        query: str,
        operation_name: str | None,
        raw_variables: dict[str, Any],
        tenant_id: UUID | None,
    ) -> Statement | None:
        """The statement for these variables, coerced once (defaults applied, ``null`` as
        the spec says, ``100.0`` as ``100``): the node limit and the rendering read the
        same values, and variables that coerce alike share one cached statement."""
        plan = self.plan(query, operation_name)
        if plan is None:
            return None
        try:
            inputs.check_variables(raw_variables)  # an ApiError: the resolvers report it
        except ApiError:
            return None
        coerced = get_variable_values(
            self.schema, plan.operation.variable_definitions or (), raw_variables
        )
        if isinstance(coerced, list):
            return None  # variables that do not match their definitions: the resolvers say so
        key = (
            query,
            operation_name,
            json.dumps(coerced.coerced, sort_keys=True, default=repr),
            tenant_id is None,
        )
        if key in self._by_coerced:
            self._by_coerced.move_to_end(key)
            return self._by_coerced[key]
        try:
            statement: Statement | None = self.statement(plan, coerced, tenant_id is not None)
        except (Unsupported, ApiError):
            statement = None
        _remember(self._by_coerced, key, statement, self.cache_size)
        return statement

    def statement(self, plan: Plan, coerced: VariableValues, has_tenant: bool) -> Statement:
        """Render ``plan`` with these coerced variables. Raises Unsupported (or an ApiError)
        whenever the resolvers must answer instead."""
        if plan.needs_tenant and not has_tenant:
            raise Unsupported("no tenant")
        variables = coerced.coerced
        # The limits first: nothing is rendered for an operation over one.
        try:
            node_count = cost.check_operation(
                self.schema, plan.document, plan.operation, coerced, self.settings
            )
        except (cost.CostError, ApiError):
            raise Unsupported("over a limit or a bad value: the resolvers report it") from None
        render = Render(self.schema, plan, variables, has_tenant)
        fields = render.collect_sets("Query", [plan.operation.selection_set])
        if not fields or len(fields) > MAX_KEYS:
            raise Unsupported("empty or too wide")
        parts = []
        for key, nodes in fields.items():
            name = nodes[0].name.value
            if name == "__typename":
                value = typename("Query")
            else:
                value = FIELDS["Query"][name](render, "", nodes)
            parts.append((key, value))
        # The response's data as JSON text, byte for byte what the resolvers' encoder writes.
        sql = f"SELECT {json_object(parts)}"
        return Statement(sql, tuple(render.params.values), node_count, render.role)


#: The tenant and viewer bound to a read-back that is only checked, never run.
_NOBODY = UUID(int=0)


def _remember(
    cache: OrderedDict[tuple[str, str | None, str, bool], Statement | None],
    key: tuple[str, str | None, str, bool],
    statement: Statement | None,
    size: int,
) -> None:
    cache[key] = statement
    if len(cache) > size:
        cache.popitem(last=False)
