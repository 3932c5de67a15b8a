"""Staff sign-in for the console: argon2 password hashes, signed expiring sessions, CSRF, rate limits.

Users live in the KV bucket `sims_users` (created on first use). A session is a signed cookie, not a
server record: `payload.hmac`, keyed by a key derived from the link secret, and it dies at its expiry
or when the user signs out everywhere (`valid_after` on the user record).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import re
import secrets
import time
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

USERS_BUCKET = "sims_users"
SESSION_TTL = 12 * 3600.0  # one duty shift
USERNAME = re.compile(r"^[a-z0-9]+(?:[._-][a-z0-9]+)*$")
MIN_PASSWORD, MAX_PASSWORD = 12, 256


class Role(StrEnum):
    VIEWER = "viewer"
    DUTY_OFFICER = "duty_officer"
    ADMIN = "admin"


class Need(StrEnum):
    """What a console route needs: to see, to act on incidents, or to manage users."""

    VIEW = "view"
    ACT = "act"
    ADMIN = "admin"


ALLOWED: dict[Role, frozenset[Need]] = {
    Role.VIEWER: frozenset({Need.VIEW}),
    Role.DUTY_OFFICER: frozenset({Need.VIEW, Need.ACT}),
    Role.ADMIN: frozenset({Need.VIEW, Need.ACT, Need.ADMIN}),
}


def may(role: str, need: Need) -> bool:
    try:
        return need in ALLOWED[Role(role)]
    except ValueError:
        return False


# ---- passwords --------------------------------------------------------------------------------
_hasher = PasswordHasher()  # argon2id with the library's (RFC 9106 low-memory) defaults


def hash_password(password: str, hasher: PasswordHasher | None = None) -> str:
    return (hasher or _hasher).hash(password)


def verify_password(stored: str, password: str, hasher: PasswordHasher | None = None) -> bool:
    """True if `password` matches the argon2 hash `stored`; never raises for a wrong or broken hash."""
    try:
        return (hasher or _hasher).verify(stored, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def password_problems(password: str, username: str = "") -> list[str]:
    """Why a new password is not acceptable (length over complexity, as the NCSC advises)."""
    problems = []
    if len(password) < MIN_PASSWORD:
        problems.append(f"Password must be at least {MIN_PASSWORD} characters")
    if len(password) > MAX_PASSWORD:
        problems.append(f"Password must be {MAX_PASSWORD} characters or fewer")
    if username and password.lower() == username.lower():
        problems.append("Password must not be the username")
    return problems


def username_problems(username: str) -> list[str]:
    if not 2 <= len(username) <= 64 or not USERNAME.match(username):
        return ["Username must be 2 to 64 lower-case letters or digits, optionally joined by . _ or -"]
    return []


# ---- sessions -----------------------------------------------------------------------------------
def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def session_key(link_secret: bytes) -> bytes:
    """A key for sessions only, derived from the link secret (a link token never verifies as a session)."""
    return hmac.new(link_secret, b"sims-console-session-v1", hashlib.sha256).digest()


@dataclass(frozen=True, slots=True, kw_only=True)
class Session:
    username: str
    role: str
    csrf: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    issued_at: float
    expires_at: float

    @classmethod
    def start(cls, username: str, role: str, now: float | None = None, ttl: float = SESSION_TTL) -> Session:
        issued = time.time() if now is None else now
        return cls(username=username, role=role, issued_at=issued, expires_at=issued + ttl)


def sign_session(key: bytes, session: Session) -> str:
    payload = _b64(json.dumps(asdict(session), separators=(",", ":"), sort_keys=True).encode())
    mac = hmac.new(key, payload.encode(), hashlib.sha256).digest()
    return f"{payload}.{_b64(mac)}"


def read_session(keys: list[bytes], token: str, now: float | None = None) -> Session | None:
    """The session in `token` if a key signed it and it has not expired; None for anything else."""
    payload, _, mac = token.partition(".")
    if not payload or not mac:
        return None
    try:
        given = _unb64(mac)
    except ValueError:
        return None
    macs = (hmac.new(k, payload.encode(), hashlib.sha256).digest() for k in keys)
    if not any(hmac.compare_digest(m, given) for m in macs):
        return None
    try:
        session = Session(**json.loads(_unb64(payload)))
    except (ValueError, TypeError):
        return None
    return session if (time.time() if now is None else now) < session.expires_at else None


def same_token(expected: str | None, submitted: object) -> bool:
    """Both tokens present and equal (constant-time compare)."""
    return (bool(expected) and isinstance(submitted, str) and bool(submitted)
            and hmac.compare_digest(str(expected).encode(), submitted.encode()))


def csrf_ok(session: Session | None, submitted: object) -> bool:
    """The form's hidden token is this session's token."""
    return session is not None and same_token(session.csrf, submitted)


# ---- sign-in rate limit ---------------------------------------------------------------------------
class SignInLimiter:
    """At most `attempts` failed sign-ins per username and address in `window` seconds (in memory)."""

    def __init__(self, attempts: int = 5, window: float = 900.0) -> None:
        self.attempts, self.window = attempts, window
        self._failures: dict[tuple[str, str], list[float]] = {}

    def _recent(self, key: tuple[str, str], now: float) -> list[float]:
        recent = [t for t in self._failures.get(key, []) if now - t < self.window]
        if recent:
            self._failures[key] = recent
        else:
            self._failures.pop(key, None)
        return recent

    def blocked(self, username: str, address: str, now: float | None = None) -> bool:
        now = time.monotonic() if now is None else now
        return len(self._recent((username.lower(), address), now)) >= self.attempts

    def failed(self, username: str, address: str, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        if len(self._failures) > 10_000:  # bounded memory: forget stale entries
            for key in list(self._failures):
                self._recent(key, now)
        key = (username.lower(), address)
        self._failures[key] = [*self._recent(key, now), now]

    def succeeded(self, username: str, address: str) -> None:
        self._failures.pop((username.lower(), address), None)


# ---- users ----------------------------------------------------------------------------------------
class UserExists(Exception):
    def __init__(self, username: str) -> None:
        self.username = username
        super().__init__(f"user {username!r} already exists (use --replace to change the password or role)")


@dataclass(frozen=True, slots=True, kw_only=True)
class User:
    username: str
    role: str
    password_hash: str
    created_at: float
    created_by: str
    valid_after: float = 0.0  # sessions issued before this are void (sign-out, password change)


class UserStore:
    """Users in KV `sims_users`; the bucket is created the first time it is needed."""

    def __init__(self, js: Any, replicas: int = 1) -> None:
        self.js, self.replicas = js, replicas
        self._kv: Any = None

    async def _bucket(self) -> Any:
        if self._kv is None:
            from nats.js.api import KeyValueConfig, StorageType
            from nats.js.errors import BucketNotFoundError

            try:
                self._kv = await self.js.key_value(USERS_BUCKET)
            except BucketNotFoundError:
                self._kv = await self.js.create_key_value(KeyValueConfig(
                    bucket=USERS_BUCKET, history=5, replicas=self.replicas, storage=StorageType.FILE))
        return self._kv

    async def get(self, username: str) -> User | None:
        from nats.js.errors import KeyNotFoundError

        if username_problems(username):
            return None
        try:
            entry = await (await self._bucket()).get(username)
        except KeyNotFoundError:
            return None
        return User(**json.loads(entry.value)) if entry.value else None

    async def all(self) -> list[User]:
        kv = await self._bucket()
        try:
            names = await kv.keys()
        except Exception as exc:  # nats-py raises NoKeysError for an empty bucket
            if type(exc).__name__ == "NoKeysError":
                return []
            raise
        return [u for u in [await self.get(n) for n in sorted(names)] if u is not None]

    async def add(self, username: str, role: str, password: str, by: str, replace: bool = False) -> User:
        """Create (or with `replace`, reset) a user; ValueError lists what is wrong with the input."""
        problems = username_problems(username) + password_problems(password, username)
        if role not in {r.value for r in Role}:
            problems.append(f"Role must be one of: {', '.join(r.value for r in Role)}")
        if problems:
            raise ValueError("; ".join(problems))
        now = time.time()
        hashed = await asyncio.to_thread(hash_password, password)
        user = User(username=username, role=role, password_hash=hashed, created_at=now, created_by=by,
                    valid_after=now if replace else 0.0)
        kv, data = await self._bucket(), json.dumps(asdict(user)).encode()
        if replace:
            await kv.put(username, data)
            return user
        from nats.js.errors import BadRequestError, KeyWrongLastSequenceError

        try:
            await kv.create(username, data)
        except (KeyWrongLastSequenceError, BadRequestError) as exc:
            raise UserExists(username) from exc
        return user

    async def sign_out_everywhere(self, username: str) -> None:
        user = await self.get(username)
        if user is not None:
            fresh = User(**{**asdict(user), "valid_after": time.time()})
            await (await self._bucket()).put(username, json.dumps(asdict(fresh)).encode())


_DUMMY_HASH: list[str] = []


async def check_credentials(users: UserStore, username: str, password: str) -> User | None:
    """The user if the password matches; the same work (one argon2 verify) whether or not they exist."""
    user = await users.get(username.strip().lower())
    if user is None:
        if not _DUMMY_HASH:
            _DUMMY_HASH.append(await asyncio.to_thread(hash_password, secrets.token_urlsafe(16)))
        await asyncio.to_thread(verify_password, _DUMMY_HASH[0], password)
        return None
    return user if await asyncio.to_thread(verify_password, user.password_hash, password) else None


__all__ = ["Role", "Need", "may", "hash_password", "verify_password", "Session", "sign_session", "read_session",
           "session_key", "csrf_ok", "same_token", "SignInLimiter", "UserStore", "User", "UserExists",
           "check_credentials", "password_problems", "username_problems"]
