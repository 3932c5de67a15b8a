"""The console for tests: a password for the users they add, and an HTTP client signed in as one of them."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx

from tests.support.stack import Stack

PASSWORD = "a long passphrase for tests"


@asynccontextmanager
async def signed_in(stack: Stack, username: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=20) as client:
        form = await client.get(f"{stack.http_url}/console/sign-in")
        token = re.search(r'name="csrf_token" value="([^"]+)"', form.text).group(1)  # type: ignore[union-attr]
        answer = await client.post(f"{stack.http_url}/console/sign-in", data={
            "username": username, "password": PASSWORD, "csrf_token": token, "next": "/console"})
        assert answer.status_code == 303, answer.text
        yield client
