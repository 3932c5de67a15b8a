"""Settings -> connected parts: the one place that picks real or local adapters."""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from functools import partial
from datetime import datetime, timedelta, timezone

from nats.aio.client import Client as NATS
from nats.js import JetStreamContext

from sims.adapters import jetstream as jsa
from sims.adapters.nats_auth import NatsAccess, RelayedAuditLog, SigningJetStream, access_for
from sims.adapters.keystore import NatsKeyStore, SealingEventStore, notifier_behind, purger
from sims.adapters.outbox import erase_incident as erase_outbox
from sims.config import Settings
from sims.erasure import ErasureService
from sims.ports import EventStore
from sims.directory import Channel, Directory, load_directory
from sims.fund_service import FundService
from sims.notifications import NotificationService, RateLimiter
from sims.protocol_config import ProtocolConfig, load_protocol
from sims.rendering import Renderer
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
    store: EventStore  # sims.adapters.keystore.SealingEventStore over jsa.NatsEventStore
    audit: jsa.NatsAuditLog
    kv: jsa.NatsKV
    incidents: IncidentService
    directory: Directory
    notifications: NotificationService
    extras: dict[str, object] = field(default_factory=dict)
    access: NatsAccess | None = None  # the credentials and TLS this runtime connected with
    erasure: ErasureService | None = None  # retention: erases closed incidents' personal data

    async def close(self) -> None:
        for sender in {id(s): s for s in self.notifications.senders.values()}.values():
            await sender.close()
        if not self.nc.is_closed:
            await self.nc.drain()


def keyring(settings: Settings) -> dict[str, bytes]:
    """Link secrets by kid, the signing one first: from SIMS_LINK_SECRETS or generated once on disk."""
    if settings.link_secrets:
        pairs = [item.split(":", 1) for item in settings.link_secrets.get_secret_value().split(",") if item.strip()]
        return {kid.strip(): secret.strip().encode() for kid, secret in pairs}
    path = settings.data_dir / "secrets" / "link.key"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("a:" + secrets.token_urlsafe(32))
        path.chmod(0o600)
    kid, secret = path.read_text().strip().split(":", 1)
    return {kid: secret.encode()}


def build_senders(settings: Settings) -> dict[Channel, object]:
    """Twilio and SMTP when configured; otherwise the local outbox a person can read."""
    from sims.adapters.outbox import OutboxSender

    sms: object
    if settings.twilio_account_sid and settings.twilio_auth_token:
        from sims.adapters.twilio_sms import TwilioSmsSender

        sms = TwilioSmsSender(settings.twilio_account_sid, settings.twilio_auth_token.get_secret_value(),
                              from_=settings.twilio_from, messaging_service_sid=settings.twilio_messaging_service_sid,
                              api_base=settings.twilio_api_base)
    else:
        sms = OutboxSender.for_sms(settings.data_dir)
    email: object
    if settings.smtp_host:
        from sims.adapters.smtp_email import SmtpEmailSender

        email = SmtpEmailSender(settings.smtp_host, settings.smtp_port, settings.smtp_tls, settings.smtp_username,
                                settings.smtp_password.get_secret_value() if settings.smtp_password else None,
                                from_addr=settings.smtp_from, connections=settings.smtp_connections,
                                in_doubt=settings.smtp_in_doubt)
    else:
        email = OutboxSender.for_email(settings.data_dir)
    return {Channel.SMS: sms, Channel.WHATSAPP: sms, Channel.EMAIL: email}


async def with_suppliers(settings: Settings, senders: dict[Channel, object], *, audit: object, kv: object,
                         clock: object) -> dict[Channel, object]:
    """SIMS_SMS_PROVIDERS / SIMS_EMAIL_PROVIDERS: each channel's suppliers, in order, behind one failover sender.

    WhatsApp stays on Twilio alone (Notify does not send it). Names: the channel's own supplier
    (twilio / smtp, or the outbox) and notify.
    """
    if not (settings.sms_providers.strip() or settings.email_providers.strip()):
        return senders
    from sims.adapters import govuk_notify as gn
    from sims.adapters.failover_sender import FailoverSender
    from sims.failover import IdenticalTextGuard, Policy

    policy = Policy(failures_to_trip=settings.failover_failures,
                    cool_down=timedelta(seconds=settings.failover_cool_down))
    apis: list[gn.NotifyApi] = []

    def notify(channel: Channel) -> object:
        template = settings.notify_sms_template_id if channel is Channel.SMS else settings.notify_email_template_id
        if not settings.notify_api_key or not template:
            raise ValueError(f"the notify {channel.value} supplier needs SIMS_NOTIFY_API_KEY and "
                             f"SIMS_NOTIFY_{channel.value.upper()}_TEMPLATE_ID")
        if not apis:
            apis.append(gn.NotifyApi(settings.notify_api_key.get_secret_value(), settings.notify_base_url))
        make = gn.NotifySmsSender if channel is Channel.SMS else gn.NotifyEmailSender
        return make(apis[0], template)

    chosen = dict(senders)
    for channel, names in ((Channel.SMS, settings.sms_providers), (Channel.EMAIL, settings.email_providers)):
        own = senders[channel]
        suppliers = []
        for name in (n.strip() for n in names.split(",") if n.strip()):
            if name == "notify":
                suppliers.append(notify(channel))
            elif name == getattr(own, "name"):
                suppliers.append(own)
            else:
                raise ValueError(f"unknown or unconfigured {channel.value} supplier {name!r}: "
                                 f"choose from {getattr(own, 'name')}, notify")
        if suppliers:
            sender = FailoverSender(channel.value, suppliers, audit=audit, kv=kv, clock=clock,  # type: ignore[arg-type]
                                    policy=policy, guard=IdenticalTextGuard() if channel is Channel.SMS else None)
            chosen[channel] = sender
    return chosen


async def connect_runtime(settings: Settings, url: str, name: str, protocol: ProtocolConfig | None = None,
                          setup: bool = True, directory: Directory | None = None, role: str = "admin",
                          access: NatsAccess | None = None) -> Runtime:
    """Connect to NATS at `url` as `role` (admin, worker, web), create the topology if asked, wire the services.

    Credentials: `access`, else SIMS_NATS_CREDS / the role's seed under the data folder (see nats_auth).
    A `web` runtime sends its audit records to the worker (it may not write the audit stream).
    """
    protocol = protocol or load_protocol(settings.protocol)
    access = access or access_for(settings, role)
    nc = await jsa.connect(url, name, **access.connect_options())
    js = nc.jetstream(timeout=10.0)
    if role in ("web", "admin") and access.creds and not access.is_jwt:  # they sign what they say people did
        js = SigningJetStream(js, access.creds.read_bytes())  # type: ignore[assignment]
    if setup:
        await jsa.ensure_topology(js, jsa.replicas_for(nc, settings.replicas))
    store, audit, kv = jsa.NatsEventStore(js), jsa.NatsAuditLog(js), jsa.NatsKV(js)
    keys = NatsKeyStore(js, jsa.replicas_for(nc, settings.replicas))
    store = SealingEventStore(store, keys)  # type: ignore[assignment]
    if role == "web":
        audit = RelayedAuditLog(audit)  # type: ignore[assignment]
    clock = SystemClock()
    directory = directory or load_directory(settings.contacts_dir, protocol)
    incidents = IncidentService(store=store, audit=audit, kv=kv, protocol=protocol, clock=clock, directory=directory,
                                fund=FundService(kv=kv, audit=audit, clock=clock, directory=directory), keys=keys)
    erasure = ErasureService(incidents=incidents, keys=keys, kv=kv, audit=audit, clock=clock, purge=purger(js),
                             retention=timedelta(days=settings.retention_days),
                             outbox=partial(erase_outbox, settings.data_dir), notifier_behind=notifier_behind(js))
    senders = await with_suppliers(settings, build_senders(settings), audit=audit, kv=kv, clock=clock)
    ring = keyring(settings)
    kid = next(iter(ring))
    limiters = {getattr(senders[Channel.SMS], "name"): RateLimiter(settings.sms_rate),
                getattr(senders[Channel.EMAIL], "name"): RateLimiter(settings.email_rate)}
    limiters.setdefault(getattr(senders[Channel.WHATSAPP], "name"), limiters[getattr(senders[Channel.SMS], "name")])
    notifications = NotificationService(
        incidents=incidents, directory=directory, protocol=protocol,
        renderer=Renderer(settings.templates_dir, settings.protective_marking), queue=jsa.NatsWorkQueue(js),
        kv=kv, audit=audit, clock=clock, senders=senders, link_secret=(kid, ring[kid]),  # type: ignore[arg-type]
        base_url=settings.base_url, keyring=ring, timers=jsa.NatsTimers(js), link_ttl=timedelta(hours=settings.link_ttl_hours), limiters=limiters)
    incidents.on_fund_submitted = notifications.fund_submitted
    incidents.on_fund_changed = notifications.fund_deadlines
    return Runtime(settings=settings, protocol=protocol, nc=nc, js=js, store=store, audit=audit, kv=kv,
                   incidents=incidents, directory=directory, notifications=notifications, access=access,
                   erasure=erasure)
