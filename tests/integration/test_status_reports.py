"""Status reports that arrive before the send's own record (seen when a stream leader stalls mid-send)."""

from __future__ import annotations

import json

import pytest

from sims.adapters import jetstream as jsa
from tests.support.fixtures import smtp_server, twilio_server  # noqa: F401
from tests.support.stack import Stack, stack  # noqa: F401


@pytest.mark.parametrize("carried", ["key in the callback URL", "SID index of an earlier version"])
async def test_a_report_ahead_of_its_send_record_creates_no_record_and_is_dead_lettered(
        stack: Stack, carried: str) -> None:  # noqa: F811
    sid, key = "SM" + "7" * 32, "0123abcd.holding.nobody-yet.sms.1"
    url = f"{stack.http_url}/hooks/twilio/status"
    if carried.startswith("key"):
        url += f"?k={key}"  # as every SMS is sent now
    else:
        await stack.rt.kv.put("sims_deliveries", f"sid.{sid}", key)  # the index earlier versions wrote
    params = {"AccountSid": stack.twilio.account_sid, "ApiVersion": "2010-04-01", "From": "+447700900999",
              "MessageSid": sid, "MessageStatus": "delivered", "SmsSid": sid, "SmsStatus": "delivered",
              "To": "+447700900123"}
    attempt = await stack.twilio.post_signed(url, params)
    assert attempt.response_status == 204

    async def dead_lettered() -> bool:
        letters = [json.loads(m.data) async for m in jsa.read_subject(stack.rt.js, jsa.DEAD, "sims.dlq.status")]
        return any(sid in letter["payload"] for letter in letters)
    await stack.wait_for(dead_lettered, timeout=20)
    assert await stack.rt.kv.get("sims_deliveries", f"d.{key}") is None  # no record without its key
