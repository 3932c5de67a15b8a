"""Submitting a command: publish it to the command stream and wait for its result.

Used alike by the CLI, the HTTP API and the NATS request gateway, so every intake reaches the one
command handler and gets the same answer.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from nats.aio.client import Client as NATS
from nats.js import JetStreamContext

from sims.adapters.jetstream import ACK_SUBJECT, CMD_SUBJECT, NatsKV, publish, reply_subject
from sims.messages import Command, is_acknowledgement


async def submit(nc: NATS, js: JetStreamContext, kv: NatsKV, command: Command,
                 timeout: float = 10.0) -> dict[str, Any]:
    """The command's result; `{"ok": None, "queued": True}` if no worker answered within `timeout`."""
    done = await kv.get("sims_results", command.command_id)
    if done is not None:
        return dict(done)
    sub = await nc.subscribe(reply_subject(command.command_id), max_msgs=1)
    try:
        subject = ACK_SUBJECT if is_acknowledgement(command) else CMD_SUBJECT
        await publish(js, subject, command.model_dump_json().encode(),
                      headers={"Nats-Msg-Id": command.command_id})
        try:
            msg = await sub.next_msg(timeout=timeout)
            return dict(json.loads(msg.data))
        except asyncio.TimeoutError:
            done = await kv.get("sims_results", command.command_id)
            if done is not None:
                return dict(done)
            return {"ok": None, "queued": True, "command_id": command.command_id, "kind": command.kind,
                    "message": "Accepted and queued; no worker answered yet. Check with `sims status`."}
    finally:
        await sub.unsubscribe()
