"""Strings PostgreSQL cannot store, refused before any statement: NUL (U+0000, which
``text`` rejects) and unpaired surrogates (U+D800-U+DFFF alone, which UTF-8 cannot encode).

Checked once per request on both read paths, on what the client sent: every string literal
of the document (``api.cost.check_document``, which both paths call before validation) and
every string of the variables, keys included (``check_variables``: the resolver path's
``OperationLimits`` and the compiler's ``statement``). A client learns which value is wrong
(BAD_USER_INPUT), and the driver's text never reaches it.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

import dateutil.parser
from graphql import (
    DocumentNode,
    FloatValueNode,
    GraphQLNonNull,
    GraphQLSchema,
    IntValueNode,
    OperationDefinitionNode,
    StringValueNode,
    TypeInfo,
    ValidationContext,
    Visitor,
    visit,
)
from strawberry.schema.types.base_scalars import isoformat, wrap_parser
from strawberry.types.scalar import ScalarDefinition

from api import errors
from api.memo import ByDocument

_BAD = re.compile("[\x00\ud800-\udfff]")
#: Longest number literal a document may hold (an Int has 10 digits, a Float's exponent 3).
MAX_NUMBER_DIGITS = 64


def text_problem(value: str) -> str | None:
    """Why ``value`` cannot be stored as text, or None."""
    found = _BAD.search(value)
    if found is None:
        return None
    if found.group() == "\x00":
        return "contains a NUL character (U+0000), which text cannot hold"
    return (
        f"contains an unpaired surrogate (U+{ord(found.group()):04X}), which is not valid Unicode"
    )


#: asyncpg sends Python's first and last instants as -infinity and infinity: a time must lie
#: strictly between them (in UTC) to be stored as itself and read back as it was sent.
FIRST_TIME = datetime.min.replace(tzinfo=UTC)
LAST_TIME = datetime.max.replace(tzinfo=UTC)
TIME_RANGE = (
    "a DateTime must lie after 0001-01-01T00:00:00Z and before 9999-12-31T23:59:59.999999Z "
    "(PostgreSQL would store those ends as -infinity and infinity)"
)


def parse_time(text: str) -> datetime:
    """A DateTime input (ISO 8601; without an offset: UTC, as the driver reads it), inside
    the range stored as itself; ValueError otherwise. The schema's DateTime scalar, so both
    read paths and every mutation refuse the same values before any statement."""
    value: datetime = dateutil.parser.isoparse(text)
    try:
        instant = (value if value.tzinfo else value.replace(tzinfo=UTC)).astimezone(UTC)
    except OverflowError:
        raise ValueError(TIME_RANGE) from None
    if not FIRST_TIME < instant < LAST_TIME:
        raise ValueError(TIME_RANGE)
    return value


DATE_TIME = ScalarDefinition(
    name="DateTime",
    description="Date with time (isoformat)",
    specified_by_url=None,
    serialize=isoformat,
    parse_value=wrap_parser(parse_time, "DateTime", (ValueError, OverflowError)),
    parse_literal=None,
    origin=datetime,
)


def check_variables(variables: dict[str, Any] | None) -> None:
    """Raise BadUserInput naming the first variable with a string that cannot be stored."""
    found = _first_bad(variables or {}, [])
    if found is not None:
        path, problem = found
        name, rest = str(path[0]), path[1:]
        where = "".join(f"[{p}]" if isinstance(p, int) else f".{_printable(p)}" for p in rest)
        raise errors.BadUserInput(
            f"variable ${_printable(name)}{where} {problem}", variable=_printable(name)
        )


def check_document(document: DocumentNode) -> None:
    """Raise BadUserInput for the first string literal of ``document`` that cannot be stored
    (or a number literal too long to be one)."""
    visitor = _Literals()
    visit(document, visitor)
    if visitor.problem is not None:
        raise errors.BadUserInput(f"a literal in the document {visitor.problem}")


def check_null_variables(
    schema: GraphQLSchema,
    document: DocumentNode,
    operation: OperationDefinitionNode,
    coerced: dict[str, Any],
) -> None:
    """Raise BadUserInput for a variable sent as ``null`` where it is used as a non-null
    value (``@skip(if:)``, ``@include(if:)``, a non-null argument or input field with a
    default): the variable's own default does not replace an explicit null (the spec's
    CoerceVariableValues), so the location would get null. One rule for both read paths,
    checked with the coerced variables before anything runs."""
    for name, required in _USAGES.get(
        (schema, document, operation), (), lambda: _non_null_usages(schema, document, operation)
    ):
        if name in coerced and coerced[name] is None:
            raise errors.BadUserInput(
                f"variable ${name} is null where a value of type {required} is required",
                variable=name,
            )


def _non_null_usages(
    schema: GraphQLSchema, document: DocumentNode, operation: OperationDefinitionNode
) -> tuple[tuple[str, str], ...]:
    """(variable, type) of each place ``operation`` uses a variable as a non-null value."""
    context = ValidationContext(schema, document, TypeInfo(schema), lambda error: None)
    return tuple(
        (usage.node.name.value, str(usage.type))
        for usage in context.get_recursive_variable_usages(operation)
        if isinstance(usage.type, GraphQLNonNull)
    )


#: The non-null variable usages of each operation (they depend on the document alone).
_USAGES: ByDocument[tuple[tuple[str, str], ...]] = ByDocument()


class _Literals(Visitor):
    def __init__(self) -> None:
        super().__init__()
        self.problem: str | None = None

    def enter_int_value(self, node: IntValueNode, *_: Any) -> Any:
        return self._number(node.value)

    def enter_float_value(self, node: FloatValueNode, *_: Any) -> Any:
        return self._number(node.value)

    def _number(self, value: str) -> Any:
        if self.problem is None and len(value) > MAX_NUMBER_DIGITS:
            self.problem = f"is a number over {MAX_NUMBER_DIGITS} digits"
            return Visitor.BREAK
        return None

    def enter_string_value(self, node: StringValueNode, *_: Any) -> Any:
        if self.problem is None:
            self.problem = text_problem(node.value)
            if self.problem is not None:
                return Visitor.BREAK
        return None


def _first_bad(value: Any, path: list[str | int]) -> tuple[list[str | int], str] | None:
    """The path to the first string (value or key) of a JSON value that cannot be stored,
    and why; iterative, so no nesting depth overflows it."""
    stack: list[tuple[Any, list[str | int]]] = [(value, path)]
    while stack:
        current, where = stack.pop()
        if isinstance(current, str):
            problem = text_problem(current)
            if problem is not None:
                return where, problem
        elif isinstance(current, dict):
            for key, item in current.items():
                problem = text_problem(key) if isinstance(key, str) else None
                if problem is not None:
                    return [*where, key], f"has a key that {problem}"
                stack.append((item, [*where, key]))
        elif isinstance(current, list):
            stack.extend((item, [*where, i]) for i, item in enumerate(current))
    return None


def _printable(text: str) -> str:
    """``text`` with the characters it is refused for escaped, so the message can be sent."""
    return _BAD.sub(lambda m: f"\\u{ord(m.group()):04x}", text)
