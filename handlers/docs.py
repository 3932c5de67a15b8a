"""The served API documents: OpenAPI (FastAPI) and AsyncAPI (FastStream), also committed under docs/."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, cast

from faststream.specification import AsyncAPI

from handlers.http import create_app
from handlers.worker import build_broker
from sims.bootstrap import Runtime

DOCS = Path(__file__).resolve().parent.parent / "docs"


def openapi() -> dict[str, Any]:
    return create_app(cast(Runtime, None)).openapi()


def asyncapi() -> dict[str, Any]:
    broker = build_broker(cast(Runtime, None), "nats://127.0.0.1:4222")
    spec = AsyncAPI(broker, title="SIMS", version="0.1.0",
                    description="Commands in, results and dead letters out. See docs/ARCHITECTURE.md.")
    return cast(dict[str, Any], json.loads(spec.to_specification().to_json()))


def write(folder: Path = DOCS) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, doc in (("openapi.json", openapi()), ("asyncapi.json", asyncapi())):
        path = folder / name
        path.write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")
        written.append(path)
    return written
