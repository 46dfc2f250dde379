"""What is worked out once per parsed document (``api.memo``) answers as working it out
again would: per object, per operation name and limit, and never for a document refused."""

from __future__ import annotations

import pytest
from graphql import parse

from api import cost, inputs
from api.errors import BadUserInput
from api.memo import ByDocument
from api.schema import build_schema
from api.settings import Settings


def test_a_memo_answers_per_object_and_key_within_its_bound() -> None:
    calls: list[str] = []
    memo: ByDocument[str] = ByDocument(size=2)

    def compute(value: str) -> str:
        calls.append(value)
        return value

    one, same_text = parse("{ viewer { user { id } } }"), parse("{ viewer { user { id } } }")
    assert memo.get((one,), ("a",), lambda: compute("1a")) == "1a"
    assert memo.get((one,), ("a",), lambda: compute("again")) == "1a"
    # Another object of the same text, or another key: worked out again.
    assert memo.get((same_text,), ("a",), lambda: compute("2a")) == "2a"
    assert memo.get((one,), ("b",), lambda: compute("1b")) == "1b"
    assert len(memo) == 2  # bounded: the least recently used went first
    assert memo.get((one,), ("a",), lambda: compute("1a again")) == "1a again"
    assert calls == ["1a", "2a", "1b", "1a again"]


def test_a_refused_document_is_checked_again_and_limits_are_part_of_the_key() -> None:
    many = " ".join(f"f{i}: id" for i in range(120))
    document = parse(
        f"query A {{ viewer {{ user {{ {many} }} }} }} query B {{ viewer {{ user {{ id }} }} }}"
    )
    wide = Settings(taskql_max_fields=1000)
    narrow = Settings(taskql_max_fields=100)
    for _ in range(2):  # never remembered as passing
        with pytest.raises(cost.CostError):
            cost.check_document(document, None, wide)  # two operations, none named
    assert cost.check_document(document, "A", wide).name.value == "A"  # type: ignore[union-attr]
    assert cost.check_document(document, "B", wide).name.value == "B"  # type: ignore[union-attr]
    with pytest.raises(cost.CostError):
        cost.check_document(document, "A", narrow)  # passed under the wider limit only


def test_null_variable_usages_are_remembered_per_operation() -> None:
    schema = build_schema(Settings())._schema
    document = parse(
        "query A($p: ID!, $n: Int) { project(id: $p) { tasks(first: $n) { totalCount } } }"
        " query B($n: Int = 5) { viewer { memberships(first: $n) { totalCount } } }"
    )
    a, b = (d for d in document.definitions)
    for _ in range(2):
        with pytest.raises(BadUserInput, match=r"variable \$p is null"):
            inputs.check_null_variables(schema, document, a, {"p": None, "n": None})  # type: ignore[arg-type]
        # $n of B is nullable where it is used: an explicit null passes.
        inputs.check_null_variables(schema, document, b, {"n": None})  # type: ignore[arg-type]
