"""Use cases of notification: plan messages for an event, send one, record a provider's report, fire timers.

Work items travel on the `SIMS_OUTBOX` work queue; delivery records live in KV `sims_deliveries`
(`d.<message key>`), the people told per incident in `told.<incident>`, Twilio SIDs in `sid.<sid>`.
The service is assembled from `planning`, `sending` and `timers` over the shared `core`.
"""

from __future__ import annotations

from dataclasses import dataclass

from sims.messages import Event
from sims.notifications.core import BUCKET, UnknownMessage, WorkQueue
from sims.notifications.planning import Planning
from sims.notifications.retry import MAX_ATTEMPTS, RateLimiter, Retry, backoff
from sims.notifications.sending import Sending
from sims.notifications.timers import Timers


@dataclass
class NotificationService(Planning, Sending, Timers):
    """Notification's use cases over its ports (see `NotificationCore` for the fields)."""


__all__ = ["NotificationService", "Retry", "RateLimiter", "backoff", "MAX_ATTEMPTS", "Event", "BUCKET",
           "UnknownMessage", "WorkQueue"]
