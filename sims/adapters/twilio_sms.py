"""SmsSender over the real `twilio` library's async client; errors become DeliveryFailed."""

from __future__ import annotations

import contextvars
import logging
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp
from twilio.base.exceptions import TwilioException, TwilioRestException, TwilioServiceException  # type: ignore[import-untyped]
from twilio.http.async_http_client import AsyncTwilioHttpClient  # type: ignore[import-untyped]
from twilio.http.response import Response  # type: ignore[import-untyped]
from twilio.rest import Client  # type: ignore[import-untyped]

from sims.ports import Accepted, DeliveryFailed, OutgoingSms

PROVIDER = "twilio"
# Twilio codes that no retry will fix (besides any other 4xx): invalid number, not a mobile number,
# region not enabled, recipient unsubscribed (replied STOP).
PERMANENT_CODES = frozenset({21211, 21614, 21408, 21610})
TRANSIENT_CODES = frozenset({20429})

_logger = logging.getLogger("sims.twilio")

# Per-send slot where the HTTP client leaves the Retry-After of a 429, which TwilioRestException drops.
_retry_after_slot: contextvars.ContextVar[list[float | None] | None] = contextvars.ContextVar(
    "twilio_retry_after", default=None)


class _HttpClient(AsyncTwilioHttpClient):  # type: ignore[misc]  # untyped library base
    """Twilio's aiohttp client with a base-URL override, a real timeout, no library retries.

    The library passes `timeout=None` to aiohttp (no timeout at all) unless told per request, and
    retries 5xx itself only when given `max_retries`; we pass none, so the caller owns backoff.
    """

    def __init__(self, *, api_base: str | None, timeout: float) -> None:
        super().__init__(pool_connections=False, timeout=timeout, logger=_logger, max_retries=None)
        self._base = urlsplit(api_base) if api_base else None
        self.session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=timeout),
            connector=aiohttp.TCPConnector(limit=100, limit_per_host=100))

    def _rewrite(self, url: str) -> str:
        if self._base is None:
            return url
        parts = urlsplit(url)
        path = self._base.path.rstrip("/") + parts.path
        return urlunsplit((self._base.scheme, self._base.netloc, path, parts.query, parts.fragment))

    async def request(self, method: str, url: str, params: dict[str, object] | None = None,
                      data: dict[str, object] | None = None, headers: dict[str, str] | None = None,
                      auth: tuple[str, str] | None = None, timeout: float | None = None,
                      allow_redirects: bool = False) -> Response:
        headers = dict(headers or {})
        if auth:
            headers["Authorization"] = aiohttp.encode_basic_auth(auth[0], auth[1])
        kwargs: dict[str, Any] = {
            "method": method.upper(), "url": self._rewrite(url), "params": params, "data": data,
            "headers": headers, "allow_redirects": allow_redirects,
        }
        if timeout is not None:
            kwargs["timeout"] = aiohttp.ClientTimeout(total=timeout)
        async with self.session.request(**kwargs) as response:
            text = await response.text()
            if response.status == 429 and (slot := _retry_after_slot.get()) is not None:
                slot[0] = _parse_retry_after(response.headers.get("Retry-After"))
            return Response(response.status, text, response.headers)


_FAILURES = (TwilioException, TimeoutError, aiohttp.ClientError, OSError, ValueError)  # what `_failure` classifies


def _parse_retry_after(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None  # an HTTP date: rare from Twilio; let the caller's backoff decide


class TwilioSmsSender:
    """Sends SMS (and WhatsApp, for `whatsapp:` addresses) through Twilio's Messages API."""

    def __init__(self, account_sid: str, auth_token: str, from_: str | None = None,
                 messaging_service_sid: str | None = None, api_base: str | None = None,
                 name: str = "twilio", timeout: float = 10.0) -> None:
        if not from_ and not messaging_service_sid:
            raise ValueError("TwilioSmsSender needs from_ or messaging_service_sid")
        self.name = name
        self._account_sid = account_sid
        self._auth_token = auth_token
        self._from = from_
        self._messaging_service_sid = messaging_service_sid
        self._api_base = api_base
        self._timeout = timeout
        self._http: _HttpClient | None = None
        self._client: Client | None = None

    def _get_client(self) -> Client:
        # Created lazily: aiohttp's session must be made inside the running loop.
        if self._client is None:
            self._http = _HttpClient(api_base=self._api_base, timeout=self._timeout)
            self._client = Client(self._account_sid, self._auth_token, http_client=self._http,
                                  environment={"TWILIO_UNUSED": ""})  # ignore TWILIO_* from os.environ
        return self._client

    def _from_for(self, to: str) -> str | None:
        if self._from is None:
            return None
        if to.startswith("whatsapp:") and not self._from.startswith("whatsapp:"):
            return f"whatsapp:{self._from}"
        return self._from

    async def send(self, sms: OutgoingSms) -> Accepted:
        client = self._get_client()
        args: dict[str, Any] = {"to": sms.to, "body": sms.body}
        if sms.status_callback:
            args["status_callback"] = sms.status_callback
        if (from_ := self._from_for(sms.to)) is not None:
            args["from_"] = from_
        if self._messaging_service_sid:
            args["messaging_service_sid"] = self._messaging_service_sid
        slot: list[float | None] = [None]
        token = _retry_after_slot.set(slot)
        try:
            message = await client.messages.create_async(**args)
        except _FAILURES as exc:
            raise self._failure(exc, slot[0]) from exc
        finally:
            _retry_after_slot.reset(token)
        return Accepted(provider=PROVIDER, provider_id=str(message.sid), status=str(message.status or "queued"))

    async def find_accepted(self, sms: OutgoingSms, since: datetime) -> Accepted | None:
        """The message Twilio already took with this To and body since `since`, if any (newest first).

        Asked before sending a redelivered work item: a worker killed between Twilio accepting a message
        and its record being written must not send it twice. The body holds the person's own link, so
        To + body identify the message. Pages newest first and stops at the first one older than `since`;
        no DateSent filter, since a message still queued at Twilio has no date_sent yet.
        """
        client = self._get_client()
        args: dict[str, Any] = {"to": sms.to, "page_size": 50}
        if (from_ := self._from_for(sms.to)) is not None:
            args["from_"] = from_
        try:
            async for message in await client.messages.stream_async(**args):
                created = message.date_created
                if created is not None and created < since:
                    return None
                if message.body == sms.body and str(message.status) not in ("failed", "undelivered", "canceled"):
                    return Accepted(provider=PROVIDER, provider_id=str(message.sid),
                                    status=str(message.status or "queued"))
        except TwilioRestException as exc:
            raise _rest_failure(exc.status, exc.code, exc.msg, None) from exc
        except (TimeoutError, aiohttp.ClientError, OSError, TwilioException, ValueError) as exc:
            raise DeliveryFailed(provider=PROVIDER, transient=True, code="lookup",
                                 message=f"could not ask Twilio what it already took: {type(exc).__name__}: {exc}") from exc
        return None

    async def fetch_status(self, provider_id: str) -> tuple[str, str | None] | None:
        """The message's status at Twilio and its ErrorCode (text, or None); None if Twilio has no such SID.

        For status reconciliation (`sims.notifications.reconcile`): a record whose callbacks were lost is
        looked up by its SID. Errors are classified as for `send` (429/5xx/no answer: transient).
        """
        client = self._get_client()
        try:
            message = await client.messages(provider_id).fetch_async()
        except _FAILURES as exc:
            if isinstance(exc, TwilioRestException) and exc.status == 404:
                return None
            raise self._failure(exc, None) from exc
        if not message.status:
            raise DeliveryFailed(provider=PROVIDER, transient=True, code="protocol",
                                 message=f"Twilio answered for {provider_id} without a status")
        code = message.error_code
        return str(message.status), (str(code) if code is not None else None)

    def _failure(self, exc: Exception, retry_after: float | None) -> DeliveryFailed:
        """One of `_FAILURES` from a request to Twilio, classified (429/5xx/no answer: transient)."""
        if isinstance(exc, TwilioRestException):
            return _rest_failure(exc.status, exc.code, exc.msg, retry_after)
        if isinstance(exc, TwilioServiceException):
            return _rest_failure(exc.status, exc.code, str(exc), retry_after)
        if isinstance(exc, (TimeoutError, aiohttp.ServerTimeoutError)):
            return DeliveryFailed(provider=PROVIDER, transient=True, code="timeout",
                                  message=f"no answer from Twilio within {self._timeout:g} s")
        if isinstance(exc, (aiohttp.ClientError, OSError)):
            return DeliveryFailed(provider=PROVIDER, transient=True, code="connection",
                                  message=f"{type(exc).__name__}: {exc}")
        # TwilioException or ValueError: e.g. a 2xx answer whose body is not JSON
        return DeliveryFailed(provider=PROVIDER, transient=True, code="protocol", message=str(exc))

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()
        self._http = None
        self._client = None


def _rest_failure(status: int, code: int | None, message: str, retry_after: float | None) -> DeliveryFailed:
    """Classify a Twilio error answer: 429 and 5xx may pass on retry; other 4xx will not."""
    code_text = str(code if code is not None else status)
    if code in TRANSIENT_CODES or status == 429:
        return DeliveryFailed(provider=PROVIDER, transient=True, code=code_text, message=message,
                              retry_after=retry_after)
    if code in PERMANENT_CODES:
        return DeliveryFailed(provider=PROVIDER, transient=False, code=code_text, message=message)
    # 401/403 refuse the account, not this message: an operator can fix it, so it is worth retrying.
    transient = status >= 500 or status in (401, 403, 408, 409)
    return DeliveryFailed(provider=PROVIDER, transient=transient, code=code_text, message=message)
