"""What an operation may cost, checked before it is validated or run, on both read paths.

Three bounds, each computed once per document (fragments memoized, so a document whose
fragments spread each other twice costs linear work to measure, not exponential):

- **fields**: selections after fragment expansion. Validation and execution both walk the
  expanded tree; a 1 KB document can expand to millions of fields.
- **nodes**: GitHub-style node limit from the *coerced* variable values and argument
  defaults: every connection costs its page size times its parents', and every list of
  objects outside a connection (``Task.ancestors``, ...) its declared bound (``LIST_BOUNDS``).
- **operations**: a document with several operations must name the one to run (the spec's
  ``GetOperation``), and an authentication mutation (``signUp``, ``logIn``) must be its
  operation's only root field, so no other mutation runs as the account it creates.

The resolver path checks them in schema extensions (``api.extensions``), the compiled path
in ``api.compiler``; both call these functions.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from graphql import (
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    GraphQLField,
    GraphQLInputObjectType,
    GraphQLInterfaceType,
    GraphQLList,
    GraphQLNonNull,
    GraphQLObjectType,
    GraphQLSchema,
    InlineFragmentNode,
    OperationDefinitionNode,
    OperationType,
    SelectionSetNode,
    Visitor,
    get_named_type,
    visit,
)
from graphql.execution.values import VariableValues, get_argument_values

from api import errors, inputs, validation
from api.memo import ByDocument
from api.settings import Settings
from api.types.node import TaskStatus

#: Root mutations that change who is acting (``app.user_id``): alone in their operation.
AUTHENTICATION_MUTATIONS = frozenset({"signUp", "logIn"})

#: Lists of objects outside a connection's ``edges``/``nodes``: how many elements each can
#: hold at most (None: leaf values carried by the parent's row, which multiply nothing).
#: A test checks every such list of the schema is here, so a new one cannot go uncounted.
LIST_BOUNDS: dict[tuple[str, str], Callable[[Settings], int | None]] = {
    ("Task", "ancestors"): lambda s: s.taskql_max_task_depth,
    ("Project", "taskCountsByStatus"): lambda s: len(TaskStatus),
    ("CreateTasksPayload", "tasks"): lambda s: validation.MAX_BULK_TASKS,
    ("Comment", "history"): lambda s: None,
}


#: The longest string any argument or input field may carry (a task's description, 20,000
#: characters, is the longest the API stores), and the shorter ones, by ``Type.field`` for
#: input fields and ``Type.field(argument)`` for arguments. ID arguments: ``MAX_ID``. Checked
#: on the coerced values of both paths before anything runs: a 400 KB `filter.search` held
#: a connection for the whole statement timeout.
MAX_STRING = 20_000
MAX_ID = 200
STRING_LIMITS: dict[str, int] = {
    "Query.search(text)": 200,
    "TaskFilter.search": 200,
    "ProjectFilter.search": 200,
    # Passwords go to argon2 and e-mails to an index lookup before anything else checks them.
    "LogInInput.email": 320,
    "LogInInput.password": 1_000,
    "SignUpInput.email": 320,
    "SignUpInput.password": 1_000,
    "ChangePasswordInput.currentPassword": 1_000,
    "ChangePasswordInput.newPassword": 1_000,
}
#: Pagination cursors: base64 of a sort key and an id.
MAX_CURSOR = 1_000
CURSOR_ARGUMENTS = frozenset({"after", "before"})


class CostError(GraphQLError):
    """An operation over one of the bounds (BAD_USER_INPUT, with the figures)."""

    def __init__(self, message: str, **extensions: Any) -> None:
        super().__init__(message, extensions={"code": errors.BAD_USER_INPUT, **extensions})


def _fragments(document: DocumentNode) -> dict[str, FragmentDefinitionNode]:
    return {d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)}


def select_operation(document: DocumentNode, operation_name: str | None) -> OperationDefinitionNode:
    """The operation to run, as the spec's GetOperation: by name, or the only one."""
    operations = [d for d in document.definitions if isinstance(d, OperationDefinitionNode)]
    if operation_name is None:
        if len(operations) != 1:
            raise CostError(
                "this document has several operations: name the one to run in `operationName`"
                if operations
                else "this document has no operation"
            )
        return operations[0]
    for operation in operations:
        if operation.name is not None and operation.name.value == operation_name:
            return operation
    raise CostError(f"no operation named {operation_name!r} in this document")


def expanded_fields(document: DocumentNode, operation: OperationDefinitionNode) -> int:
    """How many field selections the operation has after every fragment is expanded.

    Unknown fragments count nothing (validation reports them); a fragment cycle is cut
    (validation reports it too)."""
    fragments = _fragments(document)
    memo: dict[str, int] = {}

    def count(selection_set: SelectionSetNode | None, active: frozenset[str]) -> int:
        if selection_set is None:
            return 0
        total = 0
        for selection in selection_set.selections:
            if isinstance(selection, FieldNode):
                total += 1 + count(selection.selection_set, active)
            elif isinstance(selection, InlineFragmentNode):
                total += count(selection.selection_set, active)
            elif isinstance(selection, FragmentSpreadNode):
                name = selection.name.value
                if name in active or name not in fragments:
                    continue
                if name not in memo:
                    memo[name] = count(fragments[name].selection_set, active | {name})
                total += memo[name]
        return total

    return count(operation.selection_set, frozenset())


def unknown_fragment(document: DocumentNode) -> str | None:
    """The name of the first fragment spread whose fragment the document does not define."""
    fragments = _fragments(document)
    found: list[str] = []

    class Spreads(Visitor):
        def enter_fragment_spread(self, node: FragmentSpreadNode, *_: Any) -> Any:
            if node.name.value not in fragments:
                found.append(node.name.value)
                return Visitor.BREAK
            return None

    visit(document, Spreads())
    return found[0] if found else None


def root_fields(document: DocumentNode, operation: OperationDefinitionNode) -> list[str]:
    """The operation's root field names, through fragments (each spread once)."""
    fragments = _fragments(document)
    names: list[str] = []

    def walk(selection_set: SelectionSetNode, active: frozenset[str]) -> None:
        for selection in selection_set.selections:
            if isinstance(selection, FieldNode):
                names.append(selection.name.value)
            elif isinstance(selection, InlineFragmentNode):
                walk(selection.selection_set, active)
            elif isinstance(selection, FragmentSpreadNode):
                name = selection.name.value
                if name not in active and name in fragments:
                    walk(fragments[name].selection_set, active | {name})

    walk(operation.selection_set, frozenset())
    return names


def check_document(
    document: DocumentNode, operation_name: str | None, settings: Settings
) -> OperationDefinitionNode:
    """The checks that need no schema or variables, before validation. Raises CostError
    (or BadUserInput for a string literal PostgreSQL cannot store, ``api.inputs``). A
    document that passed is not walked again (``api.memo``)."""
    return _CHECKED.get(
        (document,),
        (operation_name, settings.taskql_max_fields),
        lambda: _check_document(document, operation_name, settings),
    )


#: The operation each checked document runs, per operation name and field limit.
_CHECKED: ByDocument[OperationDefinitionNode] = ByDocument()


def _check_document(
    document: DocumentNode, operation_name: str | None, settings: Settings
) -> OperationDefinitionNode:
    operation = select_operation(document, operation_name)
    unknown = unknown_fragment(document)
    if unknown is not None:
        # Validation reports it too, but strawberry's depth limiter fails on it first.
        raise CostError(f"Unknown fragment '{unknown}'.")
    inputs.check_document(document)
    fields = expanded_fields(document, operation)
    if fields > settings.taskql_max_fields:
        raise CostError(
            f"this operation selects {fields} fields once its fragments are expanded; "
            f"the limit is {settings.taskql_max_fields}",
            limit=settings.taskql_max_fields,
            fields=fields,
        )
    if operation.operation is OperationType.MUTATION:
        roots = root_fields(document, operation)
        lone = AUTHENTICATION_MUTATIONS.intersection(roots)
        if lone and len(roots) > 1:
            raise CostError(
                f"`{sorted(lone)[0]}` changes who is acting: it must be the only field of "
                "its operation (send the other mutations in a request of their own)"
            )
    return operation


def node_cost(
    schema: GraphQLSchema,
    document: DocumentNode,
    operation: OperationDefinitionNode,
    variables: VariableValues,
    settings: Settings,
) -> int:
    """The operation's node cost with ``variables`` as coerced for execution (operation
    defaults applied; argument defaults are applied here)."""
    fragments = _fragments(document)
    root = schema.get_root_type(operation.operation)
    if root is None:
        return 0
    #: (fragment, type) -> its cost at multiplier 1: cost is linear in the multiplier.
    memo: dict[tuple[str, str], int] = {}

    def field_def(parent: Any, name: str) -> GraphQLField | None:
        if isinstance(parent, GraphQLObjectType | GraphQLInterfaceType):
            found: GraphQLField | None = parent.fields.get(name)
            return found
        return None

    def page_size(definition: GraphQLField, node: FieldNode) -> int | None:
        if "first" not in definition.args and "last" not in definition.args:
            return None
        try:
            values = get_argument_values(definition, node, variables)
        except GraphQLError:
            return None  # execution reports the bad argument
        sizes = [v for k, v in values.items() if k in ("first", "last") and isinstance(v, int)]
        return max(sizes) if sizes else None

    def list_bound(parent: Any, name: str, definition: GraphQLField) -> int | None:
        field_type = definition.type
        if isinstance(field_type, GraphQLNonNull):
            field_type = field_type.of_type
        if not isinstance(field_type, GraphQLList):
            return None
        if parent.name.endswith("Connection") and name in ("edges", "nodes"):
            return None  # counted by the connection's page size
        bound = LIST_BOUNDS.get((parent.name, name))
        return bound(settings) if bound is not None else None

    def type_of(condition: Any, parent: Any) -> Any:
        if condition is None:
            return parent
        return schema.get_type(condition.name.value) or parent

    def cost(selection_set: SelectionSetNode | None, parent: Any, active: frozenset[str]) -> int:
        if selection_set is None or parent is None:
            return 0
        total = 0
        for selection in selection_set.selections:
            if isinstance(selection, FieldNode):
                definition = field_def(parent, selection.name.value)
                if definition is None:
                    continue
                child = get_named_type(definition.type)
                size = page_size(definition, selection)
                if size is None:
                    size = list_bound(parent, selection.name.value, definition)
                inner = cost(selection.selection_set, child, active)
                if size is not None:
                    size = max(size, 1)
                    total += size + size * inner
                else:
                    total += inner
            elif isinstance(selection, InlineFragmentNode):
                total += cost(
                    selection.selection_set, type_of(selection.type_condition, parent), active
                )
            elif isinstance(selection, FragmentSpreadNode):
                name = selection.name.value
                fragment = fragments.get(name)
                if fragment is None or name in active:
                    continue
                key = (name, getattr(parent, "name", ""))
                if key not in memo:
                    memo[key] = cost(
                        fragment.selection_set,
                        type_of(fragment.type_condition, parent),
                        active | {name},
                    )
                total += memo[key]
        return total

    return cost(operation.selection_set, root, frozenset())


def check_strings(
    schema: GraphQLSchema,
    document: DocumentNode,
    operation: OperationDefinitionNode,
    variables: VariableValues,
) -> None:
    """Every string of every argument (variables and literals, inside input objects and
    lists) within its maximum (``STRING_LIMITS``, ``MAX_ID``, ``MAX_CURSOR``, ``MAX_STRING``).
    Raises CostError naming the argument. The document's fields are already bounded by
    ``check_document``; the fields with arguments are found once per document (each
    fragment walked once per type), their values read per request."""
    sites = _SITES.get(
        (schema, document, operation), (), lambda: _argument_sites(schema, document, operation)
    )
    for definition, selection, where in sites:
        try:
            values = get_argument_values(definition, selection, variables)
        except GraphQLError:
            values = {}  # execution reports the bad argument
        for name, argument in definition.args.items():
            _check_string(
                values.get(argument.out_name or name), argument.type, f"{where}({name})", name
            )


def _check_string(value: Any, type_: Any, where: str, argument: str | None) -> None:
    if value is None:
        return
    if isinstance(type_, GraphQLNonNull):
        type_ = type_.of_type
    if isinstance(type_, GraphQLList):
        for item in value if isinstance(value, list) else [value]:
            _check_string(item, type_.of_type, where, argument)
        return
    if isinstance(type_, GraphQLInputObjectType):
        if isinstance(value, dict):
            for name, field in type_.fields.items():
                key = field.out_name or name
                _check_string(value.get(key), field.type, f"{type_.name}.{name}", None)
        return
    if not isinstance(value, str):
        return
    if type_.name == "ID":
        limit = MAX_ID
    elif argument in CURSOR_ARGUMENTS:
        limit = MAX_CURSOR
    else:
        limit = STRING_LIMITS.get(where, MAX_STRING)
    if len(value) > limit:
        raise CostError(
            f"`{where}` has {len(value)} characters; at most {limit} are allowed",
            argument=where,
            limit=limit,
        )


#: The fields with arguments of an operation, as (definition, node, "Type.field"), in the
#: order check_strings reads them.
_SITES: ByDocument[tuple[tuple[GraphQLField, FieldNode, str], ...]] = ByDocument()


def _argument_sites(
    schema: GraphQLSchema, document: DocumentNode, operation: OperationDefinitionNode
) -> tuple[tuple[GraphQLField, FieldNode, str], ...]:
    fragments = _fragments(document)
    seen: set[tuple[str, str]] = set()
    sites: list[tuple[GraphQLField, FieldNode, str]] = []

    def walk(selection_set: SelectionSetNode | None, parent: Any) -> None:
        if selection_set is None or parent is None:
            return
        for selection in selection_set.selections:
            if isinstance(selection, FieldNode):
                fields = getattr(parent, "fields", None) or {}
                definition = fields.get(selection.name.value)
                if definition is None:
                    continue
                if selection.arguments:
                    sites.append((definition, selection, f"{parent.name}.{selection.name.value}"))
                walk(selection.selection_set, get_named_type(definition.type))
            elif isinstance(selection, InlineFragmentNode):
                condition = selection.type_condition
                walk(
                    selection.selection_set,
                    schema.get_type(condition.name.value) if condition else parent,
                )
            elif isinstance(selection, FragmentSpreadNode):
                fragment = fragments.get(selection.name.value)
                key = (selection.name.value, getattr(parent, "name", ""))
                if fragment is None or key in seen:
                    continue
                seen.add(key)
                walk(fragment.selection_set, schema.get_type(fragment.type_condition.name.value))

    walk(operation.selection_set, schema.get_root_type(operation.operation))
    return tuple(sites)


def check_operation(
    schema: GraphQLSchema,
    document: DocumentNode,
    operation: OperationDefinitionNode,
    variables: VariableValues,
    settings: Settings,
) -> int:
    """The checks that need the coerced variables: string maxima and the node limit. Returns
    the node cost; raises CostError (BadUserInput for a null variable in a non-null place)."""
    inputs.check_null_variables(schema, document, operation, variables.coerced)
    check_strings(schema, document, operation, variables)
    nodes = node_cost(schema, document, operation, variables, settings)
    over = over_node_limit(nodes, settings)
    if over is not None:
        raise over
    return nodes


def over_node_limit(cost: int, settings: Settings) -> CostError | None:
    if cost <= settings.taskql_max_nodes:
        return None
    limit = settings.taskql_max_nodes
    return CostError(
        f"this operation could return {cost} nodes; the limit is {limit}: "
        "ask for smaller pages (`first`/`last`) or fewer nested connections",
        limit=limit,
        cost=cost,
    )


__all__ = [
    "AUTHENTICATION_MUTATIONS",
    "LIST_BOUNDS",
    "CostError",
    "check_document",
    "check_operation",
    "check_strings",
    "expanded_fields",
    "node_cost",
    "over_node_limit",
    "select_operation",
]
