"""SMS and email through GOV.UK Notify (`notifications-python-client`); errors become DeliveryFailed.

Notify sends from templates: one SMS template whose content is `((body))`, one email template with
subject `((subject))` and content `((body))`. The client is synchronous (requests), so calls run in a
small thread pool, one client per thread (the client is not thread-safe). Our message key travels as
Notify's `reference`; delivery receipts come back to `POST /hooks/notify/status`.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import requests
from notifications_python_client.errors import APIError, HTTPError
from notifications_python_client.notifications import NotificationsAPIClient

from sims.ports import Accepted, DeliveryFailed, OutgoingEmail, OutgoingSms

PROVIDER = "notify"
DEFAULT_BASE_URL = "https://api.notifications.service.gov.uk"
RATE_PER_MINUTE = 3000  # Notify's limit per API key
# Notify's receipt statuses on our status ladder (sims.notify.Status).
RECEIPT_STATUS = {"delivered": "delivered", "permanent-failure": "undelivered",
                  "temporary-failure": "undelivered", "technical-failure": "failed",
                  "sending": "sending", "created": "accepted", "pending": "sending", "sent": "sent"}


def provider_id(notification_id: str) -> str:
    """Notify's notification id as we store it (hex, no dashes: a plain KV key token)."""
    return uuid.UUID(notification_id).hex


class _Budget:
    """Notify's 3,000 requests a minute per key, counted here so we switch before Notify refuses."""

    def __init__(self, per_minute: int) -> None:
        self.per_minute = per_minute
        self._times: deque[float] = deque()
        self._lock = threading.Lock()

    def take(self) -> float | None:
        """Take one request now, or return how many seconds until one is free."""
        now = time.monotonic()
        with self._lock:
            while self._times and now - self._times[0] >= 60.0:
                self._times.popleft()
            if len(self._times) >= self.per_minute:
                return 60.0 - (now - self._times[0])
            self._times.append(now)
            return None


class NotifyApi:
    """One Notify API key: the clients (one per pool thread), the pool, and the per-key budget."""

    def __init__(self, api_key: str, base_url: str | None = None, *, timeout: float = 10.0, threads: int = 16,
                 per_minute: int = RATE_PER_MINUTE) -> None:
        NotificationsAPIClient(api_key, base_url=base_url or DEFAULT_BASE_URL)  # type: ignore[no-untyped-call]  # refuse a malformed key now
        self._api_key = api_key
        self._base_url = base_url or DEFAULT_BASE_URL
        self._timeout = timeout
        self._local = threading.local()
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="notify")
        self.budget = _Budget(per_minute)

    def _client(self) -> NotificationsAPIClient:
        client = getattr(self._local, "client", None)
        if client is None:
            client = self._local.client = NotificationsAPIClient(  # type: ignore[no-untyped-call]
                self._api_key, base_url=self._base_url, timeout=self._timeout)
        return client

    async def call(self, method: str, **kwargs: Any) -> dict[str, Any]:
        """Run one client method in the pool; Notify's errors become DeliveryFailed."""
        wait = self.budget.take()
        if wait is not None:
            raise DeliveryFailed(provider=PROVIDER, transient=True, code="429",
                                 message=f"RateLimitError: {self.budget.per_minute} requests a minute used "
                                         "(counted locally)", retry_after=wait)
        loop = asyncio.get_running_loop()
        try:
            result: dict[str, Any] = await loop.run_in_executor(
                self._pool, lambda: getattr(self._client(), method)(**kwargs))
        except HTTPError as exc:
            raise classify(exc) from exc
        except APIError as exc:  # InvalidResponse: a 2xx whose body is not JSON
            raise DeliveryFailed(provider=PROVIDER, transient=True, code="protocol", message=str(exc)) from exc
        return result

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


def classify(exc: HTTPError) -> DeliveryFailed:
    """Notify's error answers: 400 is this message (final), 403 our key, 429 a limit, 5xx theirs."""
    if exc.response is None:  # the request never got an answer
        cause = exc.__cause__
        code = "timeout" if isinstance(cause, requests.Timeout) else "connection"
        return DeliveryFailed(provider=PROVIDER, transient=True, code=code,
                              message=f"{type(cause).__name__}: {cause}" if cause else "no answer")
    status = exc.status_code
    errors = exc.message if isinstance(exc.message, list) else [{"error": "", "message": str(exc.message)}]
    name = str(errors[0].get("error", "")) if errors else ""
    text = "; ".join(f"{e.get('error', '')}: {e.get('message', '')}" for e in errors)[:500]
    if status == 429:
        retry = _retry_after(exc.response.headers.get("Retry-After"))
        if name == "TooManyRequestsError":  # the daily cap: nothing more today
            retry = max(retry or 0.0, 3600.0)
        return DeliveryFailed(provider=PROVIDER, transient=True, code="429", message=text, retry_after=retry or 60.0)
    if status in (401, 403):  # our key is refused: another supplier can carry on; an operator must fix it
        return DeliveryFailed(provider=PROVIDER, transient=True, code=str(status), message=text)
    return DeliveryFailed(provider=PROVIDER, transient=status >= 500 or status in (408, 409),
                          code=str(status), message=text)


def _retry_after(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:
        return None


class NotifySmsSender:
    """SmsSender through Notify's `POST /v2/notifications/sms` (WhatsApp is not something Notify sends)."""

    def __init__(self, api: NotifyApi, template_id: str, name: str = PROVIDER) -> None:
        self.name = name
        self._api = api
        self._template = template_id

    async def send(self, sms: OutgoingSms) -> Accepted:
        if sms.to.startswith("whatsapp:"):
            raise DeliveryFailed(provider=PROVIDER, transient=False, code="channel",
                                 message="Notify does not send WhatsApp messages")
        answer = await self._api.call("send_sms_notification", phone_number=sms.to, template_id=self._template,
                                      personalisation={"body": sms.body}, reference=sms.key)
        return Accepted(provider=PROVIDER, provider_id=provider_id(answer["id"]), status="accepted")

    async def close(self) -> None:
        self._api.close()


class NotifyEmailSender:
    """EmailSender through Notify's `POST /v2/notifications/email` (plain text body; Notify styles it)."""

    def __init__(self, api: NotifyApi, template_id: str, name: str = PROVIDER) -> None:
        self.name = name
        self._api = api
        self._template = template_id

    async def send(self, email: OutgoingEmail) -> Accepted:
        answer = await self._api.call("send_email_notification", email_address=email.to,
                                      template_id=self._template,
                                      personalisation={"subject": email.subject, "body": email.text},
                                      reference=email.key)
        return Accepted(provider=PROVIDER, provider_id=provider_id(answer["id"]), status="accepted")

    async def close(self) -> None:
        self._api.close()
