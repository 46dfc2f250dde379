"""GraphQL over HTTP (https://graphql.github.io/graphql-over-http/draft/): what a request may
be, which media type answers it, and request errors as GraphQL JSON.

One reading of the request serves both read paths (the compiled one and Strawberry's), so a
request is accepted or refused the same way whichever answers it:

- POST bodies are ``application/json`` in UTF-8 (another type: 415; another charset: 415;
  bytes that are not UTF-8: 400); GET takes ``query``, ``variables``, ``operationName`` and
  ``extensions`` from the URL (queries only: a mutation over GET is a 405);
- the body is one JSON object (not ``null``, a number, a string or a batch array) whose
  ``query`` is a non-empty string, ``variables`` and ``extensions`` objects (or null),
  ``operationName`` a string (or null);
- JSON nested deeper than ``MAX_JSON_DEPTH`` or with a number of more than
  ``MAX_NUMBER_DIGITS`` digits is refused before anything walks it.

A request error is ``{"errors": [{"message", "extensions": {"code", "requestId"}}]}``
(no ``data``), with a 4xx status, in the negotiated media type.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from cross_web import AsyncHTTPRequestAdapter
from starlette.responses import Response
from strawberry.http import GraphQLRequestData
from strawberry.http.parse_content_type import parse_content_type

from api import inputs
from api.errors import BAD_USER_INPUT, INTERNAL_SERVER_ERROR, NOT_FOUND, error_body
from api.persisted import PersistedOperations, Refused

GRAPHQL_RESPONSE_JSON = "application/graphql-response+json"
APPLICATION_JSON = "application/json"
#: Deepest JSON a request may hold (variables of the deepest input type need a handful).
MAX_JSON_DEPTH = 64
#: Longest number a request may hold (as in a document, api.inputs).
MAX_NUMBER_DIGITS = inputs.MAX_NUMBER_DIGITS

_CODES = {404: NOT_FOUND, 500: INTERNAL_SERVER_ERROR}


class RequestError(Exception):
    """A request refused before GraphQL runs, with its status and a message for the client."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        code: str | None = None,
        headers: Mapping[str, str] | None = None,
        extensions: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.extensions = dict(extensions or {})
        self.status = status
        self.message = message
        self.code = code or _CODES.get(status, BAD_USER_INPUT)
        self.headers = dict(headers or {})


def response_media_type(accept: str | None) -> str:
    """``application/graphql-response+json`` when the client asks for it at least as much as
    for ``application/json``; ``application/json`` otherwise (also with no Accept header, and
    when the client accepts neither, as the spec allows)."""
    if not accept:
        return APPLICATION_JSON
    quality = {GRAPHQL_RESPONSE_JSON: 0.0, APPLICATION_JSON: 0.0}
    for part in accept.split(","):
        media, _, params = part.strip().partition(";")
        media = media.strip().lower()
        q = 1.0
        for param in params.split(";"):
            key, _, value = param.strip().partition("=")
            if key.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        if media in quality:
            quality[media] = max(quality[media], q)
        elif media in ("*/*", "application/*"):
            quality[APPLICATION_JSON] = max(quality[APPLICATION_JSON], q)
    wanted = quality[GRAPHQL_RESPONSE_JSON]
    if wanted > 0 and wanted >= quality[APPLICATION_JSON]:
        return GRAPHQL_RESPONSE_JSON
    return APPLICATION_JSON


def _number(text: str) -> int:
    if len(text) > MAX_NUMBER_DIGITS:
        raise RequestError(400, f"the request holds a number over {MAX_NUMBER_DIGITS} digits")
    return int(text)


def _float(text: str) -> float:
    if len(text) > MAX_NUMBER_DIGITS:
        raise RequestError(400, f"the request holds a number over {MAX_NUMBER_DIGITS} digits")
    return float(text)


def _constant(name: str) -> Any:
    raise RequestError(400, f"the request body is not JSON: {name} is not a JSON value")


def decode_json(raw: bytes | str, what: str = "the request body") -> Any:
    """Strict JSON: UTF-8, no NaN/Infinity, bounded depth and number length."""
    if isinstance(raw, bytes):
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise RequestError(
                400, f"{what} is not valid UTF-8 (byte {exc.start}); send JSON in UTF-8"
            ) from None
    else:
        text = raw
    text = text.removeprefix("\ufeff")
    try:
        value = json.loads(text, parse_int=_number, parse_float=_float, parse_constant=_constant)
    except RecursionError:
        raise RequestError(400, f"{what} nests JSON deeper than {MAX_JSON_DEPTH} levels") from None
    except json.JSONDecodeError as exc:
        raise RequestError(
            400, f"{what} is not JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})"
        ) from None
    if _depth_over(value, MAX_JSON_DEPTH):
        raise RequestError(400, f"{what} nests JSON deeper than {MAX_JSON_DEPTH} levels")
    return value


def _depth_over(value: Any, limit: int) -> bool:
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        current, depth = stack.pop()
        if isinstance(current, dict | list):
            if depth > limit:
                return True
            items = current.values() if isinstance(current, dict) else current
            stack.extend((item, depth + 1) for item in items if isinstance(item, dict | list))
    return False


async def read_operation(
    request: AsyncHTTPRequestAdapter, persisted: PersistedOperations | None = None
) -> GraphQLRequestData:
    """The operation a GET or POST request carries, its document resolved from a persisted
    id (``api.persisted``); raises RequestError when it is not one."""
    return operation(await _resolved(await _decoded(request), persisted))


async def _resolved(data: Any, persisted: PersistedOperations | None) -> Any:
    if persisted is None:
        return data
    try:
        return await persisted.resolve(data)
    except Refused as refused:
        raise RequestError(refused.status, refused.message, code=refused.code) from None


async def _decoded(request: AsyncHTTPRequestAdapter) -> Any:
    if request.method == "GET":
        data: Any = {}
        for key in ("query", "operationName", "documentId"):
            if (value := request.query_params.get(key)) is not None:
                data[key] = value
        for key in ("variables", "extensions"):
            value = request.query_params.get(key)
            if isinstance(value, str) and value:
                data[key] = decode_json(value, f"the `{key}` parameter")
        return data
    media, params = parse_content_type(request.content_type or "")
    if media != APPLICATION_JSON:
        raise RequestError(
            415,
            f"send the operation as {APPLICATION_JSON} (this request is "
            f"{media or 'without a content type'})",
            headers={"Accept": APPLICATION_JSON},
        )
    charset = params.get("charset", "utf-8").lower()
    if charset not in ("utf-8", "utf8"):
        raise RequestError(415, f"send JSON in UTF-8 (charset={charset} is not supported)")
    return decode_json(await request.get_body())


def operation(data: Any) -> GraphQLRequestData:
    """Check the shape of a decoded request (the spec's GraphQL-over-HTTP request)."""
    if isinstance(data, list):
        raise RequestError(
            400, "batched operations (a JSON array) are not supported: send one per request"
        )
    if not isinstance(data, dict):
        raise RequestError(
            400,
            "the request body must be a JSON object with `query` (and optionally "
            f"`variables`, `operationName`, `extensions`), not {_json_type(data)}",
        )
    query = data.get("query")
    if query is None or query == "":
        raise RequestError(400, "the request has no `query`: send the GraphQL document")
    if not isinstance(query, str):
        raise RequestError(400, f"`query` must be a string, not {_json_type(query)}")
    for key in ("variables", "extensions"):
        value = data.get(key)
        if value is not None and not isinstance(value, dict):
            raise RequestError(400, f"`{key}` must be an object or null, not {_json_type(value)}")
    name = data.get("operationName")
    if name is not None and not isinstance(name, str):
        raise RequestError(400, f"`operationName` must be a string or null, not {_json_type(name)}")
    return GraphQLRequestData(
        query=query,
        variables=data.get("variables"),
        operation_name=name,
        extensions=data.get("extensions"),
    )


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def error_response(error: RequestError, request_id: str | None, media_type: str) -> Response:
    """A request error as GraphQL JSON."""
    extensions: dict[str, Any] = dict(error.extensions)
    if request_id:
        extensions["requestId"] = request_id
    return Response(
        error_body(error.code, error.message, **extensions),
        status_code=error.status,
        media_type=media_type,
        headers=error.headers,
    )
