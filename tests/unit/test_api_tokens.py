"""API tokens: format, hashing, which scope allows which route; the per-address token bucket."""

from __future__ import annotations

import hashlib

import pytest

from handlers.api_tokens import ApiToken, Scope, allows, hash_token, name_problems, needed_scopes, new_token
from handlers.security import RateLimiter


def test_tokens_are_long_random_and_prefixed() -> None:
    tokens = {new_token() for _ in range(200)}
    assert len(tokens) == 200
    for token in tokens:
        assert token.startswith("sims_") and len(token) == len("sims_") + 43  # 32 bytes, url-safe base64
        assert set(token[5:]) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


def test_only_the_sha256_is_kept_and_it_does_not_contain_the_token() -> None:
    token = new_token()
    digest = hash_token(token)
    assert digest == hashlib.sha256(token.encode()).hexdigest() and len(digest) == 64
    assert token not in digest and token[5:] not in digest
    assert hash_token(token) == digest and hash_token(new_token()) != digest
    record = ApiToken(name="cad", scopes=("read",), created_at=1.0, created_by="t")
    assert token not in record.to_json().decode()
    assert ApiToken.from_json(record.to_json()) == record


@pytest.mark.parametrize(("method", "path", "needed"), [
    ("GET", "/api/incidents", {Scope.READ}),
    ("GET", "/api/incidents/SWK-2026-0001/audit", {Scope.READ}),
    ("GET", "/api/outbox", {Scope.READ}),
    ("POST", "/api/incidents", {Scope.RAISE, Scope.WRITE}),
    ("POST", "/api/preview", {Scope.RAISE, Scope.WRITE}),
    ("POST", "/api/incidents/SWK-2026-0001/transitions", {Scope.WRITE}),
    ("POST", "/api/incidents/SWK-2026-0001/fund", {Scope.WRITE}),
    ("DELETE", "/api/incidents", set()),
    ("GET", "/healthz", set()),
])
def test_which_scope_allows_which_route(method: str, path: str, needed: set[Scope]) -> None:
    assert needed_scopes(method, path) == needed


def test_scopes_are_not_interchangeable() -> None:
    assert allows(["read"], "GET", "/api/incidents") and not allows(["read"], "POST", "/api/incidents")
    assert allows(["raise"], "POST", "/api/incidents") and allows(["raise"], "POST", "/api/preview")
    assert not allows(["raise"], "GET", "/api/incidents")
    assert not allows(["raise"], "POST", "/api/incidents/SWK-2026-0001/transitions")
    assert allows(["write"], "POST", "/api/incidents/x/messages") and allows(["write"], "POST", "/api/incidents")
    assert not allows(["write"], "GET", "/api/incidents")
    assert allows(["read", "write"], "GET", "/api/incidents")
    assert not allows([], "GET", "/api/incidents")


def test_token_names() -> None:
    assert not name_problems("cad-gateway") and not name_problems("status.board")
    assert name_problems("A") and name_problems("has space") and name_problems("x" * 65)


def test_rate_limiter_allows_a_burst_then_refills_at_the_rate() -> None:
    now = [1000.0]
    limiter = RateLimiter(30, 60.0, clock=lambda: now[0])
    assert all(limiter.take("10.0.0.1") == 0 for _ in range(30))
    wait = limiter.take("10.0.0.1")
    assert 1.9 < wait <= 2.0  # one request every 2 s
    assert limiter.take("10.0.0.2") == 0  # another address has its own bucket
    now[0] += 2.0
    assert limiter.take("10.0.0.1") == 0 and limiter.take("10.0.0.1") > 0
    assert limiter.first_refusal("10.0.0.1") and not limiter.first_refusal("10.0.0.1")
    now[0] += 61.0
    assert limiter.first_refusal("10.0.0.1")
    assert all(limiter.take("10.0.0.1") == 0 for _ in range(30))
