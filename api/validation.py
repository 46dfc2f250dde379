"""Input checks done before the database is asked, so errors name the field. The database
constraints (docs/architecture/database.md) still hold on their own."""

from __future__ import annotations

import re

from db.text import has_visible_text

EMAIL = re.compile(
    r"^[A-Za-z0-9._%+'-]+@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*\.[A-Za-z]{2,}$"
)
SLUG = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")
MIN_PASSWORD = 10
MAX_PASSWORD = 256
#: Tasks one `createTasks` call may create.
MAX_BULK_TASKS = 1000


def email_problem(email: str) -> str | None:
    if (
        len(email) > 254
        or not EMAIL.match(email)
        or ".." in email
        or email.startswith(".")
        or ".@" in email
    ):
        return "not a valid e-mail address"
    return None


def password_problem(password: str) -> str | None:
    if len(password) < MIN_PASSWORD:
        return f"use at least {MIN_PASSWORD} characters"
    if len(password) > MAX_PASSWORD:
        return f"use at most {MAX_PASSWORD} characters"
    return None


def text_problem(value: str, limit: int) -> str | None:
    if not has_visible_text(value):
        return "must not be blank"
    if len(value) > limit:
        return f"must be at most {limit} characters"
    return None


def slug_problem(slug: str) -> str | None:
    if not SLUG.match(slug):
        return "use 1-63 lower-case letters, digits and inner hyphens"
    return None
