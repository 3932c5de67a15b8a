"""Operational figures for Prometheus, read from NATS at scrape time (so every process reports the same)."""

from __future__ import annotations

from collections import Counter
from datetime import datetime
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import CollectorRegistry
from prometheus_client.exposition import generate_latest

from sims.adapters import jetstream as jsa
from sims.messages import EventType
from sims.model import Incident
from sims.services import INCIDENTS

BUCKETS = (1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0, float("inf"))


def _histogram(name: str, doc: str, values: list[float]) -> HistogramMetricFamily:
    counts = [sum(1 for v in values if v <= bound) for bound in BUCKETS]
    family = HistogramMetricFamily(name, doc)
    family.add_metric([], buckets=[(str(b) if b != float("inf") else "+Inf", c) for b, c in zip(BUCKETS, counts)],
                      sum_value=sum(values))
    return family


async def snapshot(rt: Any) -> list[Any]:
    """Every metric family, computed from the incidents, delivery records, streams and consumers."""
    incidents = [Incident.model_validate(v) for v in (await rt.kv.entries(INCIDENTS)).values()]
    live = [i for i in incidents if not i.exercise]  # exercises stay out of live statistics
    by_state = GaugeMetricFamily("sims_incidents", "Incidents by state (exercises excluded)", labels=["state"])
    for state, count in sorted(Counter(i.state.value for i in live).items()):
        by_state.add_metric([state], count)

    live_ids = {i.id for i in live}
    records = [r for r in (await rt.kv.entries("sims_deliveries", "d.>")).values()
               if r.get("incident_id") in live_ids]  # an exercise's messages are not live figures either
    messages = CounterMetricFamily("sims_messages", "Messages by channel, provider and outcome",
                                   labels=["channel", "provider", "outcome"])
    outcome = Counter((r.get("channel", "?"), r.get("provider", "?"),
                       "failed" if r.get("status") in ("failed", "undelivered") else
                       "sent" if r.get("accepted_at") else "waiting") for r in records)
    for (channel, provider, result), count in sorted(outcome.items()):
        messages.add_metric([channel, provider, result], count)
    retried = CounterMetricFamily("sims_messages_retried", "Messages that needed more than one attempt",
                                  labels=["channel"])
    for channel, count in sorted(Counter(r.get("channel", "?") for r in records if int(r.get("attempts") or 0) > 1).items()):
        retried.add_metric([channel], count)

    raised = {i.id: i.raised_at for i in live}
    notify_times = []
    for incident_id, at in raised.items():
        accepted = [datetime.fromisoformat(r["accepted_at"]) for r in records
                    if r.get("incident_id") == incident_id and r.get("kind") == "holding" and r.get("accepted_at")]
        if accepted:
            notify_times.append((max(accepted) - at).total_seconds())
    ack_times = []
    for incident in live:
        events, _seq = await rt.store.load(incident.id)
        ack_times += [(e.at - incident.raised_at).total_seconds() for e in events
                      if e.type is EventType.MESSAGE_ACKNOWLEDGED
                      or (e.type is EventType.TASK_CHANGED and e.data.get("action") == "acknowledge")]

    lag = GaugeMetricFamily("sims_consumer_pending", "Messages waiting for each durable consumer",
                            labels=["stream", "consumer"])
    for stream, consumer in ((jsa.COMMANDS, jsa.COMMAND_CONSUMER), (jsa.COMMANDS, jsa.STATUS_CONSUMER),
                             (jsa.EVENTS, jsa.NOTIFIER), *((jsa.OUTBOX, c) for c in jsa.SEND_CONSUMERS.values())):
        info = await rt.js.consumer_info(stream, consumer)
        lag.add_metric([stream, consumer], info.num_pending + info.num_ack_pending)
    dead = GaugeMetricFamily("sims_dead_letters", "Dead letters kept for a person to see")
    dead.add_metric([], (await rt.js.stream_info(jsa.DEAD)).state.messages)
    escalations = CounterMetricFamily("sims_escalations", "Task escalations fired", labels=["level"])
    levels = Counter(t.escalation_level for i in live for t in i.tasks if t.escalation_level)
    for level, count in sorted(levels.items()):
        escalations.add_metric([str(level)], count)
    suppliers = GaugeMetricFamily("sims_supplier_up", "1 while a supplier is healthy, 0 while failing or "
                                  "being probed (as workers last reported)", labels=["channel", "supplier"])
    in_use = GaugeMetricFamily("sims_supplier_active", "1 for the supplier each channel sends through now",
                               labels=["channel", "supplier"])
    for s in sorted((await rt.kv.entries("sims_deliveries", "supplier.>")).values(),
                    key=lambda s: (str(s.get("channel")), int(s.get("order", 0)))):
        suppliers.add_metric([s["channel"], s["supplier"]], 1 if s.get("state") == "healthy" else 0)
        in_use.add_metric([s["channel"], s["supplier"]], 1 if s.get("active") else 0)
    return [by_state, messages, retried, lag, dead, escalations, suppliers, in_use,
            _histogram("sims_time_to_notify_seconds", "Raise to the last holding notice accepted", notify_times),
            _histogram("sims_time_to_acknowledge_seconds", "Raise to each acknowledgement", ack_times)]


class _Fixed:
    def __init__(self, families: list[Any]) -> None:
        self.families = families

    def collect(self) -> Any:
        yield from self.families


async def exposition(rt: Any) -> bytes:
    """The Prometheus text format of `snapshot`."""
    registry = CollectorRegistry()
    registry.register(_Fixed(await snapshot(rt)))
    return bytes(generate_latest(registry))
