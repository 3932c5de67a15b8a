"""Group commit: concurrent writes to one stream stored together as one JetStream atomic batch.

With `sync_interval: always` every stored message costs nats-server an fsync, and it does not group
concurrent publishes: 64 senders each writing a record pay 64 fsyncs one after another. Here, while
one write to a stream is in flight, later writes to that stream wait, and then go together as one
atomic batch (nats-server 2.12+, `allow_atomic` on the stream): one commit, one fsync, all or none
stored. A write with nothing in flight goes at once, exactly as it would alone.

A batch refused as a whole (one write's check failed: a wrong last sequence, a duplicate message id;
the stream does not allow batches; no answer in time) is not an error: every write in it is then
made again through its own `alone` path, the one it would have taken without batching, which gives
each writer its own exact answer (a duplicate acknowledged, a stale revision refused). An atomic
batch is never stored in part, so that retry is as safe as the retry of a single lost publish.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from weakref import WeakKeyDictionary

import structlog
from nats.aio.client import Client as NATS
from nats.errors import ConnectionClosedError, ConnectionReconnectingError, NoRespondersError
from nats.errors import TimeoutError as NatsTimeoutError

log = structlog.get_logger("sims.group_commit")

MAX_BATCH = 256  # nats-server refuses batches over 1,000 messages
ATOMIC_DISABLED = 10174  # the stream was made without allow_atomic (or by an older SIMS)


@dataclass(slots=True)
class _Write:
    subject: str
    payload: bytes
    headers: dict[str, str]
    alone: Callable[[], Awaitable[int]]
    done: asyncio.Future[int]


@dataclass
class GroupCommit:
    """Writes to JetStream streams over one connection, grouped per stream while one is in flight."""

    nc: NATS
    timeout: float = 5.0
    batches: int = 0  # committed atomic batches (what tests look at)
    batched: int = 0  # writes stored in them
    _pending: dict[str, list[_Write]] = field(default_factory=dict)
    _busy: set[str] = field(default_factory=set)
    _refused: set[str] = field(default_factory=set)  # streams without allow_atomic: every write alone
    _flushing: set[asyncio.Task[None]] = field(default_factory=set)

    async def write(self, stream: str, subject: str, payload: bytes, headers: dict[str, str],
                    alone: Callable[[], Awaitable[int]]) -> int:
        """Store one message on `stream`; its stream sequence. `alone()` makes the same write by itself."""
        if stream in self._refused:
            return await alone()
        if stream not in self._busy:  # nothing in flight: go now, and gather whatever comes meanwhile
            self._busy.add(stream)
            try:
                return await alone()
            finally:
                self._drain(stream)
        done: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._pending.setdefault(stream, []).append(_Write(subject, payload, headers, alone, done))
        return await done

    def _drain(self, stream: str) -> None:
        if self._pending.get(stream):
            task = asyncio.get_running_loop().create_task(self._flush(stream))
            self._flushing.add(task)  # held until done: the loop keeps only a weak reference
            task.add_done_callback(self._flushing.discard)
        else:
            self._busy.discard(stream)

    async def _flush(self, stream: str) -> None:
        try:
            while pending := self._pending.get(stream):
                batch, self._pending[stream] = pending[:MAX_BATCH], pending[MAX_BATCH:]
                if len(batch) == 1 or stream in self._refused:
                    await asyncio.gather(*(self._alone(w) for w in batch))
                    continue
                try:
                    await self._commit(stream, batch)
                except Exception:  # never leave a writer waiting: each goes alone instead
                    log.exception("group_commit.failed", stream=stream, writes=len(batch))
                    await asyncio.gather(*(self._alone(w) for w in batch if not w.done.done()))
        finally:
            self._busy.discard(stream)  # no await since the loop's last check: nothing is left behind

    async def _commit(self, stream: str, batch: list[_Write]) -> None:
        batch_id = uuid.uuid4().hex
        answer: dict[str, Any] = {}
        try:
            for number, w in enumerate(batch[:-1], start=1):
                await self.nc.publish(w.subject, w.payload, headers={
                    **w.headers, "Nats-Batch-Id": batch_id, "Nats-Batch-Sequence": str(number)})
            last = batch[-1]
            reply = await self.nc.request(last.subject, last.payload, timeout=self.timeout, headers={
                **last.headers, "Nats-Batch-Id": batch_id, "Nats-Batch-Sequence": str(len(batch)),
                "Nats-Batch-Commit": "1"})
            answer = json.loads(reply.data)
        except (TimeoutError, NatsTimeoutError, NoRespondersError, ConnectionReconnectingError, ConnectionClosedError,
                ValueError) as exc:  # no answer, or not one we can read
            answer = {"error": {"description": type(exc).__name__}}
        error = answer.get("error")
        if error or int(answer.get("count", 0)) != len(batch):
            if isinstance(error, dict) and error.get("err_code") == ATOMIC_DISABLED:
                self._refused.add(stream)
                log.warning("group_commit.disabled", stream=stream)
            else:
                log.debug("group_commit.refused", stream=stream, writes=len(batch), error=error)
            await asyncio.gather(*(self._alone(w) for w in batch))
            return
        first = int(answer["seq"]) - len(batch) + 1  # a batch is stored in one run of sequences
        self.batches, self.batched = self.batches + 1, self.batched + len(batch)
        for offset, w in enumerate(batch):
            if not w.done.done():
                w.done.set_result(first + offset)

    @staticmethod
    async def _alone(w: _Write) -> None:
        try:
            seq = await w.alone()
        except BaseException as exc:
            if not w.done.done():
                w.done.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
            return
        if not w.done.done():
            w.done.set_result(seq)


_BY_CONNECTION: WeakKeyDictionary[NATS, GroupCommit] = WeakKeyDictionary()


def group_commit(nc: NATS) -> GroupCommit:
    """The connection's group committer (one per connection, so batches never mix credentials)."""
    found = _BY_CONNECTION.get(nc)
    if found is None:
        found = _BY_CONNECTION[nc] = GroupCommit(nc)
    return found
