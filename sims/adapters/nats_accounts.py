"""Pan-London on one NATS: an account per borough, one for the VRU, and the only subjects that cross.

Each borough's account holds SIMS's usual streams and buckets under their usual names, with its
own users (admin, worker, web: the permissions of `nats_auth`, plus the two subjects below for the
worker). Accounts share nothing unless an export/import says so, and only two kinds do:

  boundary notices  the sender's worker publishes `sims.boundary.out.<TO>`; it arrives in the
                    receiver's account as `sims.boundary.in.<FROM>` (stream SIMS_BOUNDARY there, a
                    JetStream publish acknowledged across the accounts); only for configured pairs.
  the VRU overview  a borough's worker publishes `sims.vru.<incident id>`; it arrives in the VRU's
                    account as `vru.in.<CODE>.<incident id>` (stream VRU_FEED, last summary per incident).

Both are service exports of the receiving account, each open to one named account, so a borough can
write only its own notices and summaries, cannot read anything back, and can neither write nor read
another borough's subjects, streams or buckets. The VRU account has users `admin` (sets up VRU_FEED)
and `viewer` (reads it); it has no way into a borough's account.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from nats.js import JetStreamContext
from nats.js.api import RetentionPolicy, StorageType, StreamConfig
from nats.js.errors import BadRequestError

from sims.adapters.nats_auth import JS, PERMISSIONS, ensure_seeds, new_seed, public_key

VRU = "VRU"
BOROUGH_ROLES = ("admin", "worker", "web")
VRU_ROLES = ("admin", "viewer")
BOUNDARY_STREAM, BOUNDARY_CONSUMER = "SIMS_BOUNDARY", "boundary-intake"
FORWARD_CONSUMER = "pan-london"
VRU_STREAM = "VRU_FEED"
YEAR = 365 * 86400.0


def boundary_out(to_code: str) -> str:
    """Where a borough's worker publishes a notice for `to_code` (its own account's name for it)."""
    return f"sims.boundary.out.{to_code}"


def boundary_in(from_code: str) -> str:
    """Where that notice lands in the receiver's account."""
    return f"sims.boundary.in.{from_code}"


def vru_out(incident_id: str) -> str:
    return f"sims.vru.{incident_id}"


def vru_in(code: str, incident_id: str = "*") -> str:
    return f"vru.in.{code}.{incident_id}"


def borough_permissions(role: str) -> dict[str, Any]:
    """`nats_auth`'s permissions for a role, with the pan-London subjects: the worker sends notices and
    summaries; the web may not touch the boundary stream's consumers."""
    perms = copy.deepcopy(PERMISSIONS[role])
    if role == "worker":
        perms["publish"]["allow"] += ["sims.boundary.out.>", "sims.vru.>"]
    if role == "web":
        perms["publish"]["deny"] += [f"{JS}.CONSUMER.CREATE.{BOUNDARY_STREAM}", f"{JS}.CONSUMER.CREATE.{BOUNDARY_STREAM}.>",
                                     f"{JS}.CONSUMER.DELETE.{BOUNDARY_STREAM}.*",
                                     f"{JS}.CONSUMER.DELETE.SIMS_EVENTS.{FORWARD_CONSUMER}"]
    return perms


VIEWER = {
    "publish": {"allow": [f"{JS}.INFO", f"{JS}.STREAM.INFO.{VRU_STREAM}", f"{JS}.STREAM.MSG.GET.{VRU_STREAM}",
                          f"{JS}.DIRECT.GET.{VRU_STREAM}", f"{JS}.DIRECT.GET.{VRU_STREAM}.>",
                          f"{JS}.CONSUMER.CREATE.{VRU_STREAM}", f"{JS}.CONSUMER.CREATE.{VRU_STREAM}.>",
                          f"{JS}.CONSUMER.DELETE.{VRU_STREAM}.*", f"{JS}.CONSUMER.INFO.{VRU_STREAM}.*", "$JS.FC.>"]},
    "subscribe": {"allow": ["_INBOX.>"]},
}


def accounts_config(boroughs: dict[str, dict[str, str]], vru: dict[str, str],
                    links: Iterable[tuple[str, str]]) -> str:
    """The server's `accounts` block (pure).

    `boroughs`: code -> role -> public NKey; `vru`: role -> public NKey; `links`: (from, to) pairs
    that may send boundary notices (one direction each).
    """
    pairs = sorted({(a, b) for a, b in links if a != b})
    for a, b in pairs:
        if a not in boroughs or b not in boroughs:
            raise ValueError(f"boundary {a} -> {b} names a borough that is not in the deployment")
    if VRU in boroughs:
        raise ValueError(f"{VRU} is the VRU's account, not a borough code")
    accounts: dict[str, Any] = {}
    for code, users in sorted(boroughs.items()):
        accounts[code] = {
            "jetstream": "enabled",
            "users": [{"nkey": key, "permissions": borough_permissions(role)} for role, key in users.items()],
            "exports": [{"service": boundary_in(a), "accounts": [a]} for a, b in pairs if b == code],
            "imports": ([{"service": {"account": b, "subject": boundary_in(a)}, "to": boundary_out(b)}
                         for a, b in pairs if a == code]
                        + [{"service": {"account": VRU, "subject": vru_in(code)}, "to": vru_out("*")}]),
        }
    accounts[VRU] = {
        "jetstream": "enabled",
        "users": [{"nkey": key, "permissions": {"publish": {"allow": [">"]}, "subscribe": {"allow": [">"]}}
                   if role == "admin" else VIEWER} for role, key in vru.items()],
        "exports": [{"service": vru_in(code), "accounts": [code]} for code in sorted(boroughs)],
    }
    return "accounts " + json.dumps(accounts, indent=2) + "\n"


def ensure_account_seeds(folder: Path, codes: Iterable[str]) -> dict[str, dict[str, Path]]:
    """Seeds per account under `folder/<CODE>/<role>.nk` (and `folder/VRU/`), made once, then reused."""
    found = {code: ensure_seeds(folder / code) for code in codes}
    vru_folder = folder / VRU
    vru_folder.mkdir(parents=True, exist_ok=True)
    vru_folder.chmod(0o700)
    found[VRU] = {}
    for role in VRU_ROLES:
        path = vru_folder / f"{role}.nk"
        if not path.exists():
            path.touch(0o600)
            path.write_bytes(new_seed() + b"\n")
        path.chmod(0o600)
        found[VRU][role] = path
    return found


def write_accounts_config(folder: Path, links: Iterable[tuple[str, str]], codes: Iterable[str]) -> str:
    """Generate (once) every account's seeds under `folder` and return the `accounts` block for them."""
    codes = sorted(set(codes))
    seeds = ensure_account_seeds(folder, codes)
    keys = {account: {role: public_key(path.read_bytes()) for role, path in roles.items()}
            for account, roles in seeds.items()}
    vru = keys.pop(VRU)
    return accounts_config(keys, vru, links)


async def _stream(js: JetStreamContext, config: StreamConfig) -> None:
    try:
        await js.add_stream(config)
    except BadRequestError:  # exists with other settings: bring it up to date
        await js.update_stream(config)


async def ensure_boundary_stream(js: JetStreamContext, replicas: int = 1) -> None:
    """A borough's inbox of its neighbours' notices (kept a year: the record of what crossed)."""
    await _stream(js, StreamConfig(name=BOUNDARY_STREAM, subjects=["sims.boundary.in.>"], storage=StorageType.FILE,
                                   retention=RetentionPolicy.LIMITS, max_age=YEAR, duplicate_window=3600.0,
                                   num_replicas=replicas, deny_delete=True, deny_purge=True))


async def ensure_vru_stream(js: JetStreamContext, replicas: int = 1) -> None:
    """The VRU's overview: the latest summary of every incident of every borough."""
    await _stream(js, StreamConfig(name=VRU_STREAM, subjects=["vru.in.>"], storage=StorageType.FILE,
                                   retention=RetentionPolicy.LIMITS, max_msgs_per_subject=1, duplicate_window=3600.0,
                                   num_replicas=replicas, allow_direct=True))
