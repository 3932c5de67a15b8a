"""NATS users per role: anonymous and plaintext refused; the web cannot write events, audit records or
state; the worker cannot forge acknowledgements. Real nats-server with the generated configuration."""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import json
import re
import socket
import ssl
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import nats
import pytest
from nats.aio.client import Client as NATS

from sims import queries
from sims.adapters import jetstream as jsa
from sims.adapters.nats_auth import (
    ROLES,
    NatsAccess,
    check_signatures,
    embedded_config,
    new_seed,
    public_key,
    seeds_folder,
    tls_config,
)
from sims.adapters.nats_server import NatsServer
from sims.fund import ApproveClaim
from sims.messages import Acknowledge
from tests.support.fixtures import smtp_server, twilio_server  # noqa: F401
from tests.support.smtp_server import SmtpServer
from tests.support.stack import RAISE, Stack, protocol_without_steps, start_stack
from tests.support.twilio_server import TwilioServer

LINK = re.compile(r"http://127\.0\.0\.1:\d+/l/[a-z0-9]{17}\.[A-Za-z0-9_-]{16}")


@pytest.fixture
def secured_nats(tmp_path: Path) -> Iterator[NatsServer]:
    """A nats-server with the roles' users (seeds under <tmp>/data/nats, as `sims up` makes them)."""
    server = NatsServer(store_dir=tmp_path / "nats", extra_config=embedded_config(seeds_folder(tmp_path / "data")))
    yield server.start()
    server.stop()


@pytest.fixture
async def secured_stack(secured_nats: NatsServer, twilio_server: TwilioServer, smtp_server: SmtpServer,
                        tmp_path: Path) -> AsyncIterator[Stack]:
    started, stop = await start_stack(secured_nats, twilio_server, smtp_server, tmp_path, nats_roles=True,
                                      protocol=protocol_without_steps(tmp_path))
    yield started
    await stop()


class Client:
    """A raw connection as one role that records the server's permission errors."""

    def __init__(self, nc: NATS, errors: list[str]) -> None:
        self.nc, self.errors = nc, errors

    @classmethod
    async def connect(cls, url: str, seed: Path | None, **options: Any) -> Client:
        errors: list[str] = []

        async def on_error(exc: Exception) -> None:
            errors.append(str(exc))

        access = NatsAccess(creds=seed, **options).connect_options()
        nc = await nats.connect(url, error_cb=on_error, allow_reconnect=False, connect_timeout=3, **access)
        return cls(nc, errors)

    async def refused(self, subject: str, payload: bytes = b"{}", headers: dict[str, str] | None = None) -> None:
        """Publish and wait for the server's permissions violation for exactly this subject."""
        await self.nc.publish(subject, payload, headers=headers)
        await self.nc.flush()
        for _ in range(100):
            if any("permissions violation" in e and f'"{subject.lower()}"' in e for e in self.errors):  # lowercased
                return
            await asyncio.sleep(0.02)
        raise AssertionError(f"publish to {subject} was not refused: {self.errors}")


def seed(tmp_path: Path, role: str) -> Path:
    return seeds_folder(tmp_path / "data") / f"{role}.nk"


async def count(js: Any, stream: str, subject: str) -> int:
    info = await js.stream_info(stream, subjects_filter=subject)
    return sum((info.state.subjects or {}).values())


async def test_anonymous_and_unknown_keys_are_refused_and_seeds_are_private(secured_nats: NatsServer,
                                                                         tmp_path: Path) -> None:
    with pytest.raises(Exception, match="Authorization Violation"):
        await nats.connect(secured_nats.url, allow_reconnect=False, connect_timeout=3)
    stranger = tmp_path / "stranger.nk"
    stranger.write_bytes(new_seed())
    with pytest.raises(Exception, match="Authorization Violation"):
        await nats.connect(secured_nats.url, allow_reconnect=False, connect_timeout=3, nkeys_seed=str(stranger))
    folder = seeds_folder(tmp_path / "data")
    assert folder.stat().st_mode & 0o777 == 0o700
    for role in ROLES:
        assert (folder / f"{role}.nk").stat().st_mode & 0o777 == 0o600
        assert (folder / f"{role}.nk").read_bytes().startswith(b"SU")
    conf = next((tmp_path / "nats").glob("*.conf")).read_text()
    assert "no_auth_user" not in conf
    assert not any((folder / f"{r}.nk").read_text().strip() in conf for r in ROLES)  # public keys only
    admin = await Client.connect(secured_nats.url, seed(tmp_path, "admin"))
    assert (await admin.nc.jetstream().account_info()) is not None
    await admin.nc.close()


async def test_web_raises_and_acknowledges_but_cannot_write_events_audit_or_state(
        secured_stack: Stack, secured_nats: NatsServer, tmp_path: Path) -> None:
    stack = secured_stack
    raised = await stack.raise_incident()  # as the web user; the worker (its own user) applies it
    incident_id = raised["incident_id"]
    sent = await stack.settled(incident_id, 3)
    assert any(d["status"] in ("sent", "delivered", "accepted", "queued") for d in sent), sent
    link = next(LINK.search(m.body).group(0) for m in stack.twilio.messages if LINK.search(m.body))  # type: ignore[union-attr]
    async with httpx.AsyncClient(follow_redirects=False) as client:
        assert (await client.post(link, data={"action": "acknowledge"})).status_code == 303
        assert (await client.get(f"{stack.http_url}/l/nonsense")).status_code == 404  # audited through the worker
    found, _ = await queries.incident_with_timeline(stack.rt, incident_id)
    assert found.acknowledged, "the link's acknowledgement went through sims.cmd.ack to the worker"

    async def refusal_audited() -> bool:
        return any(r["action"] == "link.refused" and r["detail"].get("via") == "web"
                   for r in await queries.audit_records(stack.rt))
    await stack.wait_for(refusal_audited)
    records = await queries.audit_records(stack.rt)
    acked = next(r for r in records if r["action"] == "command.acknowledge" and r["outcome"] == "accepted")
    web_key = public_key(seed(tmp_path, "web").read_bytes())
    assert acked["detail"]["attestation"]["signed_by"] == web_key  # the web signed what the person did
    good, _, forged = check_signatures(records, {web_key})
    assert good >= 1 and not forged
    tampered = {**acked, "detail": {**acked["detail"], "command": {**acked["detail"]["command"], "person": "x"}}}
    assert check_signatures([tampered], {web_key})[2]

    admin = await Client.connect(secured_nats.url, seed(tmp_path, "admin"))
    js = admin.nc.jetstream()
    events_before = await count(js, jsa.EVENTS, f"sims.evt.{incident_id}")
    audit_before = await count(js, jsa.AUDIT, "sims.audit.>")
    web = await Client.connect(secured_nats.url, seed(tmp_path, "web"))
    forged = json.dumps({"events": [{"type": "message.acknowledged", "incident_id": incident_id}]}).encode()
    for subject in (f"sims.evt.{incident_id}", "sims.evt.x", f"sims.audit.{incident_id}", "sims.audit.x",
                    "sims.send.sms", "sims.dlq.commands", f"$KV.sims_incidents.{incident_id}",
                    f"{jsa.reply_subject('someone-waiting')}", "$JS.API.STREAM.DELETE.SIMS_EVENTS",
                    "$JS.API.STREAM.PURGE.SIMS_AUDIT", "$JS.API.CONSUMER.MSG.NEXT.SIMS_COMMANDS.incident-commands",
                    "$JS.API.CONSUMER.CREATE.SIMS_COMMANDS", "$JS.ACK.SIMS_COMMANDS.x.1.1.1.1.0"):
        await web.refused(subject, forged)
    with pytest.raises(Exception):  # a JetStream publish gets no PubAck: nothing was stored
        await web.nc.jetstream().publish("sims.evt.x", forged, timeout=1.0)

    worker = await Client.connect(secured_nats.url, seed(tmp_path, "worker"))
    await worker.refused("_INBOX.someone.else", b'{"stream": "SIMS_EVENTS", "seq": 1}')  # no forged PubAcks
    gateway = json.loads((await admin.nc.request(jsa.API_SUBJECT, json.dumps(
        {**RAISE, "kind": "raise", "command_id": "via-gateway"}).encode(), timeout=15)).data)  # the worker may still answer
    assert gateway["ok"] and gateway["reference"].startswith("SWK-"), gateway
    ack = Acknowledge(incident=incident_id, message_kind="holding_notice", person="someone-else", actor="someone-else")
    await worker.refused(jsa.ACK_SUBJECT, ack.model_dump_json().encode(), {"Nats-Msg-Id": ack.command_id})
    for subject in (jsa.AUDIT_NOTE_SUBJECT, "$KV.sims_users.mallory", "$KV.sims_api_tokens.h.x",
                    "$JS.API.STREAM.DELETE.SIMS_EVENTS", "$JS.API.STREAM.UPDATE.SIMS_AUDIT"):
        await worker.refused(subject)
    # on the subject the worker may use, the command handler refuses an acknowledgement
    await worker.nc.jetstream().publish(jsa.CMD_SUBJECT, ack.model_dump_json().encode(),
                                        headers={"Nats-Msg-Id": ack.command_id})

    async def refused_by_handler() -> bool:
        return await stack.rt.kv.get("sims_results", ack.command_id) is not None
    await stack.wait_for(refused_by_handler)
    result = await stack.rt.kv.get("sims_results", ack.command_id)
    assert result["ok"] is False and result["error"]["error"] == "wrong_channel"
    approve = ApproveClaim(incident_id=incident_id, actor="vru-lead-castellanos", actor_role="-", amount="5000")
    await worker.nc.jetstream().publish(jsa.CMD_SUBJECT, approve.model_dump_json().encode(),
                                        headers={"Nats-Msg-Id": approve.command_id})

    async def fund_decision_refused() -> bool:
        found = await stack.rt.kv.get("sims_results", approve.command_id)
        return bool(found and found["error"]["error"] == "wrong_channel")
    await stack.wait_for(fund_decision_refused)  # a fund decision is the VRU lead's, never the worker's
    unsigned = Acknowledge(incident=incident_id, message_kind="holding_notice", person="someone-else",
                           actor="someone-else")
    await admin.nc.jetstream().publish(jsa.ACK_SUBJECT, unsigned.model_dump_json().encode(),
                                       headers={"Nats-Msg-Id": unsigned.command_id})

    async def unsigned_refused() -> bool:
        found = await stack.rt.kv.get("sims_results", unsigned.command_id)
        return bool(found and found["error"]["error"] == "wrong_channel")
    await stack.wait_for(unsigned_refused)  # on the right subject but with no signature: not applied
    again, _ = await queries.incident_with_timeline(stack.rt, incident_id)
    assert again.acknowledged == found.acknowledged
    assert await count(js, jsa.EVENTS, f"sims.evt.{incident_id}") == events_before
    assert await count(js, jsa.EVENTS, "sims.evt.x") == 0
    assert await count(js, jsa.AUDIT, "sims.audit.x") == 0
    audit_now = [r async for r in stack.rt.audit.records()]
    assert not any(r["chain"] == "x" for r in audit_now)
    assert len(audit_now) >= audit_before  # only the worker's own records were added
    for client in (admin, web, worker):
        await client.nc.close()


def make_pki(folder: Path) -> dict[str, Path]:
    """A throwaway CA, a server certificate for 127.0.0.1 and a client certificate, as PEM files."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = dt.datetime.now(dt.timezone.utc)
    folder.mkdir(parents=True, exist_ok=True)

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    def write(path: Path, key: Any, cert: Any) -> None:
        path.with_suffix(".key").write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                                               serialization.PrivateFormat.PKCS8,
                                                               serialization.NoEncryption()))
        path.with_suffix(".pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (x509.CertificateBuilder().subject_name(name("SIMS test CA")).issuer_name(name("SIMS test CA"))
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                       content_commitment=False, key_encipherment=False, data_encipherment=False,
                                       key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
          .sign(ca_key, hashes.SHA256()))
    write(folder / "ca", ca_key, ca)

    def issue(cn: str, usage: Any, san: list[Any]) -> None:
        key = ec.generate_private_key(ec.SECP256R1())
        builder = (x509.CertificateBuilder().subject_name(name(cn)).issuer_name(ca.subject)
                   .public_key(key.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
                   .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
                   .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                                  critical=False))
        if san:
            builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
        write(folder / cn, key, builder.sign(ca_key, hashes.SHA256()))

    issue("server", ExtendedKeyUsageOID.SERVER_AUTH,
          [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])
    issue("client", ExtendedKeyUsageOID.CLIENT_AUTH, [])
    return {"ca": folder / "ca.pem", "cert": folder / "server.pem", "key": folder / "server.key",
            "client_cert": folder / "client.pem", "client_key": folder / "client.key"}


def plaintext_answer(port: int) -> str:
    """What the server says to a client that skips TLS and sends CONNECT in the clear."""
    with socket.create_connection(("127.0.0.1", port), timeout=3) as sock:
        info = sock.recv(4096).decode()
        assert '"tls_required":true' in info.replace(" ", "")
        sock.sendall(b'CONNECT {"verbose":false}\r\nPING\r\n')
        try:
            return sock.recv(4096).decode()
        except (ConnectionResetError, TimeoutError, ssl.SSLError) as exc:
            return f"closed: {exc}"


@pytest.fixture
def tls_nats(tmp_path: Path) -> Iterator[tuple[NatsServer, dict[str, Path]]]:
    pki = make_pki(tmp_path / "pki")
    server = NatsServer(store_dir=tmp_path / "nats", extra_config=tls_config(pki["cert"], pki["key"], pki["ca"])
                        + embedded_config(seeds_folder(tmp_path / "data")))
    yield server.start(), pki
    server.stop()


async def test_tls_required_refuses_plaintext_and_serves_sims_over_tls(
        tls_nats: tuple[NatsServer, dict[str, Path]], twilio_server: TwilioServer, smtp_server: SmtpServer,
        tmp_path: Path) -> None:
    server, pki = tls_nats
    answer = plaintext_answer(server.port)
    assert "PONG" not in answer and (answer == "" or "-ERR" in answer or answer.startswith("closed")), answer
    with pytest.raises(Exception):  # TLS, but a CA the client does not trust
        await nats.connect(server.url, allow_reconnect=False, connect_timeout=3,
                           tls=ssl.create_default_context(), nkeys_seed=str(seed(tmp_path, "admin")))
    trusted = await Client.connect(server.url, seed(tmp_path, "admin"), tls_ca=pki["ca"])
    assert (await trusted.nc.jetstream().account_info()) is not None
    await trusted.nc.close()
    # the whole of SIMS (admin setup, worker's broker, web) over TLS with the roles' keys
    stack, stop = await start_stack(server, twilio_server, smtp_server, tmp_path, nats_roles=True,
                                    protocol=protocol_without_steps(tmp_path), nats_tls_ca=pki["ca"])
    try:
        raised = await stack.raise_incident()
        assert raised["ok"] and raised["state"] == "raised"
        assert await stack.settled(raised["incident_id"], 3)
    finally:
        await stop()


async def test_tls_verify_wants_a_client_certificate_from_the_same_ca(tmp_path: Path) -> None:
    pki = make_pki(tmp_path / "pki")
    server = NatsServer(store_dir=tmp_path / "nats",
                        extra_config=tls_config(pki["cert"], pki["key"], pki["ca"], verify=True)
                        + embedded_config(seeds_folder(tmp_path / "data"))).start()
    try:
        with pytest.raises(Exception):
            await Client.connect(server.url, seed(tmp_path, "worker"), tls_ca=pki["ca"])
        client = await Client.connect(server.url, seed(tmp_path, "worker"), tls_ca=pki["ca"],
                                      tls_cert=pki["client_cert"], tls_key=pki["client_key"])
        assert client.nc.is_connected
        await client.nc.close()
    finally:
        server.stop()


async def test_deploy_cluster_configs_run_with_tls_clients_tls_routes_and_the_roles(tmp_path: Path) -> None:
    """deploy/nats as shipped (only paths, ports and hosts changed for loopback): three nodes form a
    JetStream cluster over verified TLS routes; clients need TLS and an NKey; make-certs.sh and
    `sims nats keys` make what the configuration includes."""
    import subprocess

    from typer.testing import CliRunner

    from handlers.cli import app
    from sims.adapters.nats_server import free_port, nats_server_binary

    deploy = Path(__file__).resolve().parents[2] / "deploy" / "nats"
    names = [f"sims-nats-{n}" for n in (1, 2, 3)]
    tls = tmp_path / "tls"
    subprocess.run(["sh", str(deploy / "make-certs.sh"), str(tls), *names], check=True, capture_output=True)
    made = CliRunner().invoke(app, ["nats", "keys", str(tmp_path / "keys"), "--conf", str(tmp_path / "authorization.conf")])
    assert made.exit_code == 0 and "SIMS_NATS_SIGNERS=U" in made.output, made.output
    clients, routes = [free_port() for _ in names], [free_port() for _ in names]
    procs = []
    try:
        for i, name in enumerate(names):
            text = (deploy / f"node{i + 1}.conf").read_text()
            assert "include ./authorization.conf" in text and "verify: true" in text
            text = (text.replace("listen: 0.0.0.0:4222", f"listen: 127.0.0.1:{clients[i]}")
                    .replace("http: 0.0.0.0:8222", "# http").replace("/etc/nats/tls/", f"{tls}/")
                    .replace("/var/lib/nats/jetstream", str(tmp_path / name)).replace("50GB", "1GB")
                    .replace("listen: 0.0.0.0:6222", f"listen: 127.0.0.1:{routes[i]}"))
            for j, other in enumerate(names):
                text = text.replace(f"nats-route://{other}:6222", f"nats-route://127.0.0.1:{routes[j]}")
            conf = tmp_path / f"{name}.conf"
            conf.write_text(text)
            log = open(tmp_path / f"{name}.log", "wb")  # noqa: SIM115 - closed with the process
            procs.append(subprocess.Popen([nats_server_binary(), "-c", str(conf)], stdout=log, stderr=log))
        url = ",".join(f"tls://127.0.0.1:{p}" for p in clients)
        admin = NatsAccess(creds=tmp_path / "keys" / "admin.nk", tls_ca=tls / "ca.crt")
        for _ in range(120):
            try:
                nc = await nats.connect(url.split(","), allow_reconnect=False, connect_timeout=2,
                                        **admin.connect_options())
                break
            except Exception:  # noqa: BLE001 - the nodes are still starting
                await asyncio.sleep(0.25)
        else:
            raise AssertionError((tmp_path / f"{names[0]}.log").read_text()[-2000:])
        try:
            js = nc.jetstream(timeout=5.0)
            from nats.js.api import StreamConfig

            for _ in range(120):  # a meta leader is elected over the TLS routes
                try:
                    await js.add_stream(StreamConfig(name="PROBE", subjects=["probe.>"], num_replicas=3))
                    break
                except Exception:  # noqa: BLE001
                    await asyncio.sleep(0.25)
            for _ in range(120):  # and the new stream's own leader (until then: no responders)
                try:
                    ack = await js.publish("probe.one", b"x", headers={"Nats-Msg-Id": "probe-1"})  # stored once
                    break
                except Exception:  # noqa: BLE001
                    await asyncio.sleep(0.25)
            else:
                raise AssertionError("the PROBE stream never took a message")
            info = await js.stream_info("PROBE")
            assert ack.seq == 1 and info.cluster is not None and len(info.cluster.replicas or []) == 2
        finally:
            await nc.close()
        assert "PONG" not in plaintext_answer(clients[0])
        with pytest.raises(Exception, match="Authorization Violation"):
            await nats.connect(url.split(",")[0], allow_reconnect=False, connect_timeout=2,
                               **NatsAccess(tls_ca=tls / "ca.crt").connect_options())
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(10)


def test_external_nats_workers_wait_for_setup_by_admin_then_run_as_themselves(secured_nats: NatsServer,
                                                                            tmp_path: Path) -> None:
    """`sims worker` with its own seed does not create streams (it may not): it asks for `sims nats
    setup`, which the admin's seed can do; then the worker starts."""
    import os
    import subprocess
    import sys

    folder = seeds_folder(tmp_path / "data")
    env = {**os.environ, "SIMS_NATS_URL": secured_nats.url, "SIMS_DATA_DIR": str(tmp_path / "worker-data"),
           "SIMS_LOG_JSON": "false", "SIMS_NATS_CREDS": str(folder / "worker.nk")}
    sims = [sys.executable, "-m", "handlers.cli"]
    early = subprocess.run([*sims, "worker"], env=env, capture_output=True, text=True, timeout=90)
    assert early.returncode != 0 and "sims nats setup" in early.stdout + early.stderr
    setup = subprocess.run([*sims, "nats", "setup"], env={**env, "SIMS_NATS_CREDS": str(folder / "admin.nk")},
                            capture_output=True, text=True, timeout=90)
    assert setup.returncode == 0 and "ready" in setup.stdout, setup.stderr
    proc = subprocess.Popen([*sims, "worker"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert proc.stdout is not None
        lines = []
        for line in proc.stdout:
            lines.append(line)
            if "Press Ctrl-C" in line:
                break
        assert any(line.startswith("Worker: handling commands") for line in lines), "".join(lines)
    finally:
        proc.terminate()
        proc.wait(30)
    assert proc.returncode == 0


async def test_audit_verify_names_an_acknowledgement_the_worker_wrote_around_the_command_handler(
        secured_stack: Stack, secured_nats: NatsServer, tmp_path: Path) -> None:
    """The worker's user may append events, so it could write an acknowledgement itself; `sims audit
    verify` finds it: no signed command on record."""
    import os
    import subprocess
    import sys

    stack = secured_stack
    raised = await stack.raise_incident()
    await stack.settled(raised["incident_id"], 3)
    link = next(LINK.search(m.body).group(0) for m in stack.twilio.messages if LINK.search(m.body))  # type: ignore[union-attr]
    async with httpx.AsyncClient(follow_redirects=False) as client:
        assert (await client.post(link, data={"action": "acknowledge"})).status_code == 303
    env = {**os.environ, "SIMS_NATS_URL": secured_nats.url, "SIMS_DATA_DIR": str(tmp_path / "data"),
           "SIMS_LOG_JSON": "false"}
    env.pop("SIMS_NATS_CREDS", None)
    verify = [sys.executable, "-m", "handlers.cli", "audit", "verify"]
    clean = subprocess.run(verify, env=env, capture_output=True, text=True, timeout=120)
    assert clean.returncode == 0 and "1 signed by the web and verified, 0 unsigned" in clean.stdout, clean

    worker = await Client.connect(secured_nats.url, seed(tmp_path, "worker"))
    forged = {"type": "message.acknowledged", "incident_id": raised["incident_id"], "actor": "someone-else",
              "at": "2026-11-30T22:00:00Z", "command_id": "forged-by-worker",
              "data": {"kind": "holding_notice", "person": "someone-else", "via": "link"}}
    await worker.nc.jetstream().publish(f"sims.evt.{raised['incident_id']}", json.dumps({"events": [forged]}).encode())
    await worker.nc.close()
    caught = subprocess.run(verify, env=env, capture_output=True, text=True, timeout=120)
    assert caught.returncode == 3 and "message.acknowledged (link) by someone-else" in caught.stderr, caught
