"""Settings -> connected parts: the one place that picks real or local adapters."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone

from nats.aio.client import Client as NATS
from nats.js import JetStreamContext

from sims.adapters import jetstream as jsa
from sims.config import Settings
from sims.protocol_config import ProtocolConfig, load_protocol
from sims.services import IncidentService


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(timezone.utc)


@dataclass
class Runtime:
    """A connected SIMS: NATS, the stores on it, and the services using them."""

    settings: Settings
    protocol: ProtocolConfig
    nc: NATS
    js: JetStreamContext
    store: jsa.NatsEventStore
    audit: jsa.NatsAuditLog
    kv: jsa.NatsKV
    incidents: IncidentService
    extras: dict[str, object] = field(default_factory=dict)

    async def close(self) -> None:
        if not self.nc.is_closed:
            await self.nc.drain()


async def connect_runtime(settings: Settings, url: str, name: str, protocol: ProtocolConfig | None = None,
                          setup: bool = True) -> Runtime:
    """Connect to NATS at `url`, create the topology if asked, and wire the services."""
    protocol = protocol or load_protocol(settings.protocol)
    nc = await jsa.connect(url, name)
    js = nc.jetstream(timeout=10.0)
    if setup:
        await jsa.ensure_topology(js, jsa.replicas_for(nc, settings.replicas))
    store, audit, kv = jsa.NatsEventStore(js), jsa.NatsAuditLog(js), jsa.NatsKV(js)
    incidents = IncidentService(store=store, audit=audit, kv=kv, protocol=protocol, clock=SystemClock())
    return Runtime(settings=settings, protocol=protocol, nc=nc, js=js, store=store, audit=audit, kv=kv,
                   incidents=incidents)
