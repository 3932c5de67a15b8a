"""Pulling work from a durable consumer without waiting on another request's answer.

nats-py's `fetch` sends every pull request with one reply inbox, and sends two per call when the
consumer is idle (a probe, then a waiting request). A status the server sends for one request
(404 no messages, 408 expired) can then be taken as the answer to a later one: the later fetch
returns early and leaves its own request waiting on the server, and the fetch after it waits for
that request to expire. After an idle spell, a small burst (the five emails of a ten-person incident)
could wait up to the whole pull timeout (0.5 s) before being sent.

`OneRequestPull.fetch` (installed on FastStream's pull subscribers by `install`) keeps one request
in flight at a time, each with its own reply subject, so a status is matched to the request it
answers and a late one is ignored (statuses come on the request's reply subject; messages come with
their stream subject, so each is counted against the one request in flight: a request is only taken
as over once the server said so, or its batch came, after which it brings nothing more). Messages are
handed over as soon as they arrive (with whatever else has arrived by then); a request stays open
across calls until the server ends it (its batch taken, 404, 408, 409) or its expiry has passed by a
second with no word (its end was lost in a reconnect), and only then is another sent. No message is
dropped: a message is handed over whichever request brought it, and what an earlier nats-py fetch of
the same subscription left in its inbox is taken first.
"""

from __future__ import annotations

import asyncio
import json
from collections import deque
from typing import Any

import structlog
from nats.aio.msg import Msg
from nats.js import JetStreamContext

log = structlog.get_logger("sims.pull")

LOST_AFTER = 1.0  # seconds past a request's expiry with no word from the server: treated as ended
REFUSED_PAUSE = 0.5  # seconds before asking again after a request was refused (409, 503)


def is_work(msg: Msg) -> bool:
    """A message of the stream (acknowledgeable), not a status or heartbeat from the server."""
    return bool(msg.reply) and msg.reply.startswith("$JS.ACK.")


class OneRequestPull:
    """`fetch(batch, timeout)` for one durable pull consumer, one request in flight at a time."""

    def __init__(self, subscription: JetStreamContext.PullSubscription) -> None:
        self._old = subscription  # its inbox may still get what a nats-py fetch asked for before
        self._nc = subscription._nc
        self._next = subscription._nms  # $JS.API.CONSUMER.MSG.NEXT.<stream>.<consumer>
        self._inbox = self._nc.new_inbox()
        self._number = 0
        self._open: str | None = None  # the reply subject of the request in flight
        self._expires = 0.0  # its expiry (loop time)
        self._left = 0  # messages it may still bring
        self._ready: deque[Msg] = deque()
        self._woken = asyncio.Event()
        self._refused = False
        self._sub: Any = None

    async def start(self) -> None:
        self._sub = await self._nc.subscribe(f"{self._inbox}.*", cb=self._arrived)

    async def stop(self) -> None:
        if self._sub is not None:
            await self._sub.unsubscribe()

    async def _arrived(self, msg: Msg) -> None:
        if is_work(msg):  # delivered with the stream's subject: counted against the request in flight,
            self._ready.append(msg)  # the only one that can still bring any (see the module's doc)
            if self._open is not None:
                self._left -= 1
                if self._left <= 0:
                    self._open = None  # its whole batch came: the server has ended it
            self._woken.set()
            return
        status = (msg.headers or {}).get("Status", "")
        if msg.subject == self._open and status != "100":  # 404, 408, 409, 503: the request is over
            self._open = None
            self._refused = status not in ("404", "408")  # not simply "nothing came": slow down
            self._woken.set()
        # anything else is a late word about a request already over, or a heartbeat: nothing to do

    async def fetch(self, batch: int = 1, timeout: float | None = 5.0, heartbeat: float | None = None) -> list[Msg]:
        """Up to `batch` messages: at once if any are here; else as soon as some arrive, within `timeout`
        (an empty list if none did). nats-py's signature; `heartbeat` is not used."""
        timeout = 5.0 if timeout is None else timeout
        self._woken.clear()  # before looking: whatever arrives from here on wakes the wait below
        taken = self._take(batch)
        if taken:
            return taken
        loop = asyncio.get_running_loop()
        if self._open is None or loop.time() > self._expires + LOST_AFTER:
            if self._open is not None:
                log.debug("pull.request_lost", subject=self._next)
            self._number += 1
            self._open, self._left = f"{self._inbox}.{self._number}", batch
            self._expires = loop.time() + timeout
            request = {"batch": batch, "expires": int(timeout * 1_000_000_000)}
            await self._nc.publish(self._next, json.dumps(request).encode(), reply=self._open)
        try:
            await asyncio.wait_for(self._woken.wait(), timeout)
        except TimeoutError:
            pass
        await asyncio.sleep(0)  # what was read from the socket with the first one lands too
        taken = self._take(batch)
        if not taken and self._refused:  # e.g. no JetStream for now, a leader change: not in a tight loop
            self._refused = False
            await asyncio.sleep(min(timeout, REFUSED_PAUSE))
        return taken

    def _take(self, batch: int) -> list[Msg]:
        taken: list[Msg] = []
        earlier = self._old._sub._pending_queue
        while len(taken) < batch and not earlier.empty():
            msg = earlier.get_nowait()
            self._old._sub._pending_size -= len(msg.data)
            if is_work(msg):
                taken.append(msg)
        while len(taken) < batch and self._ready:
            taken.append(self._ready.popleft())
        return taken


async def install(broker: Any) -> list[OneRequestPull]:
    """Give every started pull subscriber of `broker` a `OneRequestPull` fetch."""
    installed = []
    for subscriber in broker.subscribers:
        subscription = getattr(subscriber, "subscription", None)
        if isinstance(subscription, JetStreamContext.PullSubscription):
            pull = OneRequestPull(subscription)
            await pull.start()
            subscription.fetch = pull.fetch  # type: ignore[method-assign]  # this subscription's own
            installed.append(pull)
    return installed
