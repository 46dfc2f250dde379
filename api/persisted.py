"""Persisted operations: trusted documents (an operator's manifest) and automatic persisted
queries (Apollo's protocol), resolved into the document a request runs before either read
path sees it (``api.http.read_operation``), so the compiled path and the resolvers run the
same text, parsed, validated and planned once (their caches are keyed by it).

- **Trusted documents** (``TASKQL_TRUSTED_DOCUMENTS``): a JSON manifest of id → document as
  GraphQL Codegen's client preset (``persisted-documents.json``) and Relay
  (``persisted_queries.json``) write it, or Apollo's ``persisted-query-manifest.json``
  (``{"format": "apollo-persisted-query-manifest", "operations": [{"id", "body"}]}``).
  It is re-read when the file changes (checked at most once a second, by modification
  time, size and inode, so an atomic rename is seen); a manifest that does not load leaves
  the previous one in force. With ``TASKQL_TRUSTED_DOCUMENTS_ONLY`` nothing else runs: an
  unknown id or a document outside the manifest is a 400 ``PERSISTED_QUERY_NOT_IN_LIST``.
- **Automatic persisted queries** (``TASKQL_PERSISTED_QUERIES``, on by default):
  ``extensions.persistedQuery = {version: 1, sha256Hash}``. A hash alone runs the document
  stored under it, or answers 404 ``PERSISTED_QUERY_NOT_FOUND`` (message
  ``PersistedQueryNotFound``, which clients match); the hash with ``query`` is checked
  against the text (400 when it differs) and stores it. The store is bounded: an LRU in
  process memory by entries and bytes, and with ``REDIS_URL`` Redis behind it (keys with a
  TTL) so every worker knows what any worker stored.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from api.errors import (
    BAD_USER_INPUT,
    PERSISTED_QUERY_NOT_FOUND,
    PERSISTED_QUERY_NOT_IN_LIST,
    PERSISTED_QUERY_NOT_SUPPORTED,
)
from api.logs import RateLimitedLog
from api.settings import Settings

_log = logging.getLogger("taskql")
_redis_log = RateLimitedLog(_log)

_SHA256 = re.compile(r"[0-9a-f]{64}")
APOLLO_MANIFEST = "apollo-persisted-query-manifest"


class Refused(Exception):
    """A persisted-operation request refused: status, code and message (``api.http``)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def sha256(document: str) -> str:
    return hashlib.sha256(document.encode("utf-8")).hexdigest()


def _bare(document_id: str) -> str:
    """``sha256:<hex>`` (GraphQL over HTTP's document ids) and ``<hex>`` name the same one."""
    return document_id.removeprefix("sha256:")


def parse_manifest(raw: bytes) -> dict[str, str]:
    """id → document from a manifest's bytes; raises ValueError naming what is wrong."""
    try:
        value = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"not JSON in UTF-8: {exc}") from None
    documents: dict[str, str] = {}
    if isinstance(value, dict) and value.get("format") == APOLLO_MANIFEST:
        operations = value.get("operations")
        if value.get("version") != 1 or not isinstance(operations, list):
            raise ValueError("an Apollo manifest needs version 1 and an `operations` list")
        for entry in operations:
            if not (
                isinstance(entry, dict)
                and isinstance(entry.get("id"), str)
                and isinstance(entry.get("body"), str)
            ):
                raise ValueError("every Apollo manifest operation needs a string `id` and `body`")
            documents[_bare(entry["id"])] = entry["body"]
    elif isinstance(value, dict):
        for key, document in value.items():
            if not isinstance(document, str) or not document.strip():
                raise ValueError(f"the document of {key!r} is not a non-empty string")
            documents[_bare(key)] = document
    else:
        raise ValueError("a manifest is a JSON object of id → document, or Apollo's manifest")
    return documents


class TrustedDocuments:
    """The operator's manifest, re-read when its file changes."""

    def __init__(self, path: Path, check_every: float = 1.0) -> None:
        self.path = path
        self.check_every = check_every
        self.documents: dict[str, str] = {}
        self._bodies: frozenset[str] = frozenset()
        self._stamp: tuple[int, int, int] | None = None
        self._checked = 0.0
        self.loads = 0
        self._load(self._stat())  # a manifest that does not load at start is fatal

    def _stat(self) -> tuple[int, int, int]:
        info = os.stat(self.path)
        return (info.st_mtime_ns, info.st_size, info.st_ino)

    def _load(self, stamp: tuple[int, int, int]) -> None:
        try:
            documents = parse_manifest(self.path.read_bytes())
        except ValueError as exc:
            raise ValueError(f"trusted documents {self.path}: {exc}") from None
        self.documents = documents
        self._bodies = frozenset(sha256(d) for d in documents.values())
        self._stamp = stamp
        self.loads += 1
        _log.info("trusted documents: %d loaded from %s", len(documents), self.path)

    def refresh(self, force: bool = False) -> None:
        """Re-read the manifest if its file changed (at most once per ``check_every``)."""
        now = time.monotonic()
        if not force and now - self._checked < self.check_every:
            return
        self._checked = now
        try:
            stamp = self._stat()
            if stamp != self._stamp:
                self._load(stamp)
        except (OSError, ValueError) as exc:
            _log.error("trusted documents not reloaded, the previous ones stay: %s", exc)

    def lookup(self, document_id: str) -> str | None:
        self.refresh()
        return self.documents.get(_bare(document_id))

    def allows(self, document: str) -> bool:
        self.refresh()
        return sha256(document) in self._bodies


class MemoryStore:
    """An LRU of hash → document, bounded by entries and by the documents' bytes."""

    def __init__(self, max_entries: int, max_bytes: int) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.bytes = 0
        self._documents: OrderedDict[str, str] = OrderedDict()

    def __len__(self) -> int:
        return len(self._documents)

    def get(self, key: str) -> str | None:
        document = self._documents.get(key)
        if document is not None:
            self._documents.move_to_end(key)
        return document

    def put(self, key: str, document: str) -> None:
        size = len(document.encode("utf-8"))
        if size > self.max_bytes:
            return
        old = self._documents.pop(key, None)
        if old is not None:
            self.bytes -= len(old.encode("utf-8"))
        self._documents[key] = document
        self.bytes += size
        while len(self._documents) > self.max_entries or self.bytes > self.max_bytes:
            _, evicted = self._documents.popitem(last=False)
            self.bytes -= len(evicted.encode("utf-8"))


class RedisStore:
    """Redis behind a process LRU: what one worker stored, every worker finds. Keys expire
    after ``TASKQL_PERSISTED_QUERIES_TTL_SECONDS`` (Redis's own maxmemory policy bounds the
    rest). Redis not answering is a miss (the client sends the document again), logged."""

    def __init__(self, url: str, prefix: str, ttl: int, local: MemoryStore) -> None:
        import redis.asyncio

        self.client = redis.asyncio.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
        self.prefix = f"{prefix}:apq:"
        self.ttl = ttl
        self.local = local

    async def get(self, key: str) -> str | None:
        import redis

        found = self.local.get(key)
        if found is not None:
            return found
        try:
            raw = await self.client.get(self.prefix + key)
        except (redis.RedisError, OSError) as exc:
            _redis_log.error("redis:apq", "persisted queries: Redis not answering: %s", exc)
            return None
        if raw is None:
            return None
        document = raw.decode("utf-8") if isinstance(raw, bytes) else str(raw)
        if sha256(document) != key:  # never run what the hash does not name
            return None
        self.local.put(key, document)
        return document

    async def put(self, key: str, document: str) -> None:
        import redis

        self.local.put(key, document)
        try:
            await self.client.set(self.prefix + key, document, ex=self.ttl)
        except (redis.RedisError, OSError) as exc:
            _redis_log.error("redis:apq", "persisted queries: Redis not answering: %s", exc)

    async def close(self) -> None:
        await self.client.aclose()


@dataclass
class _Local:
    store: MemoryStore

    async def get(self, key: str) -> str | None:
        return self.store.get(key)

    async def put(self, key: str, document: str) -> None:
        self.store.put(key, document)

    async def close(self) -> None:
        return None


class PersistedOperations:
    """Resolves the document of a decoded GraphQL-over-HTTP request (``resolve``)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.trusted = (
            TrustedDocuments(settings.taskql_trusted_documents)
            if settings.taskql_trusted_documents is not None
            else None
        )
        self.only_trusted = settings.taskql_trusted_documents_only
        self.automatic = settings.taskql_persisted_queries
        self.local = MemoryStore(
            settings.taskql_persisted_queries_max_entries,
            settings.taskql_persisted_queries_max_bytes,
        )
        self.store: RedisStore | _Local = (
            RedisStore(
                settings.redis_url,
                settings.taskql_rate_limit_prefix,
                settings.taskql_persisted_queries_ttl_seconds,
                self.local,
            )
            if settings.redis_url
            else _Local(self.local)
        )

    async def close(self) -> None:
        await self.store.close()

    def _trusted(self, document: str) -> bool:
        return self.trusted is not None and self.trusted.allows(document)

    def _not_in_list(self, what: str) -> Refused:
        return Refused(
            400,
            PERSISTED_QUERY_NOT_IN_LIST,
            f"{what} is not among this server's trusted documents: only those run here",
        )

    async def resolve(self, data: Any) -> Any:
        """The request with its ``query`` filled from its persisted id, checked against the
        trusted-documents mode. ``data`` is the decoded request (not yet shape-checked:
        ``api.http.operation`` does that after). Raises Refused."""
        if not isinstance(data, dict):
            return data
        query = data.get("query")
        extensions = data.get("extensions")
        persisted = extensions.get("persistedQuery") if isinstance(extensions, dict) else None
        document_id = data.get("documentId")
        if persisted is not None:
            return await self._automatic(data, query, persisted)
        if document_id is not None:
            if not isinstance(document_id, str) or not document_id:
                raise Refused(400, BAD_USER_INPUT, "`documentId` must be a non-empty string")
            if query is not None:
                raise Refused(400, BAD_USER_INPUT, "send `documentId` or `query`, not both")
            found = self.trusted.lookup(document_id) if self.trusted is not None else None
            if found is None and not self.only_trusted and self.automatic:
                bare = _bare(document_id)
                found = await self.store.get(bare) if _SHA256.fullmatch(bare) else None
            if found is None:
                if self.only_trusted:
                    raise self._not_in_list(f"document {document_id[:80]!r}")
                raise Refused(404, PERSISTED_QUERY_NOT_FOUND, "PersistedQueryNotFound")
            return {**data, "query": found}
        if self.only_trusted and isinstance(query, str) and query and not self._trusted(query):
            raise self._not_in_list("this document")
        return data

    async def _automatic(self, data: dict[str, Any], query: Any, persisted: Any) -> Any:
        if not isinstance(persisted, dict) or persisted.get("version") != 1:
            raise Refused(
                400,
                PERSISTED_QUERY_NOT_SUPPORTED,
                "PersistedQueryNotSupported: only `persistedQuery` version 1 is supported",
            )
        key = persisted.get("sha256Hash")
        if not isinstance(key, str) or not _SHA256.fullmatch(key):
            raise Refused(
                400, BAD_USER_INPUT, "`persistedQuery.sha256Hash` must be 64 lowercase hex digits"
            )
        if isinstance(query, str) and query:
            if sha256(query) != key:
                raise Refused(
                    400, BAD_USER_INPUT, "`persistedQuery.sha256Hash` is not the query's SHA-256"
                )
            if self._trusted(query):
                return data
            if self.only_trusted:
                raise self._not_in_list("this document")
            if not self.automatic:
                raise Refused(400, PERSISTED_QUERY_NOT_SUPPORTED, "PersistedQueryNotSupported")
            await self.store.put(key, query)
            return data
        if query is not None and not isinstance(query, str):
            return data  # api.http reports the bad `query`
        found = self.trusted.lookup(key) if self.trusted is not None else None
        if found is None and self.only_trusted:
            raise self._not_in_list(f"document {key!r}")
        if found is None and self.automatic:
            found = await self.store.get(key)
        if found is None:
            if not self.automatic:
                raise Refused(400, PERSISTED_QUERY_NOT_SUPPORTED, "PersistedQueryNotSupported")
            raise Refused(404, PERSISTED_QUERY_NOT_FOUND, "PersistedQueryNotFound")
        return {**data, "query": found}
