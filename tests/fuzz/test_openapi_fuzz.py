"""schemathesis against the OpenAPI document a running SIMS serves (real nats-server, worker and web).

Every documented operation but the Twilio hooks gets generated valid and invalid requests: no 5xx,
bad input gets a 4xx, and responses match their declared schema and content type.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import requests
import schemathesis
import uvicorn
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    negative_data_rejection,
    not_a_server_error,
    response_schema_conformance,
)

from handlers.http import create_app
from handlers.worker import build_broker
from sims.adapters.nats_server import NatsServer, free_port
from sims.bootstrap import connect_runtime
from sims.config import Settings

pytestmark = pytest.mark.fuzz

PER_OPERATION = {GenerationMode.POSITIVE: 30, GenerationMode.NEGATIVE: 20}  # 50 requests per operation at most
RAISE = {"actor": "duty-officer", "type": "stabbing", "level": "1", "occurred_at": "2026-11-30T21:40:00Z",
         "ward": "Peckham", "location": "Rye Lane, near the station", "outline": "A young man was stabbed"}


@contextmanager
def running_sims(nats_url: str, tmp_path: Path) -> Iterator[tuple[str, dict[str, str]]]:
    """Worker and web server on their own event loop in a thread (schemathesis calls are blocking)."""
    port = free_port()
    state: dict[str, Any] = {}

    async def main() -> None:
        settings = Settings(data_dir=tmp_path / "data", http_port=port, public_base_url=f"http://127.0.0.1:{port}",
                            link_secrets="k:fuzz-secret-for-links", command_timeout=5.0)
        rt = await connect_runtime(settings, nats_url, "fuzz")
        broker = build_broker(rt, nats_url)
        await broker.start()
        app = create_app(rt)
        store = getattr(app.state, "token_store", None)  # API tokens (if this SIMS has them): a full-scope one
        if store is not None:
            state["token"], _ = await store().add("fuzz", ["read", "raise", "write"], by="fuzz")
        server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                               lifespan="off", timeout_graceful_shutdown=3))
        state["server"] = server
        try:
            await server.serve()
        finally:
            await broker.stop()
            await rt.close()

    thread = threading.Thread(target=lambda: asyncio.run(main()), name="sims-fuzz", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not (state.get("server") and state["server"].started):
        assert thread.is_alive() and time.monotonic() < deadline, "SIMS did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}", ({"Authorization": f"Bearer {state['token']}"} if "token" in state else {})
    finally:
        state["server"].should_exit = True
        thread.join(30)


def refusal_envelope(response: Any) -> bool:
    """Every 4xx is in SIMS's own refusal shape (`{"ok": false, "error": {"error", "message"}}`)."""
    if not 400 <= response.status_code < 500:
        return False
    body = response.json()
    error = body.get("error")
    assert body.get("ok") is False and isinstance(error, dict), body
    assert isinstance(error.get("error"), str) and isinstance(error.get("message"), str) and error["message"], body
    assert not isinstance(body.get("detail"), (list, str)), body  # never FastAPI's default shape
    return True


def test_every_documented_operation_survives_schemathesis(nats_server: NatsServer, tmp_path: Path) -> None:
    with running_sims(nats_server.url, tmp_path) as (base, auth):
        raised = httpx.post(f"{base}/api/incidents", json=RAISE, headers=auth, timeout=15)
        assert raised.status_code < 500, raised.text
        schema = schemathesis.openapi.from_url(f"{base}/openapi.json")
        operations = [result.ok() for result in schema.get_all_operations()]
        operations = [op for op in operations if not op.path.startswith("/hooks/")]  # Twilio: signed, not ours
        assert len(operations) >= 10, [op.label for op in operations]
        session = requests.Session()
        session.headers.update(auth)  # a valid API token, so generated requests reach the handlers
        failures: list[str] = []
        seen: dict[str, set[int]] = {}
        refusals: list[bool] = []
        started = time.monotonic()
        for operation in operations:
            for mode, count in PER_OPERATION.items():
                checks = [not_a_server_error, response_schema_conformance, content_type_conformance]
                if mode is GenerationMode.NEGATIVE and operation.method.upper() != "GET":  # reads ignore unknown
                    # query parameters (schemathesis counts those as invalid input), so only bodies must be refused
                    checks.append(negative_data_rejection)  # bad input: a 4xx

                @settings(max_examples=count, deadline=None, database=None, phases=[Phase.explicit, Phase.generate],
                          suppress_health_check=list(HealthCheck))
                @given(case=operation.as_strategy(generation_mode=mode))
                def fuzz(case: schemathesis.Case) -> None:
                    response = case.call(base_url=base, session=session, timeout=15)
                    seen.setdefault(operation.label, set()).add(response.status_code)
                    if 400 <= response.status_code < 500:
                        refusals.append(refusal_envelope(response))
                    case.validate_response(response, checks=checks)  # the declared schema, refusals included

                try:
                    fuzz()
                except Unsatisfiable:
                    assert mode is GenerationMode.NEGATIVE  # nothing to get wrong: no parameters, no body
                except (Exception, BaseExceptionGroup) as exc:  # noqa: BLE001 - gathered, reported below
                    failures.append(f"{operation.label} [{mode.value}]: {type(exc).__name__}: {str(exc)[:1500]}")
        elapsed = time.monotonic() - started
        print(f"schemathesis: {len(operations)} operations in {elapsed:.1f}s; statuses: "
              + "; ".join(f"{label} {sorted(codes)}" for label, codes in sorted(seen.items())))
        assert not failures, "\n\n".join(failures)
        assert len(refusals) > 50 and all(refusals)  # plenty of bad input met, each refused in SIMS's shape
        assert httpx.get(f"{base}/healthz", timeout=5).status_code == 200
