"""API tokens, security headers and link rate limits on a real nats-server."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import httpx
from structlog.testing import capture_logs

from handlers.api_tokens import TOKENS_BUCKET, TokenStore, hash_token
from handlers.http import create_app
from handlers.security import CSP
from sims import queries
from sims.adapters.nats_server import NatsServer
from sims.bootstrap import Runtime, connect_runtime
from sims.config import Settings
from tests.support.api import bearer, make_token
from tests.support.fixtures import smtp_server, twilio_server  # noqa: F401
from tests.support.stack import RAISE, Stack, stack  # noqa: F401

PREVIEW = {"type": "stabbing", "level": "1", "ward": "Peckham"}


def client(rt: Runtime, token: str | None = None) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=create_app(rt)), base_url="http://sims.test",
                             headers=bearer(token) if token else {})


def run_cli(url: str, *args: str, data_dir: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SIMS_NATS_URL": url, "SIMS_DATA_DIR": str(data_dir)}
    return subprocess.run([sys.executable, "-m", "handlers.cli", *args], capture_output=True, text=True,
                          env=env, timeout=60)


async def test_every_api_route_needs_a_token_with_the_right_scope(worker: Runtime) -> None:
    read = await make_token(worker, "reader", ("read",))
    raise_ = await make_token(worker, "cad-gateway", ("raise",))
    write = await make_token(worker, "case-system", ("write",))
    async with client(worker) as anonymous:
        for method, path in (("GET", "/api/incidents"), ("POST", "/api/incidents"), ("GET", "/api/outbox"),
                             ("POST", "/api/preview")):
            refused = await anonymous.request(method, path, json=RAISE)
            assert refused.status_code == 401, (method, path)
            assert refused.headers["www-authenticate"].startswith("Bearer")
            assert refused.json()["error"]["error"] == "unauthorized" and "API token" in refused.json()["error"]["message"]
        wrong = await anonymous.get("/api/incidents", headers={"Authorization": "Basic dXNlcjpwYXNz"})
        assert wrong.status_code == 401
        unknown = await anonymous.get("/api/incidents", headers=bearer("sims_" + "A" * 43))
        assert unknown.status_code == 401 and "not valid" in unknown.json()["error"]["message"]
        for path in ("/healthz", "/openapi.json", "/docs", "/asyncapi.json", "/static/app.css"):
            assert (await anonymous.get(path)).status_code in (200, 404), path  # never 401
        assert (await anonymous.get("/healthz")).status_code == 200
        assert (await anonymous.get("/openapi.json")).json()["components"]["securitySchemes"]["ApiToken"]["scheme"] == "bearer"

    async with client(worker, raise_) as cad:
        raised = await cad.post("/api/incidents", json=RAISE)
        assert raised.status_code == 201, raised.text
        assert (await cad.post("/api/preview", json=PREVIEW)).status_code == 200
        reference = raised.json()["reference"]
        forbidden = await cad.get("/api/incidents")
        assert forbidden.status_code == 403 and forbidden.json()["error"]["error"] == "forbidden"
        assert "read" in forbidden.json()["error"]["message"]
        moved = await cad.post(f"/api/incidents/{reference}/transitions",
                               json={"trigger": "stand_down", "reason": "x", "actor": "cad"})
        assert moved.status_code == 403
    async with client(worker, read) as reader:
        assert [i["reference"] for i in (await reader.get("/api/incidents")).json()] == [reference]
        assert (await reader.get(f"/api/incidents/{reference}")).status_code == 200
        assert (await reader.get(f"/api/incidents/{reference}/audit")).status_code == 200
        assert (await reader.post("/api/incidents", json=RAISE)).status_code == 403
        assert (await reader.post("/api/preview", json=PREVIEW)).status_code == 403
    async with client(worker, write) as writer:
        assert (await writer.get("/api/incidents")).status_code == 403
        moved = await writer.post(f"/api/incidents/{reference}/transitions",
                                  json={"trigger": "stand_down", "reason": "Police confirm no injuries", "actor": "cs"})
        assert moved.status_code == 200, moved.text
        assert (await writer.post("/api/preview", json=PREVIEW)).status_code == 200

    records = [r for r in await queries.audit_records(worker) if r["action"].startswith("api.")]
    used = {(r["detail"]["token"], r["detail"]["method"], r["detail"]["path"]) for r in records if r["action"] == "api.used"}
    assert ("cad-gateway", "POST", "/api/incidents") in used and ("reader", "GET", "/api/incidents") in used
    assert {r["outcome"] for r in records if r["action"] == "api.refused"} == {"missing", "unknown", "scope"}
    for token in (read, raise_, write):
        assert token not in str(records)


async def test_revoking_takes_effect_at_once_and_only_hashes_are_stored(worker: Runtime, nats_server: NatsServer,
                                                                      tmp_path: Path) -> None:
    made = await asyncio.to_thread(run_cli, nats_server.url, "tokens", "add", "cad-gateway", "--scope", "raise",
                                   "--scope", "read", data_dir=tmp_path)
    assert made.returncode == 0, made.stderr
    token = made.stdout.strip()
    assert token.startswith("sims_") and "not shown again" in made.stderr
    again = await asyncio.to_thread(run_cli, nats_server.url, "tokens", "add", "cad-gateway", "--scope", "read",
                                    data_dir=tmp_path)
    assert again.returncode == 2 and "already exists" in again.stderr
    with capture_logs() as logs:
        async with client(worker, token) as cad:
            assert (await cad.get("/api/incidents")).status_code == 200
            assert (await cad.post("/api/incidents", json=RAISE)).status_code == 201
            listed = await asyncio.to_thread(run_cli, nats_server.url, "tokens", "list", data_dir=tmp_path)
            assert listed.returncode == 0 and "cad-gateway" in listed.stdout and "raise" in listed.stdout
            assert token not in listed.stdout and hash_token(token) not in listed.stdout
            revoked = await asyncio.to_thread(run_cli, nats_server.url, "tokens", "revoke", "cad-gateway",
                                              data_dir=tmp_path)
            assert revoked.returncode == 0, revoked.stderr
            refused = await cad.get("/api/incidents")
            assert refused.status_code == 401 and "revoked" in refused.json()["error"]["message"]
            assert refused.headers["www-authenticate"].startswith("Bearer")
    assert logs is not None and token not in str(logs)
    listed = await asyncio.to_thread(run_cli, nats_server.url, "tokens", "list", data_dir=tmp_path)
    line = next(ln for ln in listed.stdout.splitlines() if ln.startswith("cad-gateway"))
    assert not line.rstrip().endswith(" no") and "UTC" in line  # created, last used and revoked times shown
    missing = await asyncio.to_thread(run_cli, nats_server.url, "tokens", "revoke", "nobody", data_dir=tmp_path)
    assert missing.returncode == 2

    kv = await worker.js.key_value(TOKENS_BUCKET)
    stored = {key: (await kv.get(key)).value or b"" for key in await kv.keys()}
    assert f"h.{hash_token(token)}" in stored
    for key, value in stored.items():
        assert token not in key and token.encode() not in value and token[5:].encode() not in value
    actions = {r["action"] for r in await queries.audit_records(worker)}
    assert {"api_token.added", "api_token.revoked", "api.used", "api.refused"} <= actions
    assert token not in str(await queries.audit_records(worker))
    assert (await TokenStore(worker.js).verify(token)).revoked  # type: ignore[union-attr]


async def test_security_headers_on_every_response(stack: Stack) -> None:
    token = await make_token(stack.rt, scopes=("read",))
    async with httpx.AsyncClient(base_url=stack.http_url) as http:
        answers = {path: await http.get(path, headers=bearer(token) if path.startswith("/api/") else {})
                   for path in ("/healthz", "/api/incidents", "/l/nonsense", "/console/sign-in", "/openapi.json",
                                "/api/nothing-here")}
        answers["401"] = await http.get("/api/incidents")
    for path, answer in answers.items():
        assert answer.headers["x-content-type-options"] == "nosniff", path
        assert answer.headers["x-frame-options"] == "DENY", path
        assert "referrer-policy" in answer.headers, path
        assert "strict-transport-security" not in answer.headers, path
    assert answers["/healthz"].headers["referrer-policy"] == "no-referrer"
    for path in ("/api/incidents", "/l/nonsense", "401"):
        assert answers[path].headers["cache-control"] == "no-store", path
    assert answers["/l/nonsense"].headers["content-security-policy"] == CSP
    assert "'unsafe-inline'" not in answers["/l/nonsense"].headers["content-security-policy"]
    console_csp = answers["/console/sign-in"].headers["content-security-policy"]  # the console keeps its own
    assert "connect-src 'self'" in console_csp and "unsafe-inline" not in console_csp
    assert answers["/console/sign-in"].headers.get_list("content-security-policy") == [console_csp]


async def test_hsts_only_when_the_public_base_url_is_https(nats_server: NatsServer, tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data", public_base_url="https://sims.example.org")
    rt = await connect_runtime(settings, nats_server.url, "test")
    try:
        async with client(rt) as http:
            for path in ("/healthz", "/api/incidents", "/l/nonsense"):
                assert (await http.get(path)).headers["strict-transport-security"] == "max-age=31536000"
    finally:
        await rt.close()


async def test_link_pages_are_rate_limited_per_address(stack: Stack) -> None:
    async with httpx.AsyncClient(base_url=stack.http_url) as http:
        answers = [await http.get("/l/nonsense") for _ in range(30)]
        assert {a.status_code for a in answers} == {404}
        limited = await http.get("/l/nonsense")
        assert limited.status_code == 429 and "Too many requests" in limited.text
        assert 1 <= int(limited.headers["retry-after"]) <= 60
        assert limited.headers["cache-control"] == "no-store" and limited.headers["x-frame-options"] == "DENY"
        posted = await http.post("/l/nonsense", data={"action": "done"})
        assert posted.status_code == 429
        assert (await http.get("/healthz")).status_code == 200  # other routes are not limited
    flagged = [r for r in await queries.audit_records(stack.rt) if r["action"] == "link.rate_limited"]
    assert len(flagged) == 1 and flagged[0]["detail"]["address"] == "127.0.0.1"


async def test_every_refusal_has_the_documented_shape(worker: Runtime) -> None:
    """Bad JSON, a missing field, an unknown route: `{ok: false, error: {error, message}}`, as documented."""
    token = await make_token(worker, "shape", ("read", "raise", "write"))
    async with client(worker, token) as api:
        document = (await api.get("/openapi.json")).json()
        declared = document["paths"]["/api/incidents"]["post"]["responses"]
        for status in ("400", "401", "403", "404", "409", "422"):
            assert declared[status]["content"]["application/json"]["schema"]["$ref"] == "#/components/schemas/ErrorBody"
        assert "HTTPValidationError" not in document["components"]["schemas"]

        before = len((await api.get("/api/incidents")).json())
        not_json = await api.post("/api/incidents", content=b"{not json", headers={"Content-Type": "application/json"})
        missing = await api.post("/api/incidents", json={k: v for k, v in RAISE.items() if k != "ward"})
        no_route = await api.get("/api/nothing-here")
        for answer, status in ((not_json, 422), (missing, 422), (no_route, 404)):
            body = answer.json()
            assert answer.status_code == status, answer.text
            assert body["ok"] is False and body["error"]["message"], body
            assert "detail" not in body
        assert missing.json()["error"]["error"] == "invalid"
        assert any(p.startswith("body.ward") for p in missing.json()["error"]["problems"])
        assert len((await api.get("/api/incidents")).json()) == before  # nothing was raised by the bad ones
