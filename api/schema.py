"""The GraphQL schema: queries and mutations merged by domain, with the operation limits."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import strawberry
from graphql import GraphQLError
from strawberry.extensions import (
    AddValidationRules,
    MaxAliasesLimiter,
    MaxTokensLimiter,
    ParserCache,
    QueryDepthLimiter,
    ValidationCache,
)
from strawberry.tools import merge_types
from strawberry.types import ExecutionContext

from api import inputs
from api.extensions import (
    CheckedExecutionContext,
    Observe,
    OperationLimits,
    OperationTransaction,
    SqlStatements,
)
from api.mutations.auth import AuthMutations
from api.mutations.comments import CommentMutations
from api.mutations.invitations import InvitationMutations
from api.mutations.organizations import OrganizationMutations
from api.mutations.projects import ProjectMutations
from api.mutations.tasks import TaskMutations
from api.queries import Query
from api.settings import Settings, get_settings
from api.subscriptions import (
    CommentChange,
    MembershipChange,
    ProjectChange,
    Subscription,
    TaskChange,
)
from api.types import errors as error_types
from api.types.comments import Comment
from api.types.invitations import Invitation
from api.types.organizations import Organization
from api.types.projects import Project
from api.types.tasks import Task
from api.types.users import Member, User


class CheckedValidationCache(ValidationCache):
    """Strawberry's validation cache, which does not validate (nor overwrite the error of) a
    document that ``OperationLimits`` already refused."""

    def on_validate(self) -> Iterator[None]:
        if self.execution_context.pre_execution_errors is not None:
            yield
            return
        yield from super().on_validate()


class Schema(strawberry.Schema):
    """Strawberry's schema, without its error log: ``Schema.process_errors`` wrote every
    error (a client's typo too) at ERROR with a traceback. Errors are logged once, with
    their code and request id, where they get it (``api.extensions.coded_errors``)."""

    def process_errors(
        self, errors: list[GraphQLError], execution_context: ExecutionContext | None = None
    ) -> None:
        return None


Mutation = merge_types(
    "Mutation",
    (
        AuthMutations,
        OrganizationMutations,
        InvitationMutations,
        ProjectMutations,
        TaskMutations,
        CommentMutations,
    ),
)


def build_schema(settings: Settings | None = None) -> strawberry.Schema:
    settings = settings or get_settings()
    # The depth and alias limits are validation rules. Built ONCE: QueryDepthLimiter and
    # MaxAliasesLimiter create new rule classes per instance, and the validation cache is
    # keyed by the rules too, so a limiter made per request made every validation a miss
    # (3 ms a request for search, and a cache filling with one entry per request).
    limits = [
        *QueryDepthLimiter(max_depth=settings.taskql_max_depth).validation_rules,
        *MaxAliasesLimiter(max_alias_count=settings.taskql_max_aliases).validation_rules,
    ]
    return Schema(
        # The node cost and string maxima on the variables execution uses (coerced once).
        execution_context_class=CheckedExecutionContext,
        query=Query,
        mutation=Mutation,
        subscription=Subscription,
        types=[
            User,
            Member,
            Invitation,
            Organization,
            Project,
            Task,
            Comment,
            TaskChange,
            CommentChange,
            ProjectChange,
            MembershipChange,
            *error_types.ALL,
        ],
        # Times outside what PostgreSQL stores as themselves are refused (api.inputs).
        scalar_overrides={datetime: inputs.DATE_TIME},
        extensions=[
            # Parsing and validating the same document again is wasted work: both are cached
            # (the node limit depends on variables, so it is checked at execution instead).
            lambda: ParserCache(maxsize=1000),
            # Before validation (the document's bounds) and before the transaction opens (the
            # node cost).
            lambda: OperationLimits(settings),
            lambda: CheckedValidationCache(maxsize=1000),
            lambda: AddValidationRules(limits),
            lambda: MaxTokensLimiter(max_token_count=settings.taskql_max_tokens),
            OperationTransaction,
            SqlStatements,
            Observe,
        ],
    )


schema = build_schema()

#: The exported SDL, for client tooling and review; a test fails when it is stale.
SDL_PATH = Path(__file__).resolve().parent.parent / "schema.graphql"


def sdl() -> str:
    return str(schema) + "\n"
