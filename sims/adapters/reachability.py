"""Can SIMS reach each provider right now? For /healthz: a TCP connect, bounded in time."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit


async def tcp(host: str, port: int, timeout: float = 2.0) -> str | None:
    """None when a connection opens in time, else what went wrong."""
    try:
        _reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    except (OSError, asyncio.TimeoutError) as exc:
        return f"{host}:{port} unreachable ({type(exc).__name__})"
    writer.close()
    await writer.wait_closed()
    return None


async def providers(settings: Any) -> dict[str, dict[str, Any]]:
    """One entry per provider in use: {"reachable": bool, "detail": str}."""
    found: dict[str, dict[str, Any]] = {}
    if settings.twilio_account_sid and settings.twilio_auth_token:
        base = urlsplit(settings.twilio_api_base or "https://api.twilio.com")
        port = base.port or (443 if base.scheme == "https" else 80)
        problem = await tcp(base.hostname or "api.twilio.com", port)
        found["twilio"] = {"reachable": problem is None, "detail": problem or f"{base.hostname}:{port}"}
    if getattr(settings, "notify_api_key", None):
        base = urlsplit(settings.notify_base_url or "https://api.notifications.service.gov.uk")
        port = base.port or (443 if base.scheme == "https" else 80)
        problem = await tcp(base.hostname or "api.notifications.service.gov.uk", port)
        found["notify"] = {"reachable": problem is None, "detail": problem or f"{base.hostname}:{port}"}
    if settings.smtp_host:
        problem = await tcp(settings.smtp_host, settings.smtp_port)
        found["smtp"] = {"reachable": problem is None, "detail": problem or f"{settings.smtp_host}:{settings.smtp_port}"}
    if not (settings.twilio_account_sid and settings.twilio_auth_token) or not settings.smtp_host:
        folder = Path(settings.data_dir) / "outbox"
        writable = os.access(folder if folder.exists() else Path(settings.data_dir), os.W_OK) \
            if Path(settings.data_dir).exists() else False
        found["outbox"] = {"reachable": writable, "detail": str(folder)}
    return found
