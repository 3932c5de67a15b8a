"""Personal links: short signed tokens bound to an incident, task and person, with an expiry. No I/O.

A token is `<kid><link id>.<mac>`: `kid` names the secret (so secrets rotate while old links stay
valid until they expire), the link id names the stored binding (incident, task, person, expiry),
and the MAC (HMAC-SHA256, 96 bits) covers the kid, the id and the whole binding. Altering any byte,
or moving the link to another task or person, fails the MAC.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from dataclasses import dataclass
from datetime import datetime

from sims.errors import SimsError

TOKEN = re.compile(r"^([a-z0-9])([a-z2-7]{16})\.([A-Za-z0-9_-]{16})$")


class LinkRefused(SimsError):
    """A link that cannot be used; `reason` is one of forged, expired, revoked, unknown."""

    code = "link_refused"

    def __init__(self, reason: str, message: str) -> None:
        self.reason = reason
        super().__init__(message)


@dataclass(frozen=True, slots=True, kw_only=True)
class Binding:
    """What a link is for: one person's part in one task (or message) of one incident."""

    incident_id: str
    task: str
    person: str
    expires_at: datetime
    kid: str

    def message(self, link_id: str) -> bytes:
        return "|".join((self.kid, link_id, self.incident_id, self.task, self.person,
                         self.expires_at.isoformat())).encode()


def link_id_for(key: str) -> str:
    """A stable link id for a message key, so a re-sent message carries the same link."""
    return base64.b32encode(hashlib.sha256(key.encode()).digest()[:10]).decode().lower()


def _mac(secret: bytes, binding: Binding, link_id: str) -> str:
    digest = hmac.new(secret, binding.message(link_id), hashlib.sha256).digest()[:12]
    return base64.urlsafe_b64encode(digest).decode()


def mint(secret: bytes, binding: Binding, link_id: str) -> str:
    return f"{binding.kid}{link_id}.{_mac(secret, binding, link_id)}"


def parse(token: str) -> tuple[str, str, str]:
    """(kid, link id, mac) of a well-formed token, else LinkRefused('forged')."""
    match = TOKEN.fullmatch(token or "")  # not .match: "$" also matches before a trailing newline
    if not match:
        raise LinkRefused("forged", "This link is not valid. Use the link from your message, or contact the duty officer.")
    return match.group(1), match.group(2), match.group(3)


def check(keyring: dict[str, bytes], token: str, binding: Binding | None, now: datetime,
          revoked: bool = False) -> Binding:
    """The binding of a genuine, unexpired, unrevoked token; LinkRefused says which it is not."""
    kid, link_id, mac = parse(token)
    secret = keyring.get(kid)
    if binding is None or secret is None or binding.kid != kid or not hmac.compare_digest(mac, _mac(secret, binding, link_id)):
        raise LinkRefused("forged", "This link is not valid. Use the link from your message, or contact the duty officer.")
    if revoked:
        raise LinkRefused("revoked", "This link has been withdrawn. The duty officer can send you a new one.")
    if now >= binding.expires_at:
        raise LinkRefused("expired", "This link has expired. The duty officer can send you a new one.")
    return binding
