"""Which database a request's transaction opens on: a read replica or the primary.

The middleware opens the transaction (authentication is its first statement) before GraphQL
runs, so it decides from the body it has already buffered: an operation that is certainly a
query may go to a replica (``db.replicas``); anything else (a mutation, a document that does
not parse, an ambiguous operation name, a body that is not a GraphQL request) goes to the
primary, where it is answered or refused as before. Never guess "read" when unsure.

Read-your-writes: after a committed mutation the response carries the primary's WAL position
in ``X-Taskql-Lsn`` and in a ``taskql_lsn`` cookie; a request that sends either back (the
header wins) is served by a replica only once that replica has replayed it.
"""

from __future__ import annotations

import json
from functools import lru_cache

from graphql import GraphQLError, OperationDefinitionNode, OperationType, parse

from db.replicas import parse_lsn

LSN_HEADER = "x-taskql-lsn"
LSN_COOKIE = "taskql_lsn"
#: Documents longer than this are parsed every time (not cached): clients send few of them.
_CACHED_DOCUMENT_CHARS = 20_000


@lru_cache(maxsize=512)
def _operations(document: str) -> tuple[tuple[str | None, OperationType], ...] | None:
    try:
        parsed = parse(document, no_location=True)
    except GraphQLError:
        return None
    return tuple(
        (d.name.value if d.name else None, d.operation)
        for d in parsed.definitions
        if isinstance(d, OperationDefinitionNode)
    )


def operation_types(document: str) -> tuple[tuple[str | None, OperationType], ...] | None:
    """The (name, type) of every operation in ``document``; None if it does not parse."""
    if len(document) > _CACHED_DOCUMENT_CHARS:
        return _operations.__wrapped__(document)
    return _operations(document)


def is_query(document: str, operation_name: str | None) -> bool:
    """True when the operation GraphQL will run is certainly a query."""
    operations = operation_types(document)
    if not operations:
        return False
    if operation_name is None:
        return len(operations) == 1 and operations[0][1] is OperationType.QUERY
    chosen = [kind for name, kind in operations if name == operation_name]
    return len(chosen) == 1 and chosen[0] is OperationType.QUERY


def read_only(method: str, body: bytes) -> bool:
    """A GET (queries only: a mutation over GET is refused with 405 before anything runs) or
    a POSTed JSON request whose operation is a query."""
    if method == "GET":
        return True
    if method != "POST":
        return False
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return False
    if not isinstance(data, dict):
        return False
    query, name = data.get("query"), data.get("operationName")
    if not isinstance(query, str) or not (name is None or isinstance(name, str)):
        return False
    return is_query(query, name)


def client_lsn(headers: list[tuple[bytes, bytes]]) -> int | None:
    """The commit position the client last saw (header, else cookie; from the ASGI scope's
    headers); None if none or garbled (a value taskql never sent: it cannot make another
    client read stale data, only this one)."""
    value = None
    cookies = []
    for key, raw in headers:
        name = key.lower()
        if name == b"x-taskql-lsn":
            value = raw.decode("latin-1")
        elif name == b"cookie":
            cookies.append(raw.decode("latin-1"))
    if value is None:
        for part in ";".join(cookies).split(";"):
            name_, _, cookie = part.strip().partition("=")
            if name_ == LSN_COOKIE:
                value = cookie
                break
    if not value:
        return None
    try:
        return parse_lsn(value)
    except ValueError:
        return None


def lsn_headers(lsn: str, max_age: int) -> list[tuple[bytes, bytes]]:
    """What a response to a committed mutation carries."""
    cookie = f"{LSN_COOKIE}={lsn}; Max-Age={max_age}; Path=/graphql; HttpOnly; SameSite=Lax"
    return [(LSN_HEADER.encode(), lsn.encode()), (b"set-cookie", cookie.encode())]
