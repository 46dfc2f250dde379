"""The one settings object: the database settings plus what the HTTP layer reads."""

from __future__ import annotations

from functools import lru_cache

from pydantic import Field

from db.settings import DatabaseSettings


class Settings(DatabaseSettings):
    """All configuration, from environment variables (names are the field names, upper-case)."""

    taskql_host: str = "127.0.0.1"
    taskql_port: int = Field(default=8000, ge=1, le=65535)
    #: uvicorn worker processes; more than one needs an external DATABASE_URL or shares the
    #: embedded server started by the parent.
    taskql_workers: int = Field(default=1, ge=1)
    #: Load the demo data at start-up (default: only on the embedded server).
    taskql_demo: bool | None = None
    taskql_log_level: str = "info"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
