"""deploy/Dockerfile and deploy/compose.yaml built and run for real: a 3-node JetStream cluster (TLS and
NKeys), `setup`, two workers and the web server in containers, driven over the console's published port
on 127.0.0.1 as an operator would, through a worker kill, a NATS node kill and a full stop and start.

Separate command (needs a container engine; engine.py starts one as root): `bash scripts/test -m containers`.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from sims.adapters.nats_server import free_port
from tests.containers.engine import Engine, run, start_engine
from tests.support.compose import COMPOSE, REPO, compose, run_header_commands

pytestmark = [pytest.mark.containers, pytest.mark.timeout(1800)]

VENV_BIN = Path(sys.executable).parent
RAISE = {"actor": "duty-officer", "type": "stabbing", "level": "2", "ward": "Peckham",
         "location": "Rye Lane, near the station", "outline": "A young man was stabbed", "exercise": False}
LINK = re.compile(r"/l/[a-z0-9]{17}\.[A-Za-z0-9_-]{16}")
STREAMS_WITH_INCIDENTS = ("SIMS_COMMANDS", "SIMS_EVENTS", "SIMS_OUTBOX", "SIMS_AUDIT")


@dataclass
class Trial:
    """compose.yaml up in a copy of the repository: `compose(...)` runs a compose command there."""

    engine: Engine
    root: Path
    env: dict[str, str]
    project: str
    url: str
    token: str = ""

    def compose(self, *args: str, timeout: float = 900, check: bool = True) -> subprocess.CompletedProcess[str]:
        argv = [*self.engine.compose, "-p", self.project, "-f", str(self.root / "deploy" / COMPOSE.name), *args]
        return run(*argv, timeout=timeout, check=check, cwd=self.root, env=self.env)

    def containers(self, service: str) -> list[str]:
        return self.compose("ps", "-q", service).stdout.split()

    def state(self, container: str) -> dict[str, Any]:
        return dict(json.loads(run("docker", "inspect", "-f", "{{json .State}}", container).stdout))

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {self.token}"}, timeout=30)


def copy_repository(dest: Path) -> None:
    """The repository's tracked files (the working tree's versions), as a fresh clone has them."""
    listed = run("git", "ls-files", "-z", cwd=REPO, check=False).stdout
    names = [n for n in listed.split("\0") if n] if listed else []
    if not names:  # not a git checkout: everything but local state
        shutil.copytree(REPO, dest, ignore=shutil.ignore_patterns(".git", ".venv", ".sims", "__pycache__"))
        return
    for name in names:
        if (REPO / name).is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, dest / name)


def wait(what: str, check: Any, timeout: float = 120, every: float = 0.5) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except (httpx.HTTPError, ValueError, KeyError) as error:
            last = error
        if last and not isinstance(last, Exception):
            return last
        time.sleep(every)
    raise AssertionError(f"{what}: not within {timeout:.0f} s (last: {last!r})")


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    engine = start_engine(tmp_path_factory.mktemp("engine"))
    yield engine
    engine.stop()


@pytest.fixture(scope="module")
def trial(engine: Engine, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Trial]:
    root = tmp_path_factory.mktemp("clone")
    copy_repository(root)
    operator_env = {k: v for k, v in os.environ.items() if not k.startswith("SIMS_")}
    operator_env["PATH"] = f"{VENV_BIN}{os.pathsep}{operator_env.get('PATH', '')}"
    printed = run_header_commands(root, operator_env)
    signers = re.search(r"SIMS_NATS_SIGNERS=(\S+)", printed)
    assert signers, printed
    port = free_port()
    env = {**operator_env, **engine.images, "SIMS_NATS_SIGNERS": signers.group(1), "WEB_PUBLISH_PORT": str(port)}
    t = Trial(engine, root, env, project=f"simstest{os.getpid()}", url=f"http://127.0.0.1:{port}")
    logs = tmp_path_factory.getbasetemp() / "compose.log"
    try:
        t.compose("build")
        t.compose("up", "-d")
        wait("web healthy", lambda: healthy(t), timeout=180)
        # An API token the way an operator makes one: the admin's `setup` service.
        made = t.compose("run", "--rm", "setup", "tokens", "add", "trial", "--scope", "raise", "--scope", "read",
                         "--scope", "write")
        token = re.search(r"\bsims_[A-Za-z0-9_-]{20,}", made.stdout)
        assert token, made.stdout
        t.token = token.group(0)
        yield t
    finally:
        logs.write_text(t.compose("logs", "--no-color", check=False, timeout=120).stdout)
        t.compose("down", "-v", "--remove-orphans", check=False, timeout=300)


def healthy(t: Trial) -> dict[str, Any] | None:
    response = httpx.get(f"{t.url}/healthz", timeout=10)
    body = dict(response.json())
    return body if response.status_code == 200 and body["ok"] else None


def raise_incident(t: Trial, http: httpx.Client, note: str) -> dict[str, Any]:
    """Raise over HTTP; the incident's id and reference. A 202 (queued: no worker answered within the
    command timeout, e.g. the work went to a worker that died without closing its connection and is
    redelivered after the consumer's ack wait) is followed until a worker has raised it."""
    location = f"Rye Lane ({note})"
    response = http.post("/api/incidents", json={**RAISE, "occurred_at": datetime.now(UTC).isoformat(),
                                                 "location": location})
    assert response.status_code in (201, 202), response.text
    body = dict(response.json())
    if response.status_code == 201:
        assert body["ok"] and body["state"] == "raised", body
        return {"incident_id": body["incident_id"], "reference": body["reference"]}
    assert body["queued"] and body["command_id"], body

    def raised() -> dict[str, Any] | None:
        found = [i for i in http.get("/api/incidents").json() if i["location"] == location]
        return {"incident_id": found[0]["id"], "reference": found[0]["reference"]} if found else None
    return dict(wait(f"queued raise {note}", raised, timeout=120))


def notified(t: Trial, http: httpx.Client, reference: str, at_least: int = 1) -> list[dict[str, Any]]:
    """The incident's deliveries once every one is accepted by its provider (the shared outbox)."""
    def done() -> list[dict[str, Any]] | None:
        found = http.get(f"/api/incidents/{reference}/deliveries").json()
        ok = len(found) >= at_least and all(d["status"] == "accepted" for d in found)
        return list(found) if ok else None
    return list(wait(f"{reference} notified", done, timeout=120))


def acknowledge_by_link(t: Trial, http: httpx.Client, incident_id: str) -> None:
    """A partner acknowledges through the personal link in their SMS (as the outbox has it)."""
    outbox = http.get("/api/outbox", params={"limit": 1000}).json()
    link = next((found for m in outbox if m["key"].startswith(incident_id) and m["channel"] == "sms"
                 and (found := LINK.search(m.get("body", "")))), None)
    assert link, "no SMS carries a personal link"
    acted = httpx.post(f"{t.url}{link.group(0)}", data={"action": "acknowledge"}, timeout=30)
    assert acted.status_code == 303, acted.text


def test_the_image_builds_as_deploy_says_and_runs_sims_as_its_own_user(trial: Trial) -> None:
    image = f"{trial.project}-image"
    python = trial.env["PYTHON_IMAGE"]
    # The Dockerfile's own header command, with the base image a mirror's copy where the registry is out of reach.
    run("docker", "build", "-f", "deploy/Dockerfile", "--build-arg", f"PYTHON_IMAGE={python}", "-t", image, ".",
        cwd=trial.root, timeout=900)
    try:
        help_text = run("docker", "run", "--rm", image, "--help").stdout
        for command in ("worker", "web", "up", "audit", "tokens"):
            assert re.search(rf"\b{command}\b", help_text), help_text
        uid = run("docker", "run", "--rm", "--entrypoint", "id", image, "-u").stdout.strip()
        assert uid != "0"
        owner = run("docker", "run", "--rm", "--entrypoint", "stat", image, "-c", "%U", "/var/lib/sims/outbox")
        assert owner.stdout.strip() == "sims"
    finally:
        run("docker", "rmi", "-f", image, check=False)


def test_compose_runs_the_cluster_workers_and_web(trial: Trial) -> None:
    health = wait("web healthy", lambda: healthy(trial), timeout=180)
    assert health["nats"] and health["jetstream"] and health["streams"] >= len(STREAMS_WITH_INCIDENTS)
    assert health["providers"]["outbox"]["reachable"]
    setup = trial.containers("setup")
    assert len(setup) == 1 and trial.state(setup[0])["ExitCode"] == 0
    workers = trial.containers("worker")
    assert len(workers) == compose()["services"]["worker"]["deploy"]["replicas"] == 2
    for service in ("sims-nats-1", "sims-nats-2", "sims-nats-3", "worker", "web"):
        for container in trial.containers(service):
            assert trial.state(container)["Running"], f"{service} is not running"

    # Streams on all three nodes with sync_interval always, as node*.conf and `sims nats setup` say.
    probe = ("import json, urllib.request; print(urllib.request.urlopen("
             "'http://sims-nats-1:8222/jsz?streams=true&config=true', timeout=10).read().decode())")
    jsz = json.loads(trial.compose("exec", "-T", "web", "/opt/sims/.venv/bin/python", "-c", probe).stdout)
    assert jsz["config"]["sync_interval"] == "always" or jsz["config"].get("sync_always") is True, jsz["config"]
    streams = {s["name"]: s for account in jsz["account_details"] for s in account.get("stream_detail", [])}
    for name in STREAMS_WITH_INCIDENTS:
        assert streams[name]["config"]["num_replicas"] == 3, name
        assert len(streams[name]["cluster"].get("replicas", [])) == 2, streams[name]["cluster"]

    with trial.client() as http:  # a raise over HTTP
        raised = raise_incident(trial, http, "first")
        deliveries = notified(trial, http, raised["reference"], at_least=5)
        assert {d["channel"] for d in deliveries} >= {"sms", "email"}
        # The workers' sends land in the one outbox volume the console reads, each message once.
        outbox = http.get("/api/outbox", params={"limit": 1000}).json()
        mine = [m for m in outbox if m["key"].startswith(raised["incident_id"])]
        keys = [m["key"] for m in mine]
        recorded = {d["key"] for d in http.get(f"/api/incidents/{raised['reference']}/deliveries").json()}
        # (task messages may still be going out: what was accepted is there, and only what is recorded)
        assert len(keys) == len(set(keys)) and {d["key"] for d in deliveries} <= set(keys) <= recorded
    # The nodes found each other by name: no TLS handshake failed between them or with SIMS.
    nats_logs = trial.compose("logs", "--no-color", "sims-nats-1", "sims-nats-2", "sims-nats-3").stdout
    assert "Server is ready" in nats_logs and "handshake error" not in nats_logs, [
        line for line in nats_logs.splitlines() if "handshake error" in line][:5]


def test_with_a_worker_and_a_nats_node_killed_everyone_is_still_notified(trial: Trial) -> None:
    workers = trial.containers("worker")
    run("docker", "kill", "-s", "KILL", workers[0])
    run("docker", "kill", "-s", "KILL", trial.containers("sims-nats-2")[0])
    try:
        with trial.client() as http:
            raised = raise_incident(trial, http, "one worker, two nodes")
            deliveries = notified(trial, http, raised["reference"], at_least=5)
            assert {d["channel"] for d in deliveries} >= {"sms", "email"}
    finally:
        run("docker", "start", workers[0], trial.containers("sims-nats-2")[0])
    wait("killed worker back", lambda: trial.state(workers[0])["Running"], timeout=60)
    with trial.client() as http:
        raised = raise_incident(trial, http, "all back")
        notified(trial, http, raised["reference"], at_least=5)


def test_stop_and_start_keep_incidents_and_the_audit_trail_verifies(trial: Trial) -> None:
    with trial.client() as http:
        raised = raise_incident(trial, http, "before the stop")
        notified(trial, http, raised["reference"], at_least=5)
        # The web signs the acknowledgement; a worker in another container checks the signature
        # (SIMS_NATS_SIGNERS) before applying it, and `sims audit verify` checks it again below.
        acknowledge_by_link(trial, http, raised["incident_id"])
        before = http.get("/api/incidents").json()
    assert raised["reference"] in {i["reference"] for i in before}
    trial.compose("stop", timeout=300)
    trial.compose("start", timeout=300)
    wait("web healthy after start", lambda: healthy(trial), timeout=180)
    with trial.client() as http:
        after = wait("incidents after start", lambda: http.get("/api/incidents").json(), timeout=60)
        assert {i["reference"] for i in after} == {i["reference"] for i in before}
        for incident in before:
            assert len(http.get(f"/api/incidents/{incident['reference']}/deliveries").json()) >= 5
    verified = trial.compose("run", "--rm", "setup", "audit", "verify")  # exits non-zero if it does not verify
    checked = re.search(r"OK: (\d+) record\(s\) in (\d+) chain\(s\) verified", verified.stdout)
    assert checked and int(checked.group(1)) > 100, verified.stdout
    signed = re.search(r"Acknowledgements and task actions: (\d+) signed by the web and verified, (\d+) unsigned",
                       verified.stdout)
    assert signed and int(signed.group(1)) >= 1 and signed.group(2) == "0", verified.stdout
