"""API tokens for tests: make one straight against the runtime, and HTTP clients that send it."""

from __future__ import annotations

import secrets
from typing import Any

import httpx

from handlers.api_tokens import TokenStore
from sims.bootstrap import Runtime

ALL_SCOPES = ("read", "raise", "write")


async def make_token(rt: Runtime, name: str | None = None, scopes: tuple[str, ...] = ALL_SCOPES) -> str:
    """A new API token (read, raise and write unless told otherwise), stored as the CLI would."""
    token, _ = await TokenStore(rt.js).add(name or f"tests-{secrets.token_hex(4)}", list(scopes), by="tests")
    return token


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def api_client(rt: Runtime, base_url: str | None = None, name: str | None = None,
                     scopes: tuple[str, ...] = ALL_SCOPES, **kwargs: Any) -> httpx.AsyncClient:
    """An httpx client with a fresh token: over the network to `base_url`, or in-process (ASGI) without."""
    headers = bearer(await make_token(rt, name, scopes))
    if base_url is not None:
        return httpx.AsyncClient(base_url=base_url, headers=headers, **kwargs)
    from handlers.http import create_app

    return httpx.AsyncClient(transport=httpx.ASGITransport(app=create_app(rt)), base_url="http://sims.test",
                             headers=headers, **kwargs)
