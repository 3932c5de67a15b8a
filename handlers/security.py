"""HTTP hardening: security headers on every response, the API token check, per-address rate limits."""

from __future__ import annotations

import math
import time
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import Request, Security
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from handlers.api_tokens import Scope, TokenStore, needed_scopes

CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; frame-ancestors 'none'; "
       "form-action 'self'; base-uri 'none'")
NO_CSP = ("/docs", "/redoc")  # FastAPI's Swagger UI / ReDoc pages load their script from a CDN, inline
NO_STORE = ("/api/", "/l/")
WWW_AUTHENTICATE = 'Bearer realm="sims-api"'


class SecurityHeaders:
    """ASGI middleware: adds the headers a response has not set itself (the console sets its own CSP)."""

    def __init__(self, app: Any, https: bool = False) -> None:
        self.app, self.https = app, https

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope.get("path", "")

        async def send_with_headers(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {k.lower() for k, _ in headers}
                wanted = [(b"x-content-type-options", b"nosniff"), (b"referrer-policy", b"no-referrer"),
                          (b"x-frame-options", b"DENY")]
                content_type = next((v for k, v in headers if k.lower() == b"content-type"), b"")
                if content_type.startswith(b"text/html") and not path.startswith(NO_CSP):
                    wanted.append((b"content-security-policy", CSP.encode()))
                if self.https:
                    wanted.append((b"strict-transport-security", b"max-age=31536000"))
                if path.startswith(NO_STORE):
                    wanted.append((b"cache-control", b"no-store"))
                headers += [(k, v) for k, v in wanted if k not in present]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)


# ---- API tokens -----------------------------------------------------------------------------------
bearer = HTTPBearer(auto_error=False, scheme_name="ApiToken",
                    description="An API token from `sims tokens add NAME --scope read|raise|write`.")


class ApiRefused(Exception):
    def __init__(self, status: int, error: str, message: str) -> None:
        self.status, self.error, self.message = status, error, message
        super().__init__(message)


def refused_response(exc: ApiRefused) -> JSONResponse:
    headers = {"WWW-Authenticate": WWW_AUTHENTICATE if exc.status == 401
               else f'{WWW_AUTHENTICATE}, error="insufficient_scope"'}
    return JSONResponse({"ok": False, "error": {"error": exc.error, "message": exc.message}},
                        status_code=exc.status, headers=headers)


def api_guard(rt: Any, store: Callable[[], TokenStore]) -> Callable[..., Awaitable[str]]:
    """A FastAPI dependency: the request's bearer token must exist, be live and hold a fitting scope."""

    flood = RateLimiter(1, 60.0)  # refusals: one audit record a minute per address, reason and token

    async def audit(request: Request, action: str, outcome: str, name: str | None) -> None:
        address = request.client.host if request.client else "-"
        if action == "api.refused" and not flood.first_refusal(f"{address}|{outcome}|{name}"):
            return
        await rt.audit.append(chain="system", actor=f"api:{name}" if name else "api", incident_id=None,
                              action=action, outcome=outcome,
                              detail={"token": name, "method": request.method, "path": request.url.path,
                                      "address": address})

    async def guard(request: Request, credentials: HTTPAuthorizationCredentials | None = Security(bearer)) -> str:
        need = needed_scopes(request.method, request.url.path)
        if credentials is None or not credentials.credentials:
            await audit(request, "api.refused", "missing", None)
            raise ApiRefused(401, "unauthorized", "This API needs an API token: send 'Authorization: Bearer <token>' "
                                                  "(make one with `sims tokens add NAME --scope ...`).")
        token = credentials.credentials
        record = await store().verify(token)
        if record is None:
            await audit(request, "api.refused", "unknown", None)
            raise ApiRefused(401, "unauthorized", "The API token is not valid.")
        if record.revoked:
            await audit(request, "api.refused", "revoked", record.name)
            raise ApiRefused(401, "unauthorized", "The API token has been revoked.")
        if not need & set(record.scopes):
            await audit(request, "api.refused", "scope", record.name)
            wanted = " or ".join(sorted(s.value for s in need)) or "-"
            raise ApiRefused(403, "forbidden", f"The API token '{record.name}' does not have the scope this needs "
                                               f"({wanted}); it has: {', '.join(record.scopes)}.")
        await store().touch(token, record)
        await audit(request, "api.used", "ok", record.name)
        return record.name

    return guard


# ---- rate limits ----------------------------------------------------------------------------------
class RateLimiter:
    """A token bucket per client address, in memory: `rate` requests per `per` seconds, bursts up to `rate`."""

    def __init__(self, rate: int = 30, per: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.capacity, self.refill, self.per, self.clock = float(rate), rate / per, per, clock
        self._buckets: dict[str, tuple[float, float]] = {}
        self._reported: dict[str, float] = {}

    def take(self, address: str) -> float:
        """0 if the request may go ahead (and use one token), else the seconds to wait."""
        now = self.clock()
        if len(self._buckets) > 10_000:  # bounded memory: forget full buckets
            self._buckets = {a: (t, s) for a, (t, s) in self._buckets.items()
                             if t + (now - s) * self.refill < self.capacity}
        tokens, since = self._buckets.get(address, (self.capacity, now))
        tokens = min(self.capacity, tokens + (now - since) * self.refill)
        if tokens >= 1.0:
            self._buckets[address] = (tokens - 1.0, now)
            return 0.0
        self._buckets[address] = (tokens, now)
        return (1.0 - tokens) / self.refill

    def first_refusal(self, address: str) -> bool:
        """True once per window per address (to audit a flood once, not every request)."""
        now = self.clock()
        if now - self._reported.get(address, -math.inf) < self.per:
            return False
        if len(self._reported) > 10_000:
            self._reported = {a: t for a, t in self._reported.items() if now - t < self.per}
        self._reported[address] = now
        return True


__all__ = ["SecurityHeaders", "CSP", "bearer", "api_guard", "ApiRefused", "refused_response", "RateLimiter", "Scope"]
