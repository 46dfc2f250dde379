"""Expected mutation failures, typed in the schema: every payload has ``errors``."""

from __future__ import annotations

import strawberry

from api import errors


@strawberry.interface(description="Why a mutation did not happen. Nothing was written.")
class UserError:
    message: str
    code: str = strawberry.field(
        description="UNAUTHENTICATED, FORBIDDEN, NOT_FOUND, BAD_USER_INPUT, CONFLICT, RATE_LIMITED or ROLLED_BACK."
    )
    path: list[str] = strawberry.field(description='Where in the input, e.g. ["input", "title"].')


@strawberry.type(description="An input value is invalid.")
class ValidationError(UserError):
    pass


@strawberry.type(description="An object the input names does not exist in this organization.")
class NotFoundError(UserError):
    pass


@strawberry.type(
    description="The change conflicts with existing data (duplicate, last owner, ...)."
)
class ConflictError(UserError):
    pass


@strawberry.type(description="Your role does not allow this.")
class ForbiddenError(UserError):
    required_role: str | None = None


@strawberry.type(description="The move would make a task its own ancestor.")
class CycleError(UserError):
    pass


@strawberry.type(description="Too many attempts; try again later.")
class RateLimitedError(UserError):
    retry_after_seconds: int


@strawberry.type(
    description="This mutation did its part, but another mutation of the same operation "
    "failed, so the whole operation was rolled back: nothing of it was written."
)
class RolledBackError(UserError):
    pass


@strawberry.type(description="Log in first.")
class UnauthenticatedError(UserError):
    pass


def validation(message: str, *path: str) -> ValidationError:
    return ValidationError(message=message, code=errors.BAD_USER_INPUT, path=["input", *path])


def not_found(message: str, *path: str) -> NotFoundError:
    return NotFoundError(message=message, code=errors.NOT_FOUND, path=["input", *path])


def conflict(message: str, *path: str) -> ConflictError:
    return ConflictError(message=message, code=errors.CONFLICT, path=["input", *path])


def forbidden(message: str, required_role: str | None = None) -> ForbiddenError:
    return ForbiddenError(
        message=message, code=errors.FORBIDDEN, path=[], required_role=required_role
    )


def cycle(message: str, *path: str) -> CycleError:
    return CycleError(message=message, code=errors.BAD_USER_INPUT, path=["input", *path])


ALL = (
    RolledBackError,
    ValidationError,
    NotFoundError,
    ConflictError,
    ForbiddenError,
    CycleError,
    RateLimitedError,
    UnauthenticatedError,
)
