"""Mutation payloads read back by the compiler: the object a mutation returns (a task, a
project, a comment, a member, an organization) answered by ONE compiled statement after
the writes, from the same registry as every compiled read, instead of by the resolvers.

Before execution, for each payload field of an object type ``node(id:)`` fetches, the
selection the client asked for becomes a query of its own::

    query TaskqlReadBack($taskqlReadBack0: ID!, <the variables it uses>) {
      r0: node(id: $taskqlReadBack0) { ... on Task { <the client's selection> } }
    }

It is planned and rendered once with a stand-in id (so whether the compiler answers it,
and at what cost, is known before anything runs); only then is the mutation executed with
that selection cut down to the object's id. After the mutations, in their transaction (so
the read sees the writes, as the caller, row-level security applying), the read-back
statement runs with the ids the mutations returned and its objects replace the ids in the
result. When any part does not compile, nothing is changed: the resolvers answer the whole
operation, as before. A failed operation is rolled back and its payloads' objects become
null (``api.mutations.base.rolled_back``) whichever way they were to be read.

Lists of objects (``createTasks``'s ``tasks``, up to 1,000) stay with the resolvers, whose
loaders read them in a few batched statements: one ``node`` read per object was measured
slower (10 tasks: 88-175 ms against 17-23 ms) and outgrows the document bounds at 100.
The node limit is counted on the client's document, not on the cut-down one executed
(``Context.requested``).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar
from uuid import UUID

from graphql import (
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLObjectType,
    GraphQLSchema,
    NameNode,
    OperationDefinitionNode,
    OperationType,
    SelectionSetNode,
    VariableNode,
    get_named_type,
    get_nullable_type,
    print_ast,
    visit,
)
from graphql.language import Visitor

from api.compiler import Compiler
from api.compiler.relations import NODE_TABLES
from api.ids import to_global_id
from api.memo import ByDocument

if TYPE_CHECKING:
    from api.context import Context

#: The alias under which the cut-down selection reads the object's id.
ID_KEY = "taskqlReadBackId"
_VARIABLE = "taskqlReadBack"
_STAND_IN = UUID(int=0)
T = TypeVar("T")


@dataclass(frozen=True)
class Target:
    #: Response keys: the mutation field's, and its payload's object field's.
    root: str
    key: str
    type_name: str


@dataclass(frozen=True)
class ReadBack:
    #: The mutation document with each target's selection cut down to its id.
    document: DocumentNode
    #: The read-back query (one ``node(id:)`` per target) and its variables but the ids.
    query: str
    variables: dict[str, Any]
    targets: tuple[Target, ...]

    def ids(self, data: dict[str, Any] | None) -> dict[str, str] | None:
        """The read-back's id variables from the mutations' result (a stand-in where a
        payload has no object); None when no target has an object to read."""
        found: dict[str, str] = {}
        for i, target in enumerate(self.targets):
            payload = (data or {}).get(target.root)
            value = payload.get(target.key) if isinstance(payload, dict) else None
            if isinstance(value, dict) and isinstance(value.get(ID_KEY), str):
                found[f"{_VARIABLE}{i}"] = value[ID_KEY]
        if not found:
            return None
        for i, target in enumerate(self.targets):
            found.setdefault(f"{_VARIABLE}{i}", to_global_id(target.type_name, _STAND_IN))
        return found

    def clear(self, data: dict[str, Any] | None) -> None:
        """A failed operation: no object is read back (the payloads say it rolled back)."""
        for target in self.targets:
            payload = (data or {}).get(target.root)
            if isinstance(payload, dict) and isinstance(payload.get(target.key), dict):
                payload[target.key] = None

    def splice(self, data: dict[str, Any], text: str) -> None:
        """Put the read-back objects where the mutations' results hold their ids."""
        objects = json.loads(text)
        for i, target in enumerate(self.targets):
            payload = data.get(target.root)
            if isinstance(payload, dict) and isinstance(payload.get(target.key), dict):
                payload[target.key] = objects[f"r{i}"]


class _Variables(Visitor):
    def __init__(self) -> None:
        super().__init__()
        self.names: set[str] = set()
        self.fragments: set[str] = set()

    def enter_variable(self, node: VariableNode, *_: Any) -> None:
        self.names.add(node.name.value)

    def enter_fragment_spread(self, node: FragmentSpreadNode, *_: Any) -> None:
        self.fragments.add(node.name.value)


def plan(
    compiler: Compiler,
    schema: GraphQLSchema,
    document: DocumentNode,
    operation: OperationDefinitionNode,
    variables: dict[str, Any],
) -> ReadBack | None:
    """The read-back of this mutation's payload objects, or None (the resolvers answer).
    Whether it compiles does not depend on the tenant, viewer or role (a read-back that
    needs a role is never compiled); the caller runs it for a caller with a tenant only."""
    if operation.operation is not OperationType.MUTATION:
        return None
    shape = _SHAPES.get(
        (schema, document, operation), (), lambda: _shape(schema, operation, document)
    )
    if shape is None:
        return None
    given = {name: value for name, value in variables.items() if name in shape.used}
    stand_ins = {
        f"{_VARIABLE}{i}": to_global_id(t.type_name, _STAND_IN) for i, t in enumerate(shape.targets)
    }
    if not compiler.read_back_compiles(shape.query, {**given, **stand_ins}):
        return None
    return ReadBack(shape.cut, shape.query, given, shape.targets)


@dataclass(frozen=True)
class _Shape:
    """What a mutation's read-back is made of, from its document alone."""

    cut: DocumentNode
    query: str
    used: frozenset[str]
    targets: tuple[Target, ...]


#: The read-back shape of each mutation operation (None: the resolvers answer it).
_SHAPES: ByDocument[_Shape | None] = ByDocument()


def _shape(
    schema: GraphQLSchema, operation: OperationDefinitionNode, document: DocumentNode
) -> _Shape | None:
    mutation_type = schema.mutation_type
    if operation.directives or mutation_type is None:
        return None
    targets: list[tuple[Target, FieldNode]] = []
    roots: list[FieldNode] = []
    for selection in operation.selection_set.selections:
        if not isinstance(selection, FieldNode) or selection.directives:
            return None
        roots.append(selection)
        definition = mutation_type.fields.get(selection.name.value)
        if definition is None or selection.selection_set is None:
            return None
        payload = get_named_type(definition.type)
        if not isinstance(payload, GraphQLObjectType):
            return None
        root_key = _key(selection)
        for field in selection.selection_set.selections:
            if not isinstance(field, FieldNode) or field.selection_set is None:
                continue
            field_def = payload.fields.get(field.name.value)
            if field_def is None:
                continue
            nullable = get_nullable_type(field_def.type)
            if isinstance(nullable, GraphQLObjectType) and nullable.name in NODE_TABLES:
                targets.append((Target(root_key, _key(field), nullable.name), field))
    keys = [(t.root, t.key) for t, _ in targets]
    if not targets or len(set(keys)) != len(keys) or len({_key(r) for r in roots}) != len(roots):
        return None
    query, used = _query(document, operation, targets)
    if query is None:
        return None
    return _Shape(
        _cut(document, operation, [f for _, f in targets]),
        query,
        frozenset(used),
        tuple(t for t, _ in targets),
    )


def _key(node: FieldNode) -> str:
    return node.alias.value if node.alias else node.name.value


def _query(
    document: DocumentNode,
    operation: OperationDefinitionNode,
    targets: list[tuple[Target, FieldNode]],
) -> tuple[str | None, set[str]]:
    fragments = {
        d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)
    }
    found = _Variables()
    pending: list[Any] = [field.selection_set for _, field in targets]
    seen: set[str] = set()
    while pending:
        node = pending.pop()
        before = set(found.fragments)
        visit(node, found)
        for name in found.fragments - before - seen:
            seen.add(name)
            if name not in fragments:
                return None, set()
            pending.append(fragments[name])
    definitions = {d.variable.name.value: d for d in operation.variable_definitions or ()}
    if any(name.startswith(_VARIABLE) for name in definitions) or not found.names <= set(
        definitions
    ):
        return None, set()
    declared = [print_ast(definitions[name]) for name in sorted(found.names)]
    declared += [f"${_VARIABLE}{i}: ID!" for i in range(len(targets))]
    reads = " ".join(
        f"r{i}: node(id: ${_VARIABLE}{i}) {{ ... on {t.type_name} "
        f"{print_ast(field.selection_set)} }}"
        for i, (t, field) in enumerate(targets)
        if field.selection_set is not None
    )
    text = f"query TaskqlReadBack({', '.join(declared)}) {{ {reads} }}"
    for name in sorted(seen):
        text += "\n" + print_ast(fragments[name])
    return text, found.names


def _cut(
    document: DocumentNode, operation: OperationDefinitionNode, fields: list[FieldNode]
) -> DocumentNode:
    """A copy of ``document`` where each of ``fields`` selects only the object's id (the
    parsed document is cached and shared: it is never changed in place)."""
    cut = {id(f) for f in fields}
    only_id = SelectionSetNode(
        selections=(FieldNode(alias=NameNode(value=ID_KEY), name=NameNode(value="id")),)
    )

    def cut_field(field: FieldNode) -> FieldNode:
        if field.selection_set is None:
            return field
        selections = tuple(
            _with(s, only_id) if id(s) in cut else s for s in field.selection_set.selections
        )
        return _copy(field, selection_set=_copy(field.selection_set, selections=selections))

    roots = tuple(
        cut_field(s) if isinstance(s, FieldNode) else s for s in operation.selection_set.selections
    )
    new_operation = _copy(operation, selection_set=_copy(operation.selection_set, selections=roots))
    return _copy(
        document,
        definitions=tuple(new_operation if d is operation else d for d in document.definitions),
    )


def _with(field: Any, selection_set: SelectionSetNode) -> Any:
    return _copy(field, selection_set=selection_set)


def _copy(node: T, **changes: Any) -> T:
    return dataclasses.replace(node, **changes)  # type: ignore[type-var]


async def read_back(context: Context, planned: ReadBack, data: dict[str, Any]) -> None:
    """Run the read-back in the operation's transaction, as the caller, and put its objects
    in ``data`` (the mutations' result, holding their ids): nothing to do when no payload
    has an object. Both write paths end with this (``api.extensions``, ``api.direct``)."""
    ids = planned.ids(data)
    if ids is None or context.compiler is None:
        return
    auth = context.auth
    assert auth.viewer is not None
    assert auth.tenant is not None
    tenant, role = auth.tenant.organization_id, auth.tenant.role
    if context.organization_id is not None and context.organization_id != tenant:
        # A new organization became the operation's tenant: its creator owns it.
        tenant, role = context.organization_id, "owner"
    prepared = context.compiler.read_back(
        planned.query, planned.variables, tenant, auth.viewer.user_id, role, ids
    )
    if prepared is None:  # it compiled with a stand-in id: it cannot fail with a real one
        raise RuntimeError("a mutation payload's read-back did not compile")
    sql, params = prepared
    planned.splice(data, await context.db.fetchval(sql, *params))
