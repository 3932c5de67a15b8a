"""API tokens for other systems calling the JSON API (`Authorization: Bearer sims_...`).

A token is `sims_` + 32 random bytes (url-safe base64), shown once when it is made. Only its SHA-256
(enough for a high-entropy secret: nothing to brute-force) is kept, in the KV bucket `sims_api_tokens`
(created on first use): `h.<sha256 hex>` -> the token's record (name, scopes, created, last used,
revoked), `n.<name>` -> the hash, so a name can be listed and revoked without the token.

Scopes: `read` (GET under /api/), `raise` (POST /api/incidents and POST /api/preview), `write`
(every POST under /api/). A token may hold several.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
import time
from dataclasses import asdict, dataclass, replace
from enum import StrEnum
from typing import Any

TOKENS_BUCKET = "sims_api_tokens"
PREFIX = "sims_"
NAME = re.compile(r"^[a-z0-9]+(?:[._-][a-z0-9]+)*$")
LAST_USED_EVERY = 60.0  # seconds: `last_used_at` is written at most this often per token (KV writes are fsynced)
RAISE_PATHS = frozenset({"/api/incidents", "/api/preview"})


class Scope(StrEnum):
    READ = "read"
    RAISE = "raise"
    WRITE = "write"


def new_token() -> str:
    """A fresh random token (shown once, never stored)."""
    return PREFIX + secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def looks_like_token(token: str) -> bool:
    return token.startswith(PREFIX) and 20 <= len(token) <= 200


def needed_scopes(method: str, path: str) -> frozenset[Scope]:
    """The scopes any one of which allows `method path` (empty: no API token can)."""
    if not (path == "/api" or path.startswith("/api/")):
        return frozenset()
    method = method.upper()
    if method in ("GET", "HEAD"):
        return frozenset({Scope.READ})
    if method == "POST":
        return frozenset({Scope.WRITE, Scope.RAISE}) if path.rstrip("/") in RAISE_PATHS else frozenset({Scope.WRITE})
    return frozenset()


def allows(scopes: list[str] | frozenset[str] | tuple[str, ...], method: str, path: str) -> bool:
    return bool(needed_scopes(method, path) & {s for s in scopes})


def name_problems(name: str) -> list[str]:
    if not 2 <= len(name) <= 64 or not NAME.match(name):
        return ["Name must be 2 to 64 lower-case letters or digits, optionally joined by . _ or -"]
    return []


class TokenExists(Exception):
    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(f"an API token named {name!r} already exists (revoke it, or choose another name)")


class TokenNotFound(Exception):
    def __init__(self, name: str) -> None:
        super().__init__(f"no API token named {name!r}")


@dataclass(frozen=True, slots=True, kw_only=True)
class ApiToken:
    name: str
    scopes: tuple[str, ...]
    created_at: float
    created_by: str
    last_used_at: float | None = None
    revoked_at: float | None = None
    revoked_by: str | None = None

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None

    def to_json(self) -> bytes:
        return json.dumps({**asdict(self), "scopes": list(self.scopes)}).encode()

    @classmethod
    def from_json(cls, data: bytes) -> ApiToken:
        raw = json.loads(data)
        return cls(**{**raw, "scopes": tuple(raw.get("scopes", ()))})


class TokenStore:
    """Token records in KV `sims_api_tokens`, keyed by the token's hash; created the first time needed."""

    def __init__(self, js: Any, replicas: int = 1) -> None:
        self.js, self.replicas = js, replicas
        self._kv: Any = None
        self._touched: dict[str, float] = {}

    async def _bucket(self) -> Any:
        if self._kv is None:
            from nats.js.api import KeyValueConfig, StorageType
            from nats.js.errors import BucketNotFoundError

            try:
                self._kv = await self.js.key_value(TOKENS_BUCKET)
            except BucketNotFoundError:
                self._kv = await self.js.create_key_value(KeyValueConfig(
                    bucket=TOKENS_BUCKET, history=5, replicas=self.replicas, storage=StorageType.FILE))
        return self._kv

    async def _get(self, key: str) -> bytes | None:
        from nats.js.errors import KeyNotFoundError

        from sims.adapters.jetstream import retrying

        try:
            kv = await self._bucket()
            entry = await retrying(lambda: kv.get(key))  # through a leader election
        except KeyNotFoundError:
            return None
        return entry.value or None

    async def add(self, name: str, scopes: list[str], by: str) -> tuple[str, ApiToken]:
        """A new token for `name` (returned once) and its record; ValueError says what is wrong."""
        problems = name_problems(name)
        wanted = sorted(set(scopes))
        if not wanted:
            problems.append("Give at least one --scope: read, raise or write")
        bad = [s for s in wanted if s not in {x.value for x in Scope}]
        if bad:
            problems.append(f"Unknown scope {', '.join(bad)}: use read, raise or write")
        if problems:
            raise ValueError("; ".join(problems))
        from nats.js.errors import BadRequestError, KeyWrongLastSequenceError

        token = new_token()
        digest = hash_token(token)
        record = ApiToken(name=name, scopes=tuple(wanted), created_at=time.time(), created_by=by)
        kv = await self._bucket()
        try:
            await kv.create(f"n.{name}", digest.encode())
        except (KeyWrongLastSequenceError, BadRequestError) as exc:
            old = await self._get(f"n.{name}")
            previous = await self._get(f"h.{old.decode()}") if old else None
            if previous is None or not ApiToken.from_json(previous).revoked:
                raise TokenExists(name) from exc
            await kv.put(f"n.{name}", digest.encode())  # a revoked token's name may be used again
        await kv.put(f"h.{digest}", record.to_json())
        return token, record

    async def verify(self, token: str) -> ApiToken | None:
        """The record of a presented token (revoked ones included: the caller says why it refuses)."""
        if not looks_like_token(token):
            return None
        digest = hash_token(token)
        data = await self._get(f"h.{digest}")
        if data is None:
            return None
        return ApiToken.from_json(data)  # the key is the hash: finding it is the check

    async def touch(self, token: str, record: ApiToken) -> None:
        """Record the use (at most once a minute per token, from this process)."""
        digest, now = hash_token(token), time.time()
        if now - self._touched.get(digest, 0.0) < LAST_USED_EVERY:
            return
        self._touched[digest] = now
        if len(self._touched) > 10_000:
            self._touched.clear()
        current = await self._get(f"h.{digest}")
        if current is not None:
            fresh = ApiToken.from_json(current)
            if not fresh.revoked:
                from sims.adapters.jetstream import retrying

                kv = await self._bucket()
                await retrying(lambda: kv.put(f"h.{digest}", replace(fresh, last_used_at=now).to_json()))

    async def all(self) -> list[ApiToken]:
        kv = await self._bucket()
        try:
            keys = await kv.keys()
        except Exception as exc:  # nats-py raises NoKeysError for an empty bucket
            if type(exc).__name__ == "NoKeysError":
                return []
            raise
        found = [await self._get(k) for k in keys if k.startswith("h.")]
        return sorted((ApiToken.from_json(d) for d in found if d), key=lambda t: (t.name, t.created_at))

    async def revoke(self, name: str, by: str) -> ApiToken:
        digest = await self._get(f"n.{name}") if not name_problems(name) else None
        if digest is None:
            raise TokenNotFound(name)
        data = await self._get(f"h.{digest.decode()}")
        if data is None:
            raise TokenNotFound(name)
        record = ApiToken.from_json(data)
        if record.revoked:
            return record
        revoked = replace(record, revoked_at=time.time(), revoked_by=by)
        await (await self._bucket()).put(f"h.{digest.decode()}", revoked.to_json())
        return revoked


__all__ = ["Scope", "new_token", "hash_token", "needed_scopes", "allows", "TokenStore", "ApiToken", "TokenExists",
           "TokenNotFound", "TOKENS_BUCKET", "name_problems"]
