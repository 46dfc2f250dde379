"""The compiler reads exactly the schema's arguments: for every field it compiles, the
arguments (and input fields) it handles equal the schema's, and anything else it is given
makes it fall back on the resolvers. So an argument added on the resolver side only makes the
compiler fall back, or this suite fail; it is never ignored."""

from __future__ import annotations

from uuid import UUID

from graphql import GraphQLInputObjectType, GraphQLObjectType, build_schema, print_schema

from api import compiler
from api.compiler import ARGUMENTS, FIELDS, INPUT_FIELDS, Compiler
from api.ids import to_global_id
from api.schema import build_schema as build_strawberry_schema
from api.settings import Settings
from db.uuid7 import uuid7

SCHEMA = build_strawberry_schema(Settings())._schema


def test_every_compiled_field_handles_exactly_the_schema_arguments() -> None:
    compared = 0
    for type_name, fields in FIELDS.items():
        found = SCHEMA.get_type(type_name)
        assert isinstance(found, GraphQLObjectType), type_name
        for name in fields:
            schema_args = set(found.fields[name].args)
            handled = set(ARGUMENTS.get((type_name, name), frozenset()))
            assert handled == schema_args, f"{type_name}.{name}: {handled} != {schema_args}"
            compared += 1
    for type_name in compiler.CONNECTIONS:
        found = SCHEMA.get_type(type_name)
        assert isinstance(found, GraphQLObjectType), type_name
        for name, definition in found.fields.items():
            assert not definition.args, f"{type_name}.{name} has arguments"
    # Every handled argument is of a field the compiler renders.
    assert {key for key in ARGUMENTS} <= {(t, f) for t, fs in FIELDS.items() for f in fs}
    assert compared > 60


def test_every_input_object_the_compiler_reads_has_exactly_its_fields() -> None:
    for type_name, handled in INPUT_FIELDS.items():
        found = SCHEMA.get_type(type_name)
        assert isinstance(found, GraphQLInputObjectType), type_name
        assert set(found.fields) == set(handled), type_name


def _with(sdl_change: tuple[str, str]) -> Compiler:
    """A compiler over the schema with one change made on the resolver side only."""
    old, new = sdl_change
    sdl = print_schema(SCHEMA)
    assert old in sdl
    return Compiler(build_schema(sdl.replace(old, new, 1)), Settings())


SUBTASKS = "subtasks(first: Int = null"


def test_an_argument_the_compiler_does_not_handle_makes_it_fall_back() -> None:
    probe = _with((SUBTASKS, "subtasks(filter: TaskFilter = null, first: Int = null"))
    plain = "query($id: ID!) { task(id: $id) { subtasks(first: 2) { nodes { title } } } }"
    assert probe.plan(plain, None) is not None
    filtered = plain.replace("first: 2", "first: 2, filter: {rootOnly: true}")
    assert probe.plan(filtered, None) is None
    # The real schema refuses that document outright (resolvers: a validation error).
    assert Compiler(SCHEMA, Settings()).plan(filtered, None) is None


def test_an_input_field_the_compiler_does_not_read_makes_it_fall_back() -> None:
    probe = _with(("input TaskFilter {", "input TaskFilter {\n  archived: Boolean"))
    query = """query($id: ID!, $f: TaskFilter) { project(id: $id) {
      tasks(first: 2, filter: $f) { nodes { title } } } }"""
    plan = probe.plan(query, None)
    assert plan is not None
    assert probe.prepare(query, None, {"id": _project_id(), "f": {"rootOnly": True}}, *_ids())
    assert (
        probe.prepare(query, None, {"id": _project_id(), "f": {"archived": True}}, *_ids()) is None
    )


def _project_id() -> str:
    return to_global_id("Project", uuid7())


def _ids() -> tuple[UUID, UUID]:
    return uuid7(), uuid7()
