"""A local Twilio-like Messages API for tests and benchmarks: scriptable replies, signed status callbacks.

From a test::

    async with TwilioServer() as twilio:            # 127.0.0.1, free port
        twilio.script(too_many_requests(), ok())    # next two requests, then the default (ok)
        twilio.fail_to["+447700900999"] = invalid_number()
        ... TwilioSmsSender(twilio.account_sid, twilio.auth_token, from_="+15005550006",
                            api_base=twilio.base_url) ...
        assert twilio.messages[0].to == "+447700900123"

As a process (for benchmarks)::

    python -m tests.support.twilio_server --port 18080 [--callbacks] [--no-record]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import random
import secrets
import signal
import string
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime
from email.utils import format_datetime
from typing import Any, ClassVar
from urllib.parse import urlencode

from aiohttp import encode_basic_auth, web
from twilio.request_validator import RequestValidator  # type: ignore[import-untyped]

from tests.support.http_server import LocalHttpServer, serve

DEFAULT_ACCOUNT_SID = "AC" + "0" * 31 + "1"
DEFAULT_AUTH_TOKEN = "local-twilio-auth-token-0123456789"
API_VERSION = "2010-04-01"
ERRORS_URL = "https://www.twilio.com/docs/errors/{}"


@dataclass(frozen=True, slots=True, kw_only=True)
class Reply:
    """How the server answers one create-message request (and what the message does afterwards)."""

    status: int = 201
    code: int | None = None
    message: str = ""
    delay: float = 0.0
    retry_after: float | None = None
    # Status callbacks for an accepted message: the statuses in order; ErrorCode for failed/undelivered.
    callbacks: tuple[str, ...] = ("queued", "sent", "delivered")
    callback_error_code: int | None = None

    @property
    def accepted(self) -> bool:
        return self.status < 300


def ok(*, delay: float = 0.0) -> Reply:
    """Accept the message; callbacks go queued -> sent -> delivered."""
    return Reply(delay=delay)


def undelivered(error_code: int = 30003, *, final: str = "undelivered") -> Reply:
    """Accept the message, then report it `undelivered` (or `failed`) with an ErrorCode."""
    return Reply(callbacks=("queued", "sent", final) if final == "undelivered" else ("queued", final),
                 callback_error_code=error_code)


def slow(delay: float, then: Reply | None = None) -> Reply:
    """Answer like `then` (default: accept), but only after `delay` seconds."""
    return replace(then or ok(), delay=delay)


def error(status: int, code: int, message: str, *, retry_after: float | None = None) -> Reply:
    """Refuse with Twilio's JSON error body."""
    return Reply(status=status, code=code, message=message, retry_after=retry_after)


def invalid_number() -> Reply:
    return error(400, 21211, "The 'To' number {to} is not a valid phone number.")


def not_mobile() -> Reply:
    return error(400, 21614, "'To' number {to} is not a valid mobile number")


def region_not_enabled() -> Reply:
    return error(400, 21408, "Permission to send an SMS has not been enabled for the region indicated "
                             "by the 'To' number: {to}.")


def unsubscribed() -> Reply:
    return error(400, 21610, "Attempt to send to unsubscribed recipient")


def too_many_requests(retry_after: float = 1) -> Reply:
    return error(429, 20429, "Too Many Requests", retry_after=retry_after)


def server_error(status: int = 500) -> Reply:
    text = {500: "Internal Server Error", 502: "Bad Gateway", 503: "Service Unavailable"}.get(status, "Error")
    return error(status, 20000 + status, text)


@dataclass(frozen=True, slots=True, kw_only=True)
class SentMessage:
    """One message the server accepted."""

    sid: str
    to: str
    from_: str | None
    body: str
    messaging_service_sid: str | None
    status_callback: str | None
    num_segments: int
    date_created: datetime


@dataclass(frozen=True, slots=True, kw_only=True)
class CallbackAttempt:
    """One status callback the server made (or tried to)."""

    url: str
    params: dict[str, str]
    signature: str
    response_status: int | None  # None: connection failed


Decide = Callable[[dict[str, str]], Reply | None]


_GSM7 = set(string.ascii_letters + string.digits + " \n\r@£$¥èéùìòÇØøÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ!\"#¤%&'()*+,-./:;<=>?"
            "¡ÄÖÑÜ§¿äöñüà^{}\\[~]|€")


def num_segments(body: str) -> int:
    """Segments as Twilio counts them: GSM-7 160/153 per part, otherwise UCS-2 70/67."""
    single, multi = (160, 153) if set(body) <= _GSM7 else (70, 67)
    if len(body) <= single:
        return 1
    return -(-len(body) // multi)


@dataclass(slots=True)
class _Script:
    queue: collections.deque[Reply] = field(default_factory=collections.deque)
    decide: Decide | None = None
    fail_to: dict[str, Reply] = field(default_factory=dict)
    default: Reply = field(default_factory=ok)


def _when(value: str) -> datetime | date:
    """A DateSent filter value: a day (YYYY-MM-DD) or, as the library sends it, a UTC timestamp."""
    if len(value) == 10:
        return date.fromisoformat(value)
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def _sent_matches(sent: datetime, op: str, bound: datetime | date) -> bool:
    """Twilio compares days for a day (`>=` from its midnight, `<=` to the end of it), else the instant."""
    if isinstance(bound, datetime):
        return {"=": sent == bound, "<": sent <= bound, ">": sent >= bound}[op]
    day = sent.date()
    return {"=": day == bound, "<": day <= bound, ">": day >= bound}[op]


class TwilioServer(LocalHttpServer):
    """Speaks `POST /2010-04-01/Accounts/{sid}/Messages.json`, GET of one message and the list, on 127.0.0.1."""

    _backlog: ClassVar[int] = 1024

    def __init__(self, *, account_sid: str = DEFAULT_ACCOUNT_SID, auth_token: str = DEFAULT_AUTH_TOKEN,
                 port: int = 0, host: str = "127.0.0.1", record: bool = True,
                 send_callbacks: bool = True, callback_delay: float = 0.0,
                 callbacks_shuffled: bool = False, callbacks_duplicated: bool = False,
                 seed: int | None = None) -> None:
        super().__init__()
        self.account_sid = account_sid
        self.auth_token = auth_token
        self.host = host
        self.port = port
        self.record = record
        self.send_callbacks = send_callbacks
        self.callback_delay = callback_delay
        self.callbacks_shuffled = callbacks_shuffled
        self.callbacks_duplicated = callbacks_duplicated
        self.messages: list[SentMessage] = []
        self.requests = 0  # every create request, whatever the answer
        self.accepted_count = 0
        self.fetches = 0  # lookups of one message by SID
        self.callbacks: list[CallbackAttempt] = []
        self._by_sid: dict[str, SentMessage] = {}
        self._statuses: dict[str, tuple[str, int | None]] = {}  # set_status: what a fetch of a SID answers
        self.fail_fetch: dict[str, Reply] = {}  # `fail_fetch[sid] = server_error()`: a fetch of it gets that
        self._script = _Script()
        self._random = random.Random(seed)
        self._validator = RequestValidator(auth_token)
        self._auth = encode_basic_auth(account_sid, auth_token)

    # -- scripting ---------------------------------------------------------------------------------

    def script(self, *replies: Reply) -> None:
        """Answer the next requests with these replies, in order; then fall back to the default."""
        self._script.queue.extend(replies)

    def set_default(self, reply: Reply) -> None:
        self._script.default = reply

    def set_decide(self, decide: Decide | None) -> None:
        """A function of the request's form fields; its Reply wins over the queue (None: no opinion)."""
        self._script.decide = decide

    @property
    def fail_to(self) -> dict[str, Reply]:
        """`fail_to[number] = invalid_number()`: requests to that To always get that reply."""
        return self._script.fail_to

    def set_status(self, sid: str, status: str, error_code: int | None = None) -> None:
        """What a fetch of this message (GET .../Messages/{sid}.json) answers from now on (default: the last
        status its callbacks report when the server sends callbacks, else queued)."""
        self._statuses[sid] = (status, error_code)

    def reset(self) -> None:
        self._script = _Script()
        self.messages.clear()
        self.callbacks.clear()
        self._by_sid.clear()
        self._statuses.clear()
        self.fail_fetch.clear()
        self.requests = self.accepted_count = 0

    def _reply_for(self, form: dict[str, str]) -> Reply:
        if (to := form.get("To", "")) in self._script.fail_to:
            return self._script.fail_to[to]
        if self._script.decide is not None and (decided := self._script.decide(form)) is not None:
            return decided
        if self._script.queue:
            return self._script.queue.popleft()
        return self._script.default

    # -- lifecycle ---------------------------------------------------------------------------------

    def _routes(self, app: web.Application) -> None:
        prefix = f"/{API_VERSION}/Accounts/{{account_sid}}"
        app.router.add_post(prefix + "/Messages.json", self._create)
        app.router.add_get(prefix + "/Messages/{sid}.json", self._fetch)
        app.router.add_get(prefix + "/Messages.json", self._list)

    async def drain_callbacks(self, timeout: float = 5.0) -> None:
        """Wait until every scheduled status callback has been made."""
        await self._drain(timeout)

    # -- HTTP --------------------------------------------------------------------------------------

    @staticmethod
    def _error(status: int, code: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
        body = {"code": code, "message": message, "more_info": ERRORS_URL.format(code), "status": status}
        return web.json_response(body, status=status, headers=headers)

    def _authorised(self, request: web.Request) -> bool:
        return (request.headers.get("Authorization") == self._auth
                and request.match_info["account_sid"] == self.account_sid)

    async def _create(self, request: web.Request) -> web.Response:
        self.requests += 1
        if not self._authorised(request):
            return self._error(401, 20003, "Authenticate")
        form = {k: v for k, v in (await request.post()).items() if isinstance(v, str)}
        reply = self._reply_for(form)
        if reply.delay:
            await asyncio.sleep(reply.delay)
        to = form.get("To", "")
        if not reply.accepted:
            headers = {"Retry-After": f"{reply.retry_after:g}"} if reply.retry_after is not None else None
            return self._error(reply.status, reply.code or reply.status, reply.message.format(to=to), headers)
        if not to:
            return self._error(400, 21604, "A 'To' phone number is required.")
        if not form.get("From") and not form.get("MessagingServiceSid"):
            return self._error(400, 21603, "A 'From' phone number is required.")
        if not form.get("Body") and not form.get("MediaUrl"):
            return self._error(400, 21602, "Message body is required.")
        message = SentMessage(
            sid="SM" + secrets.token_hex(16), to=to, from_=form.get("From"), body=form.get("Body", ""),
            messaging_service_sid=form.get("MessagingServiceSid"),
            status_callback=form.get("StatusCallback"), num_segments=num_segments(form.get("Body", "")),
            date_created=datetime.now(UTC))
        self.accepted_count += 1
        if self.record:
            self.messages.append(message)
            self._by_sid[message.sid] = message
        if self.send_callbacks and reply.callbacks:  # where the message ends up at Twilio, reported or not
            final = reply.callbacks[-1]
            self._statuses.setdefault(message.sid, (final, reply.callback_error_code
                                                    if final in ("failed", "undelivered") else None))
        if message.status_callback and self.send_callbacks:
            self._spawn(self._callbacks_for(message, reply))
        return web.json_response(self._resource(message, "queued"), status=201)

    async def _fetch(self, request: web.Request) -> web.Response:
        if not self._authorised(request):
            return self._error(401, 20003, "Authenticate")
        self.fetches += 1
        if (failure := self.fail_fetch.get(request.match_info["sid"])) is not None:
            return self._error(failure.status, failure.code or failure.status, failure.message)
        message = self._by_sid.get(request.match_info["sid"])
        if message is None:
            return self._error(404, 20404, f"The requested resource {request.path} was not found")
        status, error_code = self._statuses.get(message.sid, ("queued", None))
        return web.json_response(self._resource(message, status, error_code))

    async def _list(self, request: web.Request) -> web.Response:
        """Messages newest first, filtered by To, From and DateSent (=, <=, >=), one page at a time.

        As Twilio: `DateSent>=YYYY-MM-DD` arrives as the key `DateSent>` (the library sends a full
        timestamp there); PageSize (default 50, at most 1000) and Page with a PageToken walk the pages,
        and `next_page_uri` is null on the last one. Messages here are sent the moment they are accepted.
        """
        if not self._authorised(request):
            return self._error(401, 20003, "Authenticate")
        q = request.query
        try:
            size = min(1000, max(1, int(q.get("PageSize", "50"))))
            page = max(0, int(q.get("Page", "0")))
            bounds = {op: _when(q[key]) for key, op in (("DateSent", "="), ("DateSent<", "<"), ("DateSent>", ">"))
                      if key in q}
        except ValueError as exc:
            return self._error(400, 20001, f"Invalid parameter: {exc}")
        found = [m for m in reversed(self.messages)
                 if q.get("To", m.to) == m.to and q.get("From", m.from_) == m.from_
                 and all(_sent_matches(m.date_created, op, bound) for op, bound in bounds.items())]
        chunk = found[page * size:(page + 1) * size]
        base = f"/{API_VERSION}/Accounts/{self.account_sid}/Messages.json"
        kept = [(k, v) for k, v in q.items() if k not in ("Page", "PageToken")]

        def uri(number: int) -> str:
            return f"{base}?{urlencode([*kept, ('Page', str(number)), ('PageToken', f'PA{number}')])}"

        more = (page + 1) * size < len(found)
        return web.json_response({
            "messages": [self._resource(m, "sent") for m in chunk], "page": page, "page_size": size,
            "start": page * size, "end": page * size + len(chunk) - 1 if chunk else page * size,
            "uri": uri(page), "first_page_uri": uri(0), "previous_page_uri": uri(page - 1) if page else None,
            "next_page_uri": uri(page + 1) if more else None})

    def _resource(self, m: SentMessage, status: str, error_code: int | None = None) -> dict[str, Any]:
        created = format_datetime(m.date_created, usegmt=False)
        uri = f"/{API_VERSION}/Accounts/{self.account_sid}/Messages/{m.sid}"
        return {
            "account_sid": self.account_sid, "api_version": API_VERSION, "body": m.body,
            "date_created": created, "date_sent": created if status == "sent" else None, "date_updated": created,
            "direction": "outbound-api", "error_code": error_code, "error_message": None,
            "from": m.from_, "messaging_service_sid": m.messaging_service_sid, "num_media": "0",
            "num_segments": str(m.num_segments), "price": None, "price_unit": "USD", "sid": m.sid,
            # a Messaging Service's message is `accepted` until the service picks a sender and queues it
            "status": "accepted" if status == "queued" and not m.from_ else status, "to": m.to, "uri": uri + ".json",
            "subresource_uris": {"media": uri + "/Media.json", "feedback": uri + "/Feedback.json"},
        }

    # -- status callbacks --------------------------------------------------------------------------

    def callback_params(self, message: SentMessage, status: str, error_code: int | None = None) -> dict[str, str]:
        """The form fields Twilio posts to a StatusCallback URL."""
        params = {
            "AccountSid": self.account_sid, "ApiVersion": API_VERSION, "From": message.from_ or "",
            "MessageSid": message.sid, "MessageStatus": status, "SmsSid": message.sid,
            "SmsStatus": status, "To": message.to,
        }
        if message.messaging_service_sid:
            params["MessagingServiceSid"] = message.messaging_service_sid
        if error_code is not None and status in ("failed", "undelivered"):
            params["ErrorCode"] = str(error_code)
        return params

    async def _callbacks_for(self, message: SentMessage, reply: Reply) -> None:
        statuses: list[str] = list(reply.callbacks)
        if self.callbacks_duplicated:
            statuses += [s for s in statuses if self._random.random() < 0.5] or statuses[-1:]
        if self.callbacks_shuffled:
            self._random.shuffle(statuses)
        await self.send_status_callbacks(message, statuses, reply.callback_error_code)

    async def send_status_callbacks(self, message: SentMessage | str, statuses: Iterable[str],
                                    error_code: int | None = None) -> list[CallbackAttempt]:
        """Post these statuses, in this order, to the message's StatusCallback (signed like Twilio)."""
        m = self._by_sid[message] if isinstance(message, str) else message
        if not m.status_callback:
            return []
        attempts = []
        for status in statuses:
            if self.callback_delay:
                await asyncio.sleep(self.callback_delay)
            attempts.append(await self.post_signed(m.status_callback,
                                                   self.callback_params(m, status, error_code)))
        return attempts

    def signature(self, url: str, params: dict[str, str]) -> str:
        """X-Twilio-Signature for these params posted to this URL (query string included)."""
        return str(self._validator.compute_signature(url, params))

    async def post_signed(self, url: str, params: dict[str, str]) -> CallbackAttempt:
        """POST form params to url with X-Twilio-Signature, as Twilio does for webhooks."""
        assert self._session is not None, "server not started"
        signature = self.signature(url, params)
        headers = {"X-Twilio-Signature": signature, "User-Agent": "TwilioProxy/1.1",
                   "I-Twilio-Idempotency-Token": secrets.token_hex(16)}
        status: int | None
        try:
            async with self._session.post(url, data=params, headers=headers) as response:
                await response.read()
                status = response.status
        except (TimeoutError, OSError):
            status = None
        attempt = CallbackAttempt(url=url, params=params, signature=signature, response_status=status)
        self.callbacks.append(attempt)
        return attempt


@dataclass(frozen=True, slots=True, kw_only=True)
class Webhook:
    """One request the receiver got: the full URL as called, form params, and Twilio's signature."""

    url: str
    params: dict[str, str]
    signature: str | None


class WebhookReceiver:
    """A tiny HTTP endpoint on 127.0.0.1 that records status callbacks; `url(path)` gives its address."""

    def __init__(self, status: int = 204) -> None:
        self.status = status
        self.received: list[Webhook] = []
        self.port = 0
        self._runner: web.AppRunner | None = None
        self._event = asyncio.Event()

    def url(self, path: str = "/twilio/status") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    async def _handle(self, request: web.Request) -> web.Response:
        form = await request.post()
        self.received.append(Webhook(url=str(request.url), signature=request.headers.get("X-Twilio-Signature"),
                                     params={k: v for k, v in form.items() if isinstance(v, str)}))
        self._event.set()
        return web.Response(status=self.status)

    async def wait_for(self, count: int, timeout: float = 5.0) -> list[Webhook]:
        """Wait until at least `count` requests have arrived."""
        async with asyncio.timeout(timeout):
            while len(self.received) < count:
                self._event.clear()
                await self._event.wait()
        return self.received

    async def start(self) -> WebhookReceiver:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner, self.port = await serve(app, "127.0.0.1", 0, reuse_address=False)
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--account-sid", default=DEFAULT_ACCOUNT_SID)
    parser.add_argument("--auth-token", default=DEFAULT_AUTH_TOKEN)
    parser.add_argument("--delay", type=float, default=0.0, help="seconds before each answer")
    parser.add_argument("--callbacks", action="store_true", help="send status callbacks")
    parser.add_argument("--no-record", action="store_true", help="keep no per-message records")
    return parser.parse_args(argv)


async def _serve(args: argparse.Namespace) -> None:
    server = TwilioServer(account_sid=args.account_sid, auth_token=args.auth_token, port=args.port,
                          record=not args.no_record, send_callbacks=args.callbacks)
    if args.delay:
        server.set_default(ok(delay=args.delay))
    await server.start()
    print(json.dumps({"url": server.base_url, "account_sid": server.account_sid,
                      "auth_token": server.auth_token}), flush=True)
    stopped = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stopped.set)
    try:
        await stopped.wait()
    finally:
        await server.stop()
        print(json.dumps({"requests": server.requests, "accepted": server.accepted_count}), flush=True)


def main(argv: Sequence[str] | None = None) -> None:
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(_parse_args(argv)))


if __name__ == "__main__":
    main()
