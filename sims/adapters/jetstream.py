"""JetStream topology and the stores built on it: events, audit trail, key-value indexes.

Streams (subjects):
  SIMS_COMMANDS  sims.cmd.>     work queue of commands; Nats-Msg-Id de-duplicates re-sends
  SIMS_EVENTS    sims.evt.<id>  one message per accepted command (its events); no delete/purge
  SIMS_AUDIT     sims.audit.<chain>  hash-chained audit records; no delete/purge
  SIMS_DEAD      sims.dlq.>     dead letters: bad input and work that exhausted its retries
  SIMS_OUTBOX    sims.send.<channel>  work queue of messages to send; Nats-Msg-Id = message key
KV buckets: sims_results (command id -> result), sims_incidents (id -> current state),
            sims_refs (reference -> id; per-year counters), sims_deliveries (message records,
            people told, provider ids of older messages), sims_links (link id -> what the link is bound to).
"""

from __future__ import annotations

import asyncio
import json
import random
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

import nats
from nats.aio.client import Client as NATS
from nats.errors import ConnectionReconnectingError, NoRespondersError
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import JetStreamContext
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    KeyValueConfig,
    PubAck,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)
from nats.js.errors import (
    APIError,
    BadRequestError,
    KeyNotFoundError,
    KeyWrongLastSequenceError,
    NoStreamResponseError,
    NotFoundError,
    ServiceUnavailableError,
)
from nats.js.kv import _is_key_valid

from sims.adapters.group_commit import GroupCommit, group_commit
from sims.audit import GENESIS, AuditRecord, seal
from sims.messages import Event
from sims.ports import StaleSequence
from sims.services import INCIDENTS

COMMANDS, EVENTS, AUDIT, DEAD = "SIMS_COMMANDS", "SIMS_EVENTS", "SIMS_AUDIT", "SIMS_DEAD"
OUTBOX = "SIMS_OUTBOX"
CMD_SUBJECT = "sims.cmd.incident"
STATUS_SUBJECT = "sims.cmd.delivery"
ACK_SUBJECT = "sims.cmd.ack"  # acknowledgements and task actions: only the web role may publish here
ACK_CONSUMER = "acknowledgements"
AUDIT_NOTE_SUBJECT = "sims.cmd.audit"  # audit records the web asks the worker to append
AUDIT_NOTE_CONSUMER = "audit-notes"
STATUS_CONSUMER = "delivery-status"
NOTIFIER = "notifier"
SEND_CONSUMERS = {"sms": "sender-sms", "email": "sender-email", "whatsapp": "sender-whatsapp"}
SEND_MAX_DELIVER = 12
API_SUBJECT = "sims.api.command"
DLQ_INTAKE = "sims.dlq.intake"
DLQ_COMMANDS = "sims.dlq.commands"
COMMAND_CONSUMER = "incident-commands"
MAX_DELIVER = 5
WRONG_LAST_SEQUENCE = 10071
STREAM_NAME_IN_USE = 10058  # a stream of that name exists with another configuration
DAY = 86400.0


def evt_subject(incident_id: str) -> str:
    return f"sims.evt.{incident_id}"


def audit_subject(chain: str) -> str:
    return f"sims.audit.{chain}"


def reply_subject(command_id: str) -> str:
    return f"sims.reply.{command_id}"


async def connect(url: str, name: str, **options: Any) -> NATS:
    """Connect with reconnects forever (a worker outlives a NATS restart); `options`: credentials, TLS."""
    async def _error(exc: Exception) -> None:
        import structlog
        structlog.get_logger().warning("nats.error", error=str(exc))

    return await nats.connect(servers(url), name=name, max_reconnect_attempts=-1, reconnect_time_wait=0.5,
                              error_cb=_error, **options)


def servers(url: str) -> list[str]:
    """`nats://a:4222,nats://b:4222` -> every node of a cluster, so a client outlives the one it uses."""
    return [u.strip() for u in url.split(",") if u.strip()]


# What a JetStream write raises while a stream has no leader (an election after a node died or
# stalled) or while the client reconnects: the write may or may not be stored, so it is retried with
# the same headers; a Nats-Msg-Id makes the retry a duplicate the server acknowledges, not a copy.
TRANSIENT = (NatsTimeoutError, asyncio.TimeoutError, NoRespondersError, NoStreamResponseError,
             ServiceUnavailableError, ConnectionReconnectingError)
DUPLICATE_IN_PROCESS = 10158  # a retry arrived while the first copy is still being replicated


def transient(exc: BaseException) -> bool:
    return isinstance(exc, TRANSIENT) or getattr(exc, "err_code", None) == DUPLICATE_IN_PROCESS


async def publish(js: JetStreamContext, subject: str, payload: bytes, headers: dict[str, str] | None = None,
                  timeout: float = 5.0, patience: float = 60.0) -> PubAck:
    """Publish to a stream and wait for its PubAck, retrying transient failures for up to `patience` s."""
    ack: PubAck = await retrying(js.publish, subject, payload, headers=headers, timeout=timeout, patience=patience)
    return ack


async def retrying(operation: Any, *args: Any, patience: float = 60.0, **kwargs: Any) -> Any:
    """Await `operation(*args, **kwargs)` (a JetStream or KV call); again after a transient failure, for `patience` s."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + patience
    for attempt in range(1_000):
        try:
            return await operation(*args, **kwargs)
        except (*TRANSIENT, APIError) as exc:
            if loop.time() >= deadline or not transient(exc):
                raise
            await asyncio.sleep(min(1.0, 0.05 * 2 ** attempt) * random.uniform(0.5, 1.0))
    raise RuntimeError("unreachable")


async def stored_after(js: JetStreamContext, stream: str, subject: str, seq: int, msg_id: str) -> int | None:
    """After a guarded write is refused as stale: the sequence of our own earlier copy, if that is what followed.

    A retried write (the first copy stored, its acknowledgement lost in a leader election) fails the
    expected-last-subject-sequence check before de-duplication applies; the message right after `seq`
    on `subject` carrying our `Nats-Msg-Id` says the write was ours.
    """
    try:
        msg = await retrying(js.get_msg, stream, seq=seq + 1, subject=subject, next=True)
    except NotFoundError:
        return None
    return int(msg.seq or 0) if (msg.headers or {}).get("Nats-Msg-Id") == msg_id else None


def replicas_for(nc: NATS, wanted: int) -> int:
    if wanted:
        return wanted
    peers = set(nc._server_info.get("connect_urls") or [])
    return 3 if len(peers) >= 3 else 1


async def ensure_topology(js: JetStreamContext, replicas: int = 1) -> None:
    """Create (or update) every stream, consumer and bucket SIMS uses; safe to run on every start."""
    streams = [
        StreamConfig(name=COMMANDS, subjects=["sims.cmd.>"], retention=RetentionPolicy.WORK_QUEUE,
                     duplicate_window=600.0, max_msg_size=256 * 1024, num_replicas=replicas,
                     storage=StorageType.FILE),
        StreamConfig(name=EVENTS, subjects=["sims.evt.>"], deny_delete=True, deny_purge=True,
                     allow_direct=True, num_replicas=replicas, storage=StorageType.FILE),
        StreamConfig(name=AUDIT, subjects=["sims.audit.>"], deny_delete=True, deny_purge=True,
                     allow_direct=True, allow_atomic=True, num_replicas=replicas, storage=StorageType.FILE),
        StreamConfig(name=DEAD, subjects=["sims.dlq.>"], max_age=365 * DAY, num_replicas=replicas,
                     storage=StorageType.FILE),
        StreamConfig(name=OUTBOX, subjects=["sims.send.>"], retention=RetentionPolicy.WORK_QUEUE,
                     duplicate_window=3600.0, allow_atomic=True, num_replicas=replicas, storage=StorageType.FILE),
    ]
    for config in streams:
        try:
            await js.add_stream(config)
        except BadRequestError:
            await js.update_stream(config)
    await js.add_consumer(COMMANDS, ConsumerConfig(
        durable_name=COMMAND_CONSUMER, ack_policy=AckPolicy.EXPLICIT, max_deliver=MAX_DELIVER,
        ack_wait=30.0, deliver_policy=DeliverPolicy.ALL, filter_subject=CMD_SUBJECT, max_ack_pending=1000,
    ))
    for durable, subject in ((ACK_CONSUMER, ACK_SUBJECT), (AUDIT_NOTE_CONSUMER, AUDIT_NOTE_SUBJECT)):
        await js.add_consumer(COMMANDS, ConsumerConfig(
            durable_name=durable, ack_policy=AckPolicy.EXPLICIT, max_deliver=MAX_DELIVER, ack_wait=30.0,
            deliver_policy=DeliverPolicy.ALL, filter_subject=subject, max_ack_pending=1000))
    await js.add_consumer(COMMANDS, ConsumerConfig(
        durable_name=STATUS_CONSUMER, ack_policy=AckPolicy.EXPLICIT, max_deliver=MAX_DELIVER, ack_wait=30.0,
        filter_subject=STATUS_SUBJECT, max_ack_pending=1000))
    await js.add_consumer(EVENTS, ConsumerConfig(
        durable_name=NOTIFIER, ack_policy=AckPolicy.EXPLICIT, max_deliver=MAX_DELIVER, ack_wait=60.0,
        deliver_policy=DeliverPolicy.ALL, filter_subject="sims.evt.>", max_ack_pending=1000))
    for channel, durable in SEND_CONSUMERS.items():
        await js.add_consumer(OUTBOX, ConsumerConfig(
            durable_name=durable, ack_policy=AckPolicy.EXPLICIT, max_deliver=SEND_MAX_DELIVER, ack_wait=60.0,
            filter_subject=f"sims.send.{channel}", max_ack_pending=5000))
    for bucket, history in (("sims_results", 1), (INCIDENTS, 1), ("sims_refs", 1),
                            ("sims_deliveries", 1), ("sims_links", 1), ("sims_timers", 1),
                            ("sims_funds", 1), ("sims_keys", 1)):  # sims_keys: sims/adapters/keystore.py
        try:
            await js.create_key_value(KeyValueConfig(bucket=bucket, history=history, replicas=replicas,
                                                     storage=StorageType.FILE))
        except BadRequestError as exc:
            if exc.err_code != STREAM_NAME_IN_USE:  # made before, and since allowed atomic batches
                raise
        await allow_atomic(js, f"KV_{bucket}")


async def allow_atomic(js: JetStreamContext, stream: str) -> None:
    """Let `stream` take atomic batches (`sims.adapters.group_commit`); KV buckets are made without."""
    config = (await js.stream_info(stream)).config
    if not config.allow_atomic:
        config.allow_atomic = True
        await js.update_stream(config)


async def read_subject(js: JetStreamContext, stream: str, subject: str) -> AsyncIterator[Any]:
    """Every message on `subject` (wildcards allowed) in stream order, then stop."""
    info = await js.stream_info(stream, subjects_filter=subject)
    total = sum((info.state.subjects or {}).values()) if info.state.subjects else 0
    if total == 0:
        return
    sub = await js.subscribe(subject, stream=stream, ordered_consumer=True, deliver_policy=DeliverPolicy.ALL)
    try:
        seen = 0
        while seen < total:
            msg = await sub.next_msg(timeout=5.0)
            seen += 1
            yield msg
            if msg.metadata.num_pending == 0:
                break
    finally:
        await sub.unsubscribe()


def _committer(js: JetStreamContext) -> GroupCommit:
    """The group committer of the connection behind `js` (nats-py keeps it only as `_nc`)."""
    return group_commit(js._nc)


class NatsEventStore:
    """Events per incident on `sims.evt.<id>`; appends are guarded by the subject's last sequence."""

    def __init__(self, js: JetStreamContext) -> None:
        self.js = js

    async def load(self, incident_id: str, after: int = 0) -> tuple[list[Event], int]:
        """Events of the incident stored after stream sequence `after`, and the last sequence read."""
        events: list[Event] = []
        subject, last = evt_subject(incident_id), after
        while True:
            try:
                msg = await retrying(self.js.get_msg, EVENTS, seq=last + 1, subject=subject, next=True)
            except NotFoundError:
                return events, last
            events.extend(Event.model_validate(e) for e in json.loads(msg.data or b"{}")["events"])
            last = int(msg.seq or 0)

    async def append(self, incident_id: str, events: list[Event], expected_seq: int, msg_id: str) -> int:
        payload = json.dumps({"events": [e.model_dump(mode="json") for e in events]}).encode()
        headers = {"Nats-Expected-Last-Subject-Sequence": str(expected_seq), "Nats-Msg-Id": f"evt-{msg_id}"}
        try:
            ack = await publish(self.js, evt_subject(incident_id), payload, headers)
        except APIError as exc:
            if exc.err_code == WRONG_LAST_SEQUENCE:
                ours = await stored_after(self.js, EVENTS, evt_subject(incident_id), expected_seq, headers["Nats-Msg-Id"])
                if ours is not None:
                    return ours
                raise StaleSequence(incident_id) from exc
            raise
        return int(ack.seq)


class NatsAuditLog:
    """Appends hash-chained records, one chain per incident (plus `system`), serialised per chain."""

    def __init__(self, js: JetStreamContext) -> None:
        self.js = js
        self._tips: dict[str, tuple[int, int, str]] = {}  # chain -> (stream seq, index, hash)
        self._locks: dict[str, asyncio.Lock] = {}

    async def _tip(self, chain: str) -> tuple[int, int, str]:
        try:
            msg = await retrying(lambda: self.js.get_last_msg(AUDIT, audit_subject(chain)))
        except NotFoundError:
            return 0, -1, GENESIS
        record = json.loads(msg.data)
        return int(msg.seq or 0), int(record["index"]), str(record["hash"])

    async def append(self, *, chain: str, actor: str, incident_id: str | None, action: str, outcome: str,
                     detail: dict[str, Any] | None = None, at: datetime | None = None) -> AuditRecord:
        lock = self._locks.setdefault(chain, asyncio.Lock())
        async with lock:
            for attempt in range(50):
                # A chain this process has not written yet is most often new (a recipient's chain): try it
                # as empty, with no read first; if it is not, the server refuses (wrong last sequence).
                tip = self._tips.get(chain) or ((0, -1, GENESIS) if attempt == 0 else await self._tip(chain))
                seq, index, prev = tip
                record = seal(chain=chain, index=index + 1, prev=prev, at=at or datetime.now(UTC),
                              actor=actor, incident_id=incident_id, action=action, outcome=outcome,
                              detail=detail)
                msg_id = f"audit-{record.hash}"
                subject, data = audit_subject(chain), record.model_dump_json().encode()
                headers = {"Nats-Expected-Last-Subject-Sequence": str(seq), "Nats-Msg-Id": msg_id}

                async def alone(subject: str = subject, data: bytes = data, headers: dict[str, str] = headers) -> int:
                    return int((await publish(self.js, subject, data, headers=headers)).seq)

                try:
                    stored = await _committer(self.js).write(AUDIT, subject, data, headers, alone)
                except APIError as exc:
                    if exc.err_code != WRONG_LAST_SEQUENCE:
                        raise
                    ours = await stored_after(self.js, AUDIT, audit_subject(chain), seq, msg_id)
                    if ours is not None:  # stored by an earlier try of this same publish
                        self._tips[chain] = (ours, record.index, record.hash)
                        return record
                    self._tips.pop(chain, None)  # another writer appended: re-read the tip
                    await asyncio.sleep(random.uniform(0, 0.005 * (attempt + 1)))
                    continue
                self._tips[chain] = (stored, record.index, record.hash)
                return record
        raise RuntimeError(f"audit chain {chain} too contended to append")

    async def records(self, chain: str | None = None) -> AsyncIterator[dict[str, Any]]:
        """Every record (or an incident's: its own chain and its recipients' chains), in stored order."""
        if chain is None:
            async for msg in read_subject(self.js, AUDIT, "sims.audit.>"):
                yield json.loads(msg.data)
            return
        found = [(m.metadata.sequence.stream, m.data) async for m in read_subject(self.js, AUDIT, audit_subject(chain))]
        found += [(m.metadata.sequence.stream, m.data)
                  async for m in read_subject(self.js, AUDIT, audit_subject(chain) + ".>")]
        for _seq, data in sorted(found, key=lambda item: item[0]):
            yield json.loads(data)


class NatsKV:
    """JSON values in a KV bucket, with compare-and-set for counters."""

    def __init__(self, js: JetStreamContext) -> None:
        self.js = js
        self._buckets: dict[str, Any] = {}

    async def bucket(self, name: str) -> Any:
        if name not in self._buckets:
            self._buckets[name] = await retrying(lambda: self.js.key_value(name))
        return self._buckets[name]

    async def get(self, bucket: str, key: str) -> Any | None:
        kv = await self.bucket(bucket)
        try:
            entry = await retrying(lambda: kv.get(key))
        except KeyNotFoundError:
            return None
        return json.loads(entry.value) if entry.value else None

    async def _write(self, bucket: str, key: str, payload: bytes, last: int | None,
                     alone: Callable[[], Awaitable[int]]) -> int:
        """One KV write, grouped with concurrent writes to the bucket (`sims.adapters.group_commit`)."""
        if not _is_key_valid(key):
            return int(await alone())  # refused there, with the client's own error
        headers = {} if last is None else {"Nats-Expected-Last-Subject-Sequence": str(last)}
        return await _committer(self.js).write(f"KV_{bucket}", f"$KV.{bucket}.{key}", payload, headers, alone)

    async def put(self, bucket: str, key: str, value: Any) -> None:
        kv = await self.bucket(bucket)
        payload = json.dumps(value, default=str).encode()
        await self._write(bucket, key, payload, None, partial(retrying, kv.put, key, payload))

    async def get_entry(self, bucket: str, key: str) -> tuple[Any | None, int | None]:
        """The value and its revision (None, None when absent): a later `update` can skip its read."""
        kv = await self.bucket(bucket)
        try:
            entry = await retrying(lambda: kv.get(key))
        except KeyNotFoundError:
            return None, None
        return (json.loads(entry.value) if entry.value else None), entry.revision

    async def create(self, bucket: str, key: str, value: Any) -> bool:
        """Store `value` only if the key has none (one write, no read first); False if it had one."""
        kv = await self.bucket(bucket)
        payload = json.dumps(value, default=str).encode()
        try:
            await self._write(bucket, key, payload, 0, partial(retrying, kv.create, key, payload))
        except (KeyWrongLastSequenceError, BadRequestError):
            return False
        return True

    async def count(self, bucket: str, pattern: str = ">") -> int:
        """How many keys match `pattern`, from the stream's subject counts (a key deleted or purged
        still counts while its marker is kept): one request, no values read."""
        info = await retrying(self.js.stream_info, f"KV_{bucket}", subjects_filter=f"$KV.{bucket}.{pattern}")
        return len(info.state.subjects or {})

    async def revision(self, bucket: str) -> int:
        """The bucket's last revision (its stream's last sequence): it changes with every write, delete
        or purge, so an unchanged revision means nothing in the bucket changed. One request."""
        info = await retrying(self.js.stream_info, f"KV_{bucket}")
        return int(info.state.last_seq or 0)

    async def entries(self, bucket: str, pattern: str = ">") -> dict[str, Any]:
        """Every key matching `pattern` (NATS wildcards) with its latest value, filtered by the server.

        A key rewritten while the listing is read can be skipped by the server's last-per-subject walk
        (its old message is gone, its new one lands after the walk's end); every key that existed when
        the listing began and was not seen is therefore read on its own.
        """
        stream, prefix = f"KV_{bucket}", f"$KV.{bucket}."
        info = await self.js.stream_info(stream, subjects_filter=prefix + pattern)
        if not info.state.subjects:
            return {}
        sub = await self.js.subscribe(prefix + pattern, stream=stream, ordered_consumer=True,
                                      deliver_policy=DeliverPolicy.LAST_PER_SUBJECT)
        found: dict[str, Any] = {}
        seen: set[str] = set()
        try:
            while True:
                msg = await sub.next_msg(timeout=5.0)
                key = msg.subject[len(prefix):]
                seen.add(key)
                operation = (msg.headers or {}).get("KV-Operation")
                if operation in ("DEL", "PURGE") or not msg.data:
                    found.pop(key, None)
                else:
                    found[key] = json.loads(msg.data)
                if msg.metadata.num_pending == 0:
                    break
        finally:
            await sub.unsubscribe()
        for key in (subject[len(prefix):] for subject in info.state.subjects):
            if key not in seen and (value := await self.get(bucket, key)) is not None:
                found[key] = value
        return found

    async def update(self, bucket: str, key: str, change: Any,
                     known: tuple[Any | None, int | None] | None = None) -> Any:
        """Read-modify-write with compare-and-set: `change(old or None) -> new`; retried on a race.

        `known`: the (value, revision) the caller read already (`get_entry`), used for the first try.
        When `change` returns the very object it was given, nothing is written (the bucket's revision
        stays as it is).
        """
        kv = await self.bucket(bucket)
        for attempt in range(100):
            if known is not None:
                (old, revision), known = known, None
            else:
                old, revision = await self.get_entry(bucket, key)
            new = change(old)
            if new is old and old is not None:
                return new
            payload = json.dumps(new, default=str).encode()
            try:
                if revision is None:
                    await self._write(bucket, key, payload, 0, partial(retrying, kv.create, key, payload))
                else:
                    await self._write(bucket, key, payload, revision,
                                      partial(retrying, kv.update, key, payload, last=revision))
                return new
            except (KeyWrongLastSequenceError, BadRequestError):
                await asyncio.sleep(random.uniform(0, 0.002 * (attempt + 1)))
        raise RuntimeError(f"{bucket}/{key} too contended")

    async def increment(self, bucket: str, key: str) -> int:
        """Atomically add one to a counter and return the new value."""
        kv = await self.bucket(bucket)
        for attempt in range(100):
            try:
                entry = await retrying(lambda: kv.get(key))
                value, revision = int(entry.value or b"0"), entry.revision
            except KeyNotFoundError:
                value, revision = 0, None
            try:
                if revision is None:
                    await retrying(kv.create, key, str(value + 1).encode())
                else:
                    await retrying(kv.update, key, str(value + 1).encode(), last=revision)
                return value + 1
            except (KeyWrongLastSequenceError, BadRequestError):
                await asyncio.sleep(random.uniform(0, 0.002 * (attempt + 1)))
        raise RuntimeError(f"counter {bucket}/{key} too contended")


class NatsWorkQueue:
    """Work items for the channel workers on `sims.send.<channel>`, de-duplicated by message key."""

    def __init__(self, js: JetStreamContext) -> None:
        self.js = js

    async def enqueue(self, delivery: Any) -> None:
        subject, data = f"sims.send.{delivery.channel.value}", delivery.model_dump_json().encode()
        headers = {"Nats-Msg-Id": delivery.key}

        async def alone() -> int:
            return int((await publish(self.js, subject, data, headers=headers)).seq)

        await _committer(self.js).write(OUTBOX, subject, data, headers, alone)


TIMER_LEASE = timedelta(seconds=60)  # how long a claimed timer is left to the worker that claimed it


class NatsTimers:
    """Timers kept in KV `sims_timers`: they survive restarts; a worker leases a due one by CAS."""

    BUCKET = "sims_timers"

    def __init__(self, js: JetStreamContext) -> None:
        self.js = js
        self._kv: Any = None
        self._me = secrets.token_hex(6)  # tells this worker's claims from another's

    async def _bucket(self) -> Any:
        if self._kv is None:
            self._kv = await retrying(lambda: self.js.key_value(self.BUCKET))
        return self._kv

    async def set(self, key: str, due_at: datetime, payload: dict[str, Any]) -> None:
        kv = await self._bucket()
        await retrying(lambda: kv.put(key, json.dumps({**payload, "due_at": due_at.isoformat()}).encode()))

    async def cancel(self, key: str) -> None:
        kv = await self._bucket()
        try:
            await retrying(lambda: kv.delete(key))
        except (KeyNotFoundError, BadRequestError):
            pass

    async def due(self, now: datetime) -> list[tuple[str, dict[str, Any], int]]:
        """Timers whose time has come: (key, payload, revision)."""
        prefix = f"$KV.{self.BUCKET}."
        info = await self.js.stream_info(f"KV_{self.BUCKET}", subjects_filter=prefix + ">")
        if not info.state.subjects:
            return []
        sub = await self.js.subscribe(prefix + ">", stream=f"KV_{self.BUCKET}", ordered_consumer=True,
                                      deliver_policy=DeliverPolicy.LAST_PER_SUBJECT)
        found = []
        try:
            while True:
                msg = await sub.next_msg(timeout=5.0)
                if msg.data and (msg.headers or {}).get("KV-Operation") not in ("DEL", "PURGE"):
                    payload = json.loads(msg.data)
                    if datetime.fromisoformat(payload["due_at"]) <= now:
                        found.append((msg.subject[len(prefix):], payload, int(msg.metadata.sequence.stream)))
                if msg.metadata.num_pending == 0:
                    return found
        finally:
            await sub.unsubscribe()

    async def claim(self, key: str, revision: int, payload: dict[str, Any], now: datetime) -> int | None:
        """Take a due timer for `TIMER_LEASE`; only one worker wins. The lease's revision, for `done`.

        The claim moves the timer's due time to the end of the lease rather than deleting it, so a worker
        that dies before `done` loses nothing: the timer is due again when the lease runs out and another
        worker fires it (firing is idempotent: command ids and message keys repeat). A retry of this
        worker's own claim (after a lost acknowledgement) is still a win.
        """
        subject, msg_id = f"$KV.{self.BUCKET}.{key}", f"claim.{self._me}.{key}.{revision}"
        body = json.dumps({**payload, "due_at": (now + TIMER_LEASE).isoformat(), "leased_by": self._me}).encode()
        try:
            ack = await publish(self.js, subject, body, {"Nats-Expected-Last-Subject-Sequence": str(revision),
                                                         "Nats-Msg-Id": msg_id})
        except APIError as exc:
            if exc.err_code != WRONG_LAST_SEQUENCE:
                raise
            # another worker took it (or it changed), unless what followed is this worker's own claim
            return await stored_after(self.js, f"KV_{self.BUCKET}", subject, revision, msg_id)
        return int(ack.seq)

    async def done(self, key: str, lease: int) -> None:
        """The timer fired: remove it, unless its lease ran out and another worker has taken it since."""
        headers = {"KV-Operation": "DEL", "Nats-Expected-Last-Subject-Sequence": str(lease)}
        try:
            await publish(self.js, f"$KV.{self.BUCKET}.{key}", b"", headers)
        except APIError as exc:
            if exc.err_code != WRONG_LAST_SEQUENCE:
                raise
