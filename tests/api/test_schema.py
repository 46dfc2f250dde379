"""The exported SDL (schema.graphql) matches the schema the server runs."""

from __future__ import annotations

from api.schema import SDL_PATH, sdl


def test_schema_graphql_is_up_to_date() -> None:
    assert SDL_PATH.read_text() == sdl(), "schema.graphql is stale: run `taskql export-schema`"


def test_every_mutation_takes_one_input_and_returns_errors() -> None:
    from api.schema import schema

    mutation = schema._schema.mutation_type
    assert mutation is not None
    for name, field in mutation.fields.items():
        assert set(field.args) <= {"input"}, name
        payload = field.type.of_type  # NonNull -> payload object
        assert "errors" in payload.fields, name
