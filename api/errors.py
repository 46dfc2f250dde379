"""Error codes, the GraphQL errors we raise on purpose, and the HTTP-level error body.

Every error a client sees carries ``extensions.code``: one of CODES. Expected failures of a
mutation are typed payload errors (``api.types.errors``); these exceptions are for queries
and for requests refused before execution.
"""

from __future__ import annotations

import json
from typing import Any

from graphql import GraphQLError

UNAUTHENTICATED = "UNAUTHENTICATED"
FORBIDDEN = "FORBIDDEN"
NOT_FOUND = "NOT_FOUND"
BAD_USER_INPUT = "BAD_USER_INPUT"
CONFLICT = "CONFLICT"
RATE_LIMITED = "RATE_LIMITED"
#: A statement ran over the request's statement timeout (or a lock wait over the lock timeout).
TIMEOUT = "TIMEOUT"
#: A mutation payload of an operation that was rolled back because another part failed.
ROLLED_BACK = "ROLLED_BACK"
#: A store the request needs (the database, the rate-limit counters) is not answering.
SERVICE_UNAVAILABLE = "SERVICE_UNAVAILABLE"
INTERNAL_SERVER_ERROR = "INTERNAL_SERVER_ERROR"
#: Persisted operations (api.persisted): an id nobody stored (404, Apollo's code), a
#: protocol version this server does not speak, a document outside the trusted manifest.
PERSISTED_QUERY_NOT_FOUND = "PERSISTED_QUERY_NOT_FOUND"
PERSISTED_QUERY_NOT_SUPPORTED = "PERSISTED_QUERY_NOT_SUPPORTED"
PERSISTED_QUERY_NOT_IN_LIST = "PERSISTED_QUERY_NOT_IN_LIST"
CODES = (
    UNAUTHENTICATED,
    FORBIDDEN,
    NOT_FOUND,
    BAD_USER_INPUT,
    CONFLICT,
    RATE_LIMITED,
    TIMEOUT,
    ROLLED_BACK,
    SERVICE_UNAVAILABLE,
    INTERNAL_SERVER_ERROR,
    PERSISTED_QUERY_NOT_FOUND,
    PERSISTED_QUERY_NOT_SUPPORTED,
    PERSISTED_QUERY_NOT_IN_LIST,
)


class ApiError(GraphQLError):
    """An expected error, shown to the client as it is, with its code."""

    code = INTERNAL_SERVER_ERROR

    def __init__(self, message: str, **extensions: Any) -> None:
        super().__init__(message, extensions={"code": self.code, **extensions})


class Unauthenticated(ApiError):
    """The request needs a valid bearer token."""

    code = UNAUTHENTICATED


class Forbidden(ApiError):
    """The caller's role does not allow this."""

    code = FORBIDDEN


class NotFound(ApiError):
    """No such object in the caller's tenant."""

    code = NOT_FOUND


class BadUserInput(ApiError):
    """An argument is malformed or out of range."""

    code = BAD_USER_INPUT


class RateLimited(ApiError):
    """Too many attempts; retry later."""

    code = RATE_LIMITED


class Timeout(ApiError):
    """A statement was cancelled by a timeout; the extensions name the limit."""

    code = TIMEOUT


class ServiceUnavailable(ApiError):
    """A store the request needs is not answering; retry later."""

    code = SERVICE_UNAVAILABLE


def error_body(code: str, message: str, **extensions: Any) -> bytes:
    """The GraphQL JSON body of a request error: one raised before GraphQL runs (400, 401,
    403, 405, 413, 415, 503). As GraphQL over HTTP says, it has no ``data`` entry."""
    return json.dumps(
        {"errors": [{"message": message, "extensions": {"code": code, **extensions}}]}
    ).encode()
