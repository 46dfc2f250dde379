"""Rendering one request's statement: field collection (fragments, @skip/@include) with the
request's variables, objects and connections as JSON, every value a bound parameter."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from graphql import (
    FieldNode,
    FragmentSpreadNode,
    GraphQLBoolean,
    GraphQLObjectType,
    GraphQLSchema,
    InlineFragmentNode,
    SelectionSetNode,
    VariableNode,
)
from graphql.pyutils import Undefined
from graphql.utilities import value_from_ast

from api.auth import ROLE_RANK
from api.compiler.fields import FIELDS, MAX_KEYS, applies
from api.compiler.plans import (
    NETWORK,
    TENANT,
    VIEWER,
    Plan,
    Unsupported,
    json_array,
    json_object,
    key_of,
    or_null,
    quoted,
    typename,
)
from db.queries.connections import Filter, no_filter
from db.sql import Page, Params


class Render:
    """Renders one request's statement: collects fields (fragments, @skip/@include) with
    the request's variables and binds every value as a parameter."""

    def __init__(
        self,
        schema: GraphQLSchema,
        plan: Plan,
        variables: dict[str, Any],
        has_tenant: bool,
    ) -> None:
        self.schema = schema
        self.plan = plan
        self.variables = variables
        self.params = Params()
        self._viewer: str | None = None
        self._has_tenant = has_tenant
        self._tenant: str | None = None
        self._network: str | None = None
        self._aliases = 0
        self.role: str | None = None

    @property
    def viewer(self) -> str:
        # Bound on first use: an unused parameter has no type PostgreSQL could infer.
        if self._viewer is None:
            self._viewer = self.params(VIEWER, "::uuid")
        return self._viewer

    @property
    def network(self) -> str:
        """True when the caller may read audit entries' network details (bound per request)."""
        if self._network is None:
            self._network = self.params(NETWORK, "::boolean")
        return self._network

    @property
    def tenant(self) -> str:
        if self._tenant is None:
            self.require_tenant()
            self._tenant = self.params(TENANT, "::uuid")
        return self._tenant

    def require_tenant(self) -> None:
        if not self._has_tenant:
            raise Unsupported("no tenant: the resolvers answer FORBIDDEN")

    def require_role(self, role: str) -> None:
        """The statement is only for callers with ``role`` or higher in the tenant."""
        self.require_tenant()
        if self.role is None or ROLE_RANK[role] > ROLE_RANK[self.role]:
            self.role = role

    def alias(self) -> str:
        self._aliases += 1
        return f"r{self._aliases}"

    # -- selections --

    def collect(self, type_name: str, nodes: Sequence[FieldNode]) -> dict[str, list[FieldNode]]:
        """The merged sub-fields of ``nodes`` (one response key each), in selection order."""
        return self.collect_sets(type_name, [n.selection_set for n in nodes if n.selection_set])

    def collect_sets(
        self, type_name: str, selection_sets: Sequence[SelectionSetNode]
    ) -> dict[str, list[FieldNode]]:
        fields: dict[str, list[FieldNode]] = {}
        for selection_set in selection_sets:
            self._visit(type_name, selection_set, fields)
        return fields

    def _visit(
        self, type_name: str, selection_set: SelectionSetNode, fields: dict[str, list[FieldNode]]
    ) -> None:
        for selection in selection_set.selections:
            if not self._included(selection):
                continue
            if isinstance(selection, FieldNode):
                fields.setdefault(key_of(selection), []).append(selection)
            elif isinstance(selection, InlineFragmentNode):
                if applies(selection.type_condition, type_name):
                    self._visit(type_name, selection.selection_set, fields)
            elif isinstance(selection, FragmentSpreadNode):
                fragment = self.plan.fragments[selection.name.value]
                if applies(fragment.type_condition, type_name):
                    self._visit(type_name, fragment.selection_set, fields)

    def _included(self, selection: Any) -> bool:
        for directive in selection.directives or ():
            name = directive.name.value
            if name not in ("skip", "include"):
                continue
            value = value_from_ast(directive.arguments[0].value, GraphQLBoolean, self.variables)
            if (name == "skip") == bool(value):
                return False
        return True

    def args(self, type_name: str, node: FieldNode) -> dict[str, Any]:
        """The field's arguments as given (literals and variables), absent ones left out."""
        definition = self._type(type_name).fields[node.name.value]
        values: dict[str, Any] = {}
        for argument in node.arguments or ():
            arg_def = definition.args[argument.name.value]
            value = value_from_ast(argument.value, arg_def.type, self.variables)
            if value is Undefined:
                if isinstance(argument.value, VariableNode):
                    continue  # a variable not provided: as if the argument were absent
                raise Unsupported(argument.name.value)
            values[argument.name.value] = value
        return values

    def _type(self, name: str) -> GraphQLObjectType:
        found = self.schema.get_type(name)
        assert isinstance(found, GraphQLObjectType)
        return found

    # -- values --

    def object(self, type_name: str, a: str, nodes: Sequence[FieldNode]) -> str:
        fields = self.collect(type_name, nodes)
        if len(fields) > MAX_KEYS:
            raise Unsupported("too many fields in one selection set")
        handlers = FIELDS[type_name]
        parts = []
        for key, field_nodes in fields.items():
            name = field_nodes[0].name.value
            if name == "__typename":
                value = typename(type_name)
            elif name in handlers:
                value = handlers[name](self, a, field_nodes)
            else:
                raise Unsupported(f"{type_name}.{name}")
            parts.append((key, value))
        return json_object(parts)

    def connection(
        self,
        nodes: Sequence[FieldNode],
        node_type: str,
        table: str,
        conditions: list[str],
        page: Page,
        where: Filter = no_filter,
        count: str | Callable[[], str] | None = None,
    ) -> str:
        """A Relay connection: one keyset page, aggregated into edges/nodes/pageInfo, and the
        count if asked (``count``: an expression for it, instead of counting ``table``'s rows;
        a function is called only if totalCount is asked, so its parameters bind only then).

        With ``pageInfo`` selected, ``size + 1`` rows are read (the extra one says whether
        there is more) and numbered; without it, ``size`` rows and no window function (11%
        of the main query's statement time), the aggregates ordered by the sort key itself.
        """
        p = self.params
        order = page.fetch_order
        all_conditions = [*conditions, *where(p)]
        page_conditions = list(all_conditions)
        if page.cursor is not None:
            page_conditions.append(order.after(p, page.cursor))
        c = self.alias()
        size = p(page.size, "::bigint")
        fields = self.collect(f"{node_type}Connection", nodes)
        numbered = any(f[0].name.value == "pageInfo" for f in fields.values())
        if numbered:
            visible = f"FILTER (WHERE {c}._n <= {size})"
            display = f"{c}._n DESC" if page.backwards else f"{c}._n"
        else:
            # The page in the order asked for (for last/before: the fetch order reversed).
            direction = "DESC" if page.order.descending else "ASC"
            visible = ""
            display = f"{c}._sort {direction}, {c}.id {direction}"
        reverse = f"{c}._n" if page.backwards else f"{c}._n DESC"
        more = f"(CASE WHEN count(*) > {size} THEN 'true' ELSE 'false' END)"
        continued = "'true'" if page.cursor is not None else "'false'"
        cursor = f"gql_cursor({c}._key, {c}.id)"
        parts: list[tuple[str, str]] = []
        for key, field_nodes in fields.items():
            name = field_nodes[0].name.value
            if name == "__typename":
                value = typename(f"{node_type}Connection")
            elif name == "totalCount":
                given = count() if callable(count) else count
                total = given or (
                    f"(SELECT count(*) FROM {table} AS t WHERE {' AND '.join(all_conditions)})"
                )
                value = or_null(f"({total})::text")
            elif name == "nodes":
                obj = self.object(node_type, c, field_nodes)
                value = json_array(obj, display, visible)
            elif name == "edges":
                edge: list[tuple[str, str]] = []
                for edge_key, edge_nodes in self.collect(f"{node_type}Edge", field_nodes).items():
                    edge_name = edge_nodes[0].name.value
                    if edge_name == "__typename":
                        edge.append((edge_key, typename(f"{node_type}Edge")))
                    elif edge_name == "cursor":
                        edge.append((edge_key, quoted(cursor)))
                    elif edge_name == "node":
                        edge.append((edge_key, self.object(node_type, c, edge_nodes)))
                    else:
                        raise Unsupported(edge_name)
                value = json_array(json_object(edge), display, visible)
            elif name == "pageInfo":
                info: list[tuple[str, str]] = []
                for info_key, info_nodes in self.collect("PageInfo", field_nodes).items():
                    info_name = info_nodes[0].name.value
                    if info_name == "__typename":
                        expr = typename("PageInfo")
                    elif info_name == "hasNextPage":
                        expr = continued if page.backwards else more
                    elif info_name == "hasPreviousPage":
                        expr = more if page.backwards else continued
                    elif info_name == "startCursor":
                        expr = quoted(f"(array_agg({cursor} ORDER BY {display}) {visible})[1]")
                    elif info_name == "endCursor":
                        expr = quoted(f"(array_agg({cursor} ORDER BY {reverse}) {visible})[1]")
                    else:
                        raise Unsupported(info_name)
                    info.append((info_key, expr))
                value = json_object(info)
            else:
                raise Unsupported(name)
            parts.append((key, value))
        ordering = order.order_by()
        if numbered:
            extra, limit = f"row_number() OVER (ORDER BY {ordering}) AS _n", f"{size} + 1"
        else:
            extra, limit = f"({order.key}) AS _sort", size
        return (
            f"(SELECT {json_object(parts)} FROM ("
            f"SELECT t.*, ({order.key})::text AS _key, {extra} "
            f"FROM {table} AS t WHERE {' AND '.join(page_conditions)} "
            # HAVING: one group, so one row even when no aggregate is selected.
            f"ORDER BY {ordering} LIMIT {limit}) AS {c} HAVING true)"
        )
