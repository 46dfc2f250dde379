"""Issue 12's differential property test: queries generated from the schema, answered by the
compiler (``api/compiler``) and by the resolvers, must be equal.

The generator walks graphql-core's schema objects: every field of the query type and what is
reachable from it, arguments with valid (and some invalid) values, every enum value (so every
ordering and direction), inline values or variables, ``null`` for nullable and defaulted
arguments, ``@skip``/``@include`` with literals and variables (``null`` too), named and
inline fragments, aliases. Ids and cursors come from earlier answers (every string of every
response that decodes as one is kept), plus hand-made cursors PostgreSQL would refuse.
Each query is sent as one role of one of two tenants, to an app with the compiler on and one
with it off, on the same database; the two responses must be equal, key order included,
ignoring only ``extensions.requestId``.

``TASKQL_FUZZ_EXAMPLES`` sets the number of examples (``make fuzz``: many more).
"""

from __future__ import annotations

import base64
import json
import os
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import httpx
import pytest
from graphql import (
    GraphQLArgument,
    GraphQLEnumType,
    GraphQLInputObjectType,
    GraphQLInterfaceType,
    GraphQLList,
    GraphQLNonNull,
    GraphQLObjectType,
    GraphQLScalarType,
    GraphQLSchema,
    GraphQLUnionType,
    get_named_type,
)
from graphql.pyutils import Undefined
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

from api import compiler
from api.app import create_app
from api.compiler import Compiler
from api.errors import ApiError
from api.ids import from_global_id
from api.pagination import decode_cursor, encode_cursor
from api.schema import build_schema
from api.settings import Settings
from db.uuid7 import uuid7
from tests.api.test_compiled import enrich
from tests.api.world import ROLES, Org

EXAMPLES = int(os.environ.get("TASKQL_FUZZ_EXAMPLES", "120"))
#: Another sequence of examples than CI's (``make fuzz TASKQL_FUZZ_SEED=7``).
SEED = os.environ.get("TASKQL_FUZZ_SEED")
SCHEMA: GraphQLSchema = build_schema(Settings())._schema
MAX_DEPTH = 5

#: Hand-made cursors: keys each order's type could not read in PostgreSQL (or only
#: differently), and plain garbage.
BAD_CURSORS = [
    encode_cursor(key, uuid7())
    for key in (
        "2025-01-01 00:00:00+16",
        "2025-01-01 00:00:00+15:59:60",
        "\u0662\u0660\u0662\u0665-01-01 00:00:00+00",
        "1e-50",
        "1_0",
        "\u0661",
        "h\u00e9llo",
        "not a time",
        "99999",
        "infinity",
        "NaN",
    )
] + [
    "bad",
    "",
    "W10",
    # A lone surrogate (only an escaped one can be sent).
    base64.urlsafe_b64encode(json.dumps(["\ud800", str(uuid7())]).encode()).decode(),
]

DATES = [
    "2026-01-01T00:00:00+00:00",
    "2027-01-03T03:04:05.120000+00:00",
    "2026-06-01T00:00:00",
    "0001-01-01T00:00:00+00:00",
    "0001-01-01T00:00:00+05:00",
    "9999-12-31T00:00:00+00:00",
    "9999-12-31T23:59:59.999999+00:00",
    "9999-12-31T23:59:59-05:00",
    "not a date",
]
TEXTS = [
    "task",
    "Task 1",
    "level",
    "launch",
    "Level 1 undr a",
    "comment",
    "h\u00e9",
    "   ",
    "x" * 201,
]


class Enum(str):
    """An enum value: a name in a document, a string in variables."""


@dataclass
class Pools:
    """Ids (by type) and cursors seen in answers so far, and the tenants' slugs."""

    ids: dict[str, list[str]] = field(default_factory=dict)
    cursors: list[str] = field(default_factory=list)
    slugs: list[str] = field(default_factory=list)

    def add_id(self, value: str) -> None:
        try:
            kind, _ = from_global_id(value)
        except ApiError:
            return
        found = self.ids.setdefault(kind, [])
        if value not in found and len(found) < 200:
            found.append(value)

    def harvest(self, answer: Any) -> None:
        if isinstance(answer, dict):
            for value in answer.values():
                self.harvest(value)
        elif isinstance(answer, list):
            for value in answer:
                self.harvest(value)
        elif isinstance(answer, str) and answer:
            self.add_id(answer)
            try:
                decode_cursor(answer)
            except ApiError:
                return
            if answer not in self.cursors and len(self.cursors) < 500:
                self.cursors.append(answer)


def _literal(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, Enum):
        return str(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(_literal(v) for v in value) + "]"
    assert isinstance(value, dict)
    return "{" + ", ".join(f"{k}: {_literal(v)}" for k, v in value.items()) + "}"


def _plain(value: Any) -> Any:
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return str(value) if isinstance(value, Enum) else value


class Builder:
    """One generated operation: its variables' definitions and values, and its fragments."""

    def __init__(self, draw: st.DrawFn, pools: Pools, compilable: bool = False) -> None:
        self.draw = draw
        self.pools = pools
        #: Only fields the compiler renders (half of the examples): the other half meet its
        #: fallback, these its answers.
        self.compilable = compilable
        self.definitions: list[str] = []
        self.variables: dict[str, Any] = {}
        self.fragments: list[str] = []
        self.count = 0

    def name(self, prefix: str) -> str:
        self.count += 1
        return f"{prefix}{self.count}"

    # -- values --

    def roll(self, high: int) -> int:
        """A number from 0 to ``high``."""
        number: int = self.draw(st.integers(0, high))
        return number

    def pick(self, options: list[Any]) -> Any:
        # One draw of a fixed range whatever the options (pools grow between examples, and
        # hypothesis needs the same draws to replay an example).
        index = self.roll(9999)
        return options[index % len(options)] if options else None

    def some_id(self, kind: str | None) -> str:
        pools = self.pools.ids
        other = self.pick(sorted(pools))
        if kind is None or self.roll(9) == 0:
            kind = other
        found = pools.get(kind or "", [])
        real = self.roll(15)
        chosen = self.pick(found)
        return chosen if chosen is not None and real else "nope"

    def value(self, type_: Any, name: str, owner: str) -> Any:
        """A value for an argument or input field ``name`` (of ``owner``), mostly valid."""
        named = get_named_type(type_)
        if isinstance(type_, GraphQLNonNull):
            type_ = type_.of_type
        if isinstance(type_, GraphQLList):
            size = self.roll(3)
            return [self.value(type_.of_type, name, owner) for _ in range(size)]
        if isinstance(named, GraphQLEnumType):
            return Enum(self.pick(sorted(named.values)))
        if isinstance(named, GraphQLInputObjectType):
            chosen = self.draw(st.sets(st.sampled_from(sorted(named.fields)), max_size=4))
            return {
                f: self.value(named.fields[f].type, f, named.name)
                for f in sorted(chosen)
                if not (isinstance(named.fields[f].type, GraphQLNonNull) and False)
            }
        scalar = named.name
        if scalar == "Boolean":
            return self.draw(st.booleans())
        if scalar == "Int":
            if name in ("first", "last"):
                return self.pick([1, 2, 3, 5, 20, 100, 1, 2, 3, 0, 101])
            return self.pick([-1, 0, 1, 2, 3, 4, 5, 2**31 - 1])
        if scalar == "DateTime":
            return self.pick(DATES)
        if scalar == "ID":
            kind = {
                ("Query", "project"): "Project",
                ("Query", "task"): "Task",
                ("Query", "organization"): "Organization",
                ("TaskFilter", "assignee"): "User",
            }.get((owner, name))
            return self.some_id(kind)
        if name in ("after", "before"):
            harvested, made = self.roll(4), self.pick(BAD_CURSORS)
            cursor = self.pick(self.pools.cursors)
            return cursor if cursor is not None and harvested else made
        if name == "slug":
            return self.pick([*self.pools.slugs, "no-such-org", "A-" + self.pools.slugs[0]])
        return self.pick(TEXTS)

    def argument(self, arg_name: str, arg: GraphQLArgument, owner: str, value: Any) -> str:
        """``name: value`` inline or through a variable (null, omitted or defaulted)."""
        how = self.pick(["inline", "inline", "variable", "variable", "variable", "null", "omit"])
        has_default = arg.default_value is not Undefined
        nullable = not isinstance(arg.type, GraphQLNonNull) or has_default
        if how == "inline":
            return f"{arg_name}: {_literal(value)}"
        variable = self.name("v")
        type_text = str(arg.type)
        if has_default and self.draw(st.booleans()):
            type_text = type_text.rstrip("!")  # allowed: the argument has a default
        if how in ("null", "omit") and not nullable:
            how = "variable"
        if how == "null" and not type_text.endswith("!"):
            self.variables[variable] = None
        elif how == "omit" and not type_text.endswith("!"):
            pass
        else:
            self.variables[variable] = _plain(value)
        default = ""
        if not type_text.endswith("!") and self.roll(4) == 0:
            default = f" = {_literal(value)}"
        self.definitions.append(f"${variable}: {type_text}{default}")
        return f"{arg_name}: ${variable}"

    def arguments(self, owner: str, field_name: str, args: dict[str, GraphQLArgument]) -> str:
        if not args:
            return ""
        names = set(args)
        chosen: set[str] = set()
        if {"first", "last"} <= names:
            # Mostly what a client sends: one of first/last, a cursor now and then.
            shape = self.draw(st.sampled_from(["first", "first", "first", "last", "both", "none"]))
            chosen |= (
                {"first", "last"} if shape == "both" else set() if shape == "none" else {shape}
            )
            if self.roll(2) == 0:
                chosen.add("before" if shape == "last" else "after")
        if "first" in names and "last" not in names and self.roll(2):
            chosen.add("first")
        for name, arg in args.items():
            if name in ("first", "last", "after", "before"):
                continue
            required = isinstance(arg.type, GraphQLNonNull) and arg.default_value is Undefined
            if required or self.roll(2) == 0:
                chosen.add(name)
        if field_name == "organization" and self.draw(st.booleans()):
            chosen -= {"id"}
        parts = [
            self.argument(name, args[name], owner, self.value(args[name].type, name, owner))
            for name in args
            if name in chosen
        ]
        return f"({', '.join(parts)})" if parts else ""

    def directives(self) -> str:
        roll = self.roll(7)
        if roll > 1:
            return ""
        directive = "skip" if roll == 0 else "include"
        how = self.draw(st.sampled_from(["true", "false", "variable", "nullable", "null"]))
        if how in ("true", "false"):
            return f" @{directive}(if: {how})"
        variable = self.name("d")
        if how == "variable":
            self.definitions.append(f"${variable}: Boolean!")
            self.variables[variable] = self.draw(st.booleans())
        else:
            default = self.pick(["true", "false"])
            self.definitions.append(f"${variable}: Boolean = {default}")
            if how == "null":
                self.variables[variable] = None
        return f" @{directive}(if: ${variable})"

    # -- selections --

    def selection_set(self, type_: Any, depth: int) -> str:
        named = get_named_type(type_)
        if isinstance(named, GraphQLUnionType | GraphQLInterfaceType):
            members = (
                named.types
                if isinstance(named, GraphQLUnionType)
                else SCHEMA.get_possible_types(named)
            )
            parts = ["__typename"]
            if isinstance(named, GraphQLInterfaceType):
                parts.append("id")
            for member in members:
                if self.roll(2) == 0:
                    parts.append(f"... on {member.name} {self.selection_set(member, depth)}")
            return "{ " + " ".join(parts) + " }"
        assert isinstance(named, GraphQLObjectType)
        fields = self.fields(named, depth)
        wrap = self.roll(5)
        if wrap == 0:
            fragment = self.name("F")
            self.fragments.append(f"fragment {fragment} on {named.name} {{ {fields} }}")
            return f"{{ ...{fragment}{self.directives()} }}"
        if wrap == 1:
            on = self.pick([f" on {named.name}", ""])
            return f"{{ ...{on}{self.directives()} {{ {fields} }} }}"
        return f"{{ {fields} }}"

    def fields(self, named: GraphQLObjectType, depth: int) -> str:
        names = sorted(named.fields)
        if named.name == "Query":
            names = [n for n in names if not n.startswith("__")]
        if self.compilable and named.name in compiler.FIELDS:
            names = [n for n in names if n in compiler.FIELDS[named.name]]
        if depth >= MAX_DEPTH:
            names = [
                n
                for n in names
                if isinstance(
                    get_named_type(named.fields[n].type), GraphQLScalarType | GraphQLEnumType
                )
                and not named.fields[n].args
            ]
        most = 2 if named.name == "Query" else 3
        chosen = self.draw(st.lists(st.sampled_from(names), min_size=1, max_size=most, unique=True))
        if not names or not chosen:
            return "__typename"
        parts = []
        for name in chosen:
            definition = named.fields[name]
            alias = f"{self.name('a')}: " if self.roll(4) == 0 else ""
            text = f"{alias}{name}{self.arguments(named.name, name, definition.args)}"
            text += self.directives()
            child = get_named_type(definition.type)
            if not isinstance(child, GraphQLScalarType | GraphQLEnumType):
                text += " " + self.selection_set(definition.type, depth + 1)
            parts.append(text)
        if self.roll(5) == 0:
            parts.append("__typename")
        return " ".join(parts)

    def document(self) -> str:
        body = self.fields(SCHEMA.query_type, 0)  # type: ignore[arg-type]
        definitions = f"({', '.join(self.definitions)})" if self.definitions else ""
        name = self.pick(["", " Q"])
        head = f"query{name}{definitions}" if name or definitions else ""
        return f"{head} {{ {body} }}" + "".join(f"\n{f}" for f in self.fragments)


@st.composite
def operations(draw: st.DrawFn, pools: Pools) -> tuple[str, dict[str, Any]]:
    builder = Builder(draw, pools, compilable=draw(st.booleans()))
    document = builder.document()
    return document, builder.variables


@dataclass
class Counts:
    compiled: int = 0
    total: int = 0


@pytest.fixture
async def paths(
    pool: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[tuple[httpx.AsyncClient, httpx.AsyncClient, Counts]]:
    counts = Counts()
    prepare = Compiler.prepare

    def counted(self: Compiler, *args: Any, **kwargs: Any) -> Any:
        prepared = prepare(self, *args, **kwargs)
        counts.compiled += prepared is not None
        return prepared

    monkeypatch.setattr(Compiler, "prepare", counted)
    clients = []
    for compiled in (True, False):
        app = create_app(Settings(taskql_compiled_queries=compiled))
        transport = httpx.ASGITransport(app=app, client=("198.51.100.7", 50000))
        clients.append(httpx.AsyncClient(transport=transport, base_url="http://taskql.test"))
    try:
        yield clients[0], clients[1], counts
    finally:
        for client in clients:
            await client.aclose()
        if counts.total:
            print(
                f"\ncompiled {counts.compiled} of {counts.total} generated queries "
                f"({100 * counts.compiled / counts.total:.0f}%)"
            )


#: A request id in a response (each request has its own): the only bytes that may differ.
REQUEST_ID = re.compile(r'"requestId": "[0-9a-f]{32}"')


def comparable(text: str) -> str:
    """The response's bytes, request ids blanked: the paths must agree byte for byte (key
    order, separators, number and string encoding)."""
    return REQUEST_ID.sub('"requestId": "-"', text)


class Pairs(list[tuple[str, Any]]):
    """A JSON object, its members in order."""


def seed_pools(pools: Pools, orgs: tuple[Org, Org]) -> None:
    for org in orgs:
        pools.slugs.append(org.slug)
        pools.add_id(org.gid("Organization", org.id))
        pools.add_id(org.project)
        for index in range(len(org.task_ids)):
            pools.add_id(org.task(index))
        for role in ROLES:
            pools.add_id(org.user(role))
        for comment in org.comment_ids:
            pools.add_id(org.gid("Comment", comment))


_pools: dict[str, Pools] = {}


@settings(
    max_examples=EXAMPLES,
    derandomize=SEED is None,
    database=None,
    deadline=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
)
@seed(int(SEED or 0))
@given(data=st.data())
async def test_generated_queries_answer_the_same_on_both_paths(
    paths: tuple[httpx.AsyncClient, httpx.AsyncClient, Counts],
    org_a: Org,
    org_b: Org,
    data: st.DataObject,
) -> None:
    compiled_client, resolvers_client, counts = paths
    pools = _pools.get(org_a.slug)
    if pools is None:
        await enrich(org_a)
        await enrich(org_b)
        pools = _pools[org_a.slug] = Pools()
        seed_pools(pools, (org_a, org_b))
    query, variables = data.draw(operations(pools), label="operation")
    org = data.draw(st.sampled_from([org_a, org_b]), label="tenant")
    role = data.draw(st.sampled_from(ROLES), label="role")
    headers = {"Authorization": f"Bearer {org.tokens[role]}", "X-Organization": org.slug}
    body = {"query": query, "variables": variables}
    compiled = await compiled_client.post("/graphql", json=body, headers=headers)
    reference = await resolvers_client.post("/graphql", json=body, headers=headers)
    counts.total += 1
    assert (compiled.status_code, comparable(compiled.text)) == (
        reference.status_code,
        comparable(reference.text),
    ), f"{query}\n{json.dumps(variables)}\ncompiled:  {compiled.text}\nresolvers: {reference.text}"
    assert compiled.status_code < 500, f"{query}\n{json.dumps(variables)}\n{compiled.text}"
    pools.harvest(reference.json())
