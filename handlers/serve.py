"""Long-running processes: `sims up` (all in one), `sims worker`, `sims web`; clean stop on signals."""

from __future__ import annotations

import asyncio
import signal
import time
from contextlib import AsyncExitStack

import structlog
import uvicorn

from handlers.http import create_app
from handlers.loop import settle_heap
from handlers.worker import build_broker
from sims.adapters import jetstream as jsa
from sims.adapters.nats_auth import access_for, embedded_config, seeds_folder
from sims.adapters.nats_server import NatsServer
from sims.bootstrap import Runtime, connect_runtime
from sims.config import Settings
from sims.directory import load_directory
from sims.model import Incident
from sims.protocol_config import load_protocol
from sims.queries import list_incidents
from sims.services import INCIDENTS

log = structlog.get_logger("sims.serve")


class StoredIncidents:
    """Every stored incident, as the sweeper reads them each round; read again only when `sims_incidents`
    changed (its revision), so an idle worker does not decode every incident of past years each second."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self.reads = 0
        self._revision: int | None = None
        self._incidents: list[Incident] = []

    async def get(self) -> list[Incident]:
        revision = await self.rt.kv.revision(INCIDENTS)  # read first: a write after it shows next round
        if revision != self._revision:
            self._incidents = await list_incidents(self.rt, reveal=False)
            self._revision = revision
            self.reads += 1
        return self._incidents


async def sweep_forever(rt: Runtime, every: float = 1.0, stop: asyncio.Event | None = None) -> None:
    """Fire due escalation timers; move incidents to active once every first message was handed over;
    erase the personal data of closed incidents whose retention period has ended (SIMS_RETENTION_DAYS).

    Stops when `stop` is set (a cancel can be swallowed inside a NATS call, so it is not relied on).
    """
    from sims.notifications.reconcile import reconciler_for

    reconciler = reconciler_for(rt.notifications, rt.settings)  # Twilio statuses whose callbacks were lost
    stored = StoredIncidents(rt)
    stop = stop or asyncio.Event()
    while not stop.is_set():
        try:
            await asyncio.wait_for(stop.wait(), every)
            return
        except asyncio.TimeoutError:
            pass
        try:
            await rt.notifications.fire_due_timers()
            incidents = await stored.get()
            await rt.notifications.sweep(incidents)
            if reconciler is not None:
                await reconciler.run(incidents)
            if rt.erasure is not None:
                await rt.erasure.sweep(incidents)
        except Exception as exc:  # noqa: BLE001 - NATS hiccups: try again next round, never die
            log.warning("sweep.failed", error=str(exc))


def embedded_auth(settings: Settings) -> str:
    """The embedded server's authorization block (NKeys generated once under <data>/nats/), unless turned off."""
    return embedded_config(seeds_folder(settings.data_dir)) if settings.nats_auth else ""


async def prepare_nats(settings: Settings, url: str, embedded: bool = True) -> None:
    """Create streams, consumers and buckets as admin; on an external NATS with a role's own credentials
    (SIMS_NATS_CREDS, not `embedded`) only check that they exist.

    Workers and web processes may not manage streams (see nats_auth); `sims nats setup` does it for them.
    """
    from nats.js.errors import NotFoundError

    from handlers.api_tokens import TokenStore
    from handlers.auth import UserStore

    if settings.nats_creds and not embedded:
        nc = await jsa.connect(url, "sims-check", **access_for(settings, "worker").connect_options())
        try:
            await nc.jetstream(timeout=5.0).stream_info(jsa.COMMANDS)
        except NotFoundError:
            raise SystemExit("The SIMS streams do not exist on this NATS yet: run `sims nats setup` with the "
                             "admin credentials (SIMS_NATS_CREDS=admin.nk) first.") from None
        finally:
            await nc.close()
        return
    nc = await jsa.connect(url, "sims-setup", **access_for(settings, "admin").connect_options())
    try:
        js = nc.jetstream(timeout=10.0)
        replicas = jsa.replicas_for(nc, settings.replicas)
        await jsa.ensure_topology(js, replicas)
        await UserStore(js, replicas)._bucket()  # the web may read and write these, never create them
        await TokenStore(js, replicas)._bucket()
    finally:
        await nc.close()


async def serve(settings: Settings, *, worker: bool, web: bool, embedded: bool,
                say: object = print, ready: asyncio.Event | None = None) -> None:
    """Run the chosen parts until SIGINT/SIGTERM, then drain handlers and stop what was started."""
    echo = say if callable(say) else print
    began = time.monotonic()
    echo("Starting SIMS: checking the protocol and the contacts...")
    protocol = load_protocol(settings.protocol)
    directory = load_directory(settings.contacts_dir, protocol)  # refuse to start on an invalid directory
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with AsyncExitStack() as stack:
        url = settings.nats_url
        if embedded and not url:
            server = NatsServer(store_dir=settings.data_dir / "jetstream", port=settings.nats_port,
                                name="sims-embedded", extra_config=embedded_auth(settings))
            echo("Starting the embedded NATS server (JetStream)...")
            try:
                server.start()
            except (RuntimeError, TimeoutError) as exc:
                raise SystemExit(f"The embedded NATS server could not start on port {settings.nats_port} ({exc}). "
                                 "Is another SIMS or NATS running? Stop it, or set SIMS_NATS_PORT to a free port.") from exc
            stack.callback(server.stop)
            url = server.url
            settings.url_file.write_text(url)
            stack.callback(lambda: settings.url_file.unlink(missing_ok=True))
            echo(f"NATS (embedded, JetStream, sync always): {url}  data: {server.store_dir.resolve()}")
            if settings.nats_auth:
                echo(f"NATS users: admin, worker, web (NKey seeds in {seeds_folder(settings.data_dir).resolve()}; "
                     "anonymous connections refused)")
        elif not url:
            raise SystemExit("Set SIMS_NATS_URL to the NATS server to use (or run `sims up`).")
        else:
            echo(f"NATS: {url}")
        echo("Preparing streams, consumers and buckets...")
        await prepare_nats(settings, url, embedded)
        if worker and settings.pan_london:
            from handlers.pan_london import check_ready

            await check_ready(settings, url)
        rt = await connect_runtime(settings, url, "sims-" + ("up" if embedded else "worker" if worker else "web"),
                                   role="worker" if worker else "web", setup=False,
                                   protocol=protocol, directory=directory)
        stack.push_async_callback(rt.close)
        if worker:
            echo("Starting the worker...")
            broker = build_broker(rt, url)
            await broker.start()
            stack.push_async_callback(broker.stop)
            echo("Worker: handling commands on sims.cmd.incident; requests on sims.api.command")
            sweeping = asyncio.Event()
            sweeper = asyncio.create_task(sweep_forever(rt, stop=sweeping))

            async def stop_sweeper() -> None:
                sweeping.set()
                try:
                    await asyncio.wait_for(sweeper, 10)
                except asyncio.TimeoutError:
                    sweeper.cancel()

            stack.push_async_callback(stop_sweeper)
        if web:
            echo("Starting the web server...")
            web_rt = rt
            if worker:  # one process, two NATS users: the web part connects as `web`
                web_rt = await connect_runtime(settings, url, "sims-web", role="web", setup=False,
                                               protocol=protocol, directory=directory)
                stack.push_async_callback(web_rt.close)
            config = uvicorn.Config(create_app(web_rt), host=settings.http_host, port=settings.http_port,
                                    log_level="warning", lifespan="off", timeout_graceful_shutdown=5)
            server_http = uvicorn.Server(config)
            server_http.install_signal_handlers = lambda: None  # type: ignore[method-assign]
            task = asyncio.create_task(server_http.serve())

            async def stop_http() -> None:
                server_http.should_exit = True
                await task

            stack.push_async_callback(stop_http)
            while not server_http.started and not task.done():
                await asyncio.sleep(0.05)
            if task.done():
                await task
                raise SystemExit(f"HTTP server could not start on {settings.http_host}:{settings.http_port}")
            echo(f"Web console: {settings.base_url}/console  (first: `sims users add NAME --role duty_officer`)")
            echo(f"API: {settings.base_url}/api  (docs {settings.base_url}/docs; tokens: `sims tokens add`)")
        echo(f"Protocol: {settings.protocol}  ({protocol.borough.name}, {len(protocol.borough.wards)} wards)")
        echo(f"Contacts: {settings.contacts_dir}  ({len(directory.all())} people)")
        senders = {s.name for s in rt.notifications.senders.values()}  # type: ignore[union-attr]
        if any(name.startswith("outbox") for name in senders):
            echo(f"Messages: local outbox {settings.data_dir.resolve() / 'outbox'} (`sims outbox`, {settings.base_url}/console/outbox)")
        settle_heap()
        echo(f"Ready in {time.monotonic() - began:.1f} s. Press Ctrl-C to stop.")
        if ready:
            ready.set()
        await stop.wait()
        echo("Stopping: draining handlers...")
    echo("Stopped.")
