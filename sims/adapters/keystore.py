"""Per-incident data keys in KV `sims_keys` (history 1), and the event store that seals with them.

`sims_keys`: `<incident id>` -> base64 AES-256 key. Destroying a key purges it (a rollup purge
marker replaces every stored revision), and the marker stays as a tombstone: a destroyed key is
never created again. `SealingEventStore` wraps the JetStream event store: restricted details are
sealed on append and opened on load; once an incident's `personal_data.erased` event is stored,
its sealed fields read as empty without asking for the key.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import Any

import structlog
from nats.js import JetStreamContext
from nats.js.api import KeyValueConfig, StorageType
from nats.js.errors import BucketNotFoundError, KeyNotFoundError, KeyWrongLastSequenceError, NotFoundError

from sims import crypto
from sims.adapters.jetstream import retrying
from sims.errors import SimsError
from sims.messages import Event, EventType
from sims.ports import EventStore

BUCKET = "sims_keys"
CACHE_SECONDS = 60.0
CACHE_SIZE = 1024
UNAVAILABLE = crypto.UNAVAILABLE
log = structlog.get_logger("sims.keys")


class KeyDestroyed(SimsError):
    """The incident's data key was destroyed (its personal data erased): nothing new can be sealed."""

    code = "key_destroyed"

    def __init__(self, incident_id: str) -> None:
        self.incident_id = incident_id
        super().__init__(f"The personal data of incident {incident_id} was erased; restricted details "
                         "cannot be added to it")


async def ensure_key_bucket(js: JetStreamContext, replicas: int = 1) -> Any:
    return await js.create_key_value(KeyValueConfig(bucket=BUCKET, history=1, replicas=replicas,
                                                    storage=StorageType.FILE))


class NatsKeyStore:
    """Data keys by incident id; a short in-process cache (a destroyed key leaves it at once here,
    and within `CACHE_SECONDS` elsewhere; no process decrypts after the erasure event anyway)."""

    def __init__(self, js: JetStreamContext, replicas: int = 1) -> None:
        self.js = js
        self.replicas = replicas
        self._kv: Any = None
        self._cache: OrderedDict[str, tuple[bytes, float]] = OrderedDict()

    async def _bucket(self) -> Any:
        if self._kv is None:
            try:
                self._kv = await retrying(lambda: self.js.key_value(BUCKET))
            except (BucketNotFoundError, NotFoundError):
                self._kv = await ensure_key_bucket(self.js, self.replicas)
        return self._kv

    def _remember(self, incident_id: str, key: bytes) -> bytes:
        self._cache[incident_id] = (key, time.monotonic() + CACHE_SECONDS)
        self._cache.move_to_end(incident_id)
        while len(self._cache) > CACHE_SIZE:
            self._cache.popitem(last=False)
        return key

    async def get(self, incident_id: str) -> bytes | None:
        """The incident's key, or None (never made, or destroyed)."""
        cached = self._cache.get(incident_id)
        if cached and cached[1] > time.monotonic():
            return cached[0]
        self._cache.pop(incident_id, None)
        kv = await self._bucket()
        try:
            entry = await retrying(lambda: kv.get(incident_id))
        except KeyNotFoundError:
            return None
        if not entry.value:
            return None
        return self._remember(incident_id, crypto.decode_key(entry.value.decode()))

    async def get_or_create(self, incident_id: str) -> bytes:
        """The incident's key, made now if it has none; KeyDestroyed if it was destroyed."""
        found = await self.get(incident_id)
        if found is not None:
            return found
        kv = await self._bucket()
        key = crypto.new_key()
        try:  # last=0: only if the subject never held anything (a purge marker counts: a tombstone)
            await retrying(lambda: kv.update(incident_id, crypto.encode_key(key).encode(), last=0))
        except KeyWrongLastSequenceError:
            winner = await self.get(incident_id)  # another writer made it first, or it was destroyed
            if winner is None:
                raise KeyDestroyed(incident_id) from None
            return winner
        return self._remember(incident_id, key)

    async def destroy(self, incident_id: str) -> bool:
        """Purge the incident's key from the bucket's stream; True if a key was there to destroy."""
        self._cache.pop(incident_id, None)
        kv = await self._bucket()
        try:
            entry = await retrying(lambda: kv.get(incident_id))
            existed = bool(entry.value)
        except KeyNotFoundError:
            existed = False
        try:
            last = await retrying(lambda: self.js.get_last_msg(f"KV_{BUCKET}", f"$KV.{BUCKET}.{incident_id}"))
            tombstone = (last.headers or {}).get("KV-Operation") == "PURGE"
        except NotFoundError:
            tombstone = False
        if not tombstone:
            await retrying(lambda: kv.purge(incident_id))
        return existed


class SealingEventStore:
    """An EventStore that seals personal fields before they reach the stream and opens them on load."""

    def __init__(self, inner: EventStore, keys: NatsKeyStore) -> None:
        self.inner = inner
        self.keys = keys

    async def append(self, incident_id: str, events: list[Any], expected_seq: int, msg_id: str) -> int:
        if crypto.needs_key(e.data for e in events):
            key = await self.keys.get_or_create(incident_id)
            events = [e.model_copy(update={"data": crypto.seal_data(key, e.data, incident_id=incident_id)})
                      if crypto.needs_key([e.data]) else e for e in events]
        return await self.inner.append(incident_id, events, expected_seq, msg_id)

    async def load(self, incident_id: str, after: int = 0) -> tuple[list[Any], int]:
        events, seq = await self.inner.load(incident_id, after)
        if not any(crypto.has_sealed(e.data) for e in events):
            return events, seq
        erased = any(e.type is EventType.PERSONAL_DATA_ERASED for e in events)
        key = None if erased else await self.keys.get(incident_id)
        missing = crypto.ERASED
        if key is None and not erased:
            later, _ = await self.inner.load(incident_id, seq)  # erased just after this read?
            if not any(e.type is EventType.PERSONAL_DATA_ERASED for e in later):
                log.error("keys.missing", incident_id=incident_id)
                missing = UNAVAILABLE
        opened: list[Event] = []
        for event in events:
            if crypto.has_sealed(event.data):
                data = crypto.unseal_data(key, event.data, incident_id=incident_id, missing=missing)
                event = event.model_copy(update={"data": data})
            opened.append(event)
        return opened, seq


def purger(js: JetStreamContext) -> Any:
    """`purge(bucket, key)`: remove a KV entry and every revision of it (a rollup purge marker)."""

    async def purge(bucket: str, key: str) -> None:
        kv = await retrying(lambda: js.key_value(bucket))
        await retrying(lambda: kv.purge(key))

    return purge


def notifier_behind(js: JetStreamContext) -> Any:
    """`behind(incident_id) -> bool`: whether the notifier has yet to finish an event of the incident
    (its ack floor is below the incident's last event), so messages it plans may still come."""

    async def behind(incident_id: str) -> bool:
        from sims.adapters.jetstream import EVENTS, NOTIFIER, evt_subject

        try:
            last = await retrying(lambda: js.get_last_msg(EVENTS, evt_subject(incident_id)))
            info = await retrying(lambda: js.consumer_info(EVENTS, NOTIFIER))
        except NotFoundError:  # no events, or no notifier to wait for
            return False
        floor = info.ack_floor.stream_seq if info.ack_floor else 0
        return floor < int(last.seq or 0)

    return behind
