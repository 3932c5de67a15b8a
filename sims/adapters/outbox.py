"""Local outbox: SMS and email written to `<data_dir>/outbox/` when no provider is configured.

Each message appends one JSON line to `messages.jsonl` and gets a readable `.txt` (and `.html` for
email) file; the same key written twice is a no-op returning the same Accepted.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import threading
from collections import deque
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from sims.ports import Accepted, OutgoingEmail, OutgoingSms

PROVIDER = "outbox"
JOURNAL = "messages.jsonl"
Channel = Literal["sms", "email"]

_journals: dict[Path, _Journal] = {}


def _stem(channel: str, key: str) -> str:
    """A file name fixed by the key: readable prefix plus a hash so distinct keys never collide."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", key).strip("._")[:80]
    return f"{channel}-{slug}-{hashlib.sha256(key.encode()).hexdigest()[:12]}"


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


class _Journal:
    """The outbox directory of one data_dir, shared by every OutboxSender in this process."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.lock = threading.Lock()  # the write never awaits: this only guards against threads
        self._keys: dict[str, str] | None = None  # key -> stem

    def keys(self) -> dict[str, str]:
        if self._keys is None:
            self.directory.mkdir(parents=True, exist_ok=True)
            self._keys = {}
            for entry in _read_lines(self.directory / JOURNAL):
                if isinstance(entry.get("key"), str) and isinstance(entry.get("id"), str):
                    self._keys[entry["key"]] = entry["id"]
        return self._keys

    def write(self, key: str, stem: str, entry: dict[str, Any], files: dict[str, str]) -> str:
        """Record the message once; return the stem of its files (the first one's, for a repeat)."""
        keys = self.keys()
        # Another process may have written it: its .txt file shows that.
        if key not in keys and not (self.directory / f"{stem}.txt").exists():
            line = json.dumps(entry, ensure_ascii=False, separators=(",", ":")) + "\n"
            with open(self.directory / JOURNAL, "a", encoding="utf-8") as journal:
                fcntl.flock(journal, fcntl.LOCK_EX)  # `erase_incident` may be rewriting it (another process)
                journal.write(line)
                journal.flush()
                os.fsync(journal.fileno())
        stem = keys.setdefault(key, stem)
        for suffix, text in files.items():  # rewrites what a crash left half-done; same content
            path = self.directory / f"{stem}.{suffix}"
            if not path.exists():
                _write_atomic(path, text)
        return stem


def _journal(data_dir: Path | str) -> _Journal:
    directory = (Path(data_dir) / "outbox").resolve()
    if directory not in _journals:
        _journals[directory] = _Journal(directory)
    return _journals[directory]


class OutboxSender:
    """SmsSender (`channel="sms"`, name "outbox-sms") or EmailSender (`channel="email"`) on local files."""

    def __init__(self, data_dir: Path | str, channel: Channel = "sms", name: str | None = None) -> None:
        self.name = name or f"outbox-{channel}"
        self.channel = channel
        self._data_dir = Path(data_dir)

    @classmethod
    def for_sms(cls, data_dir: Path | str) -> OutboxSender:
        return cls(data_dir, "sms")

    @classmethod
    def for_email(cls, data_dir: Path | str) -> OutboxSender:
        return cls(data_dir, "email")

    @property
    def directory(self) -> Path:
        return self._data_dir / "outbox"

    async def send(self, message: OutgoingSms | OutgoingEmail) -> Accepted:
        journal = _journal(self._data_dir)
        at = datetime.now(UTC).isoformat()
        if isinstance(message, OutgoingEmail):
            stem = _stem("email", message.key)
            entry: dict[str, Any] = {
                "at": at, "channel": "email", "key": message.key, "id": stem, "to": message.to,
                "subject": message.subject, "text": message.text, "message_id": message.message_id,
                "file": f"outbox/{stem}.txt", "html": f"outbox/{stem}.html",
            }
            if message.headers:
                entry["headers"] = message.headers
            header = [f"To: {message.to}", f"Subject: {message.subject}", f"Message-ID: {message.message_id}"]
            header += [f"{k}: {v}" for k, v in message.headers.items()]
            files = {"html": message.html, "txt": _card(at, "email", message.key, header, message.text)}
        else:
            channel = "whatsapp" if message.to.startswith("whatsapp:") else "sms"
            stem = _stem(channel, message.key)
            entry = {"at": at, "channel": channel, "key": message.key, "id": stem, "to": message.to,
                     "body": message.body, "file": f"outbox/{stem}.txt"}
            if message.status_callback:
                entry["status_callback"] = message.status_callback
            files = {"txt": _card(at, channel, message.key, [f"To: {message.to}"], message.body)}
        with journal.lock:
            stem = journal.write(message.key, stem, entry, files)
        return Accepted(provider=PROVIDER, provider_id=stem, status="accepted")

    async def close(self) -> None:
        return None


def _card(at: str, channel: str, key: str, header: list[str], body: str) -> str:
    lines = [f"Channel: {channel}", *header, f"Key: {key}", f"Written: {at}", "", body]
    return "\n".join(lines).rstrip("\n") + "\n"


def _read_lines(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    entries = []
    with open(path, encoding="utf-8") as journal:
        for line in journal:
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut short by a crash
            if isinstance(entry, dict):
                entries.append(entry)
    return entries


def erase_incident(data_dir: Path | str, incident_id: str) -> int:
    """Remove an incident's messages from the outbox (journal lines and files); how many were removed.

    The journal is rewritten in place under an exclusive lock, which every append also takes.
    """
    directory = Path(data_dir) / "outbox"
    path = directory / JOURNAL
    if not path.exists():
        return 0
    prefix = f"{incident_id}."
    gone: list[dict[str, Any]] = []
    with open(path, "r+", encoding="utf-8") as journal:
        fcntl.flock(journal, fcntl.LOCK_EX)
        kept = []
        for line in journal.readlines():
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                kept.append(line)
                continue
            if isinstance(entry, dict) and str(entry.get("key", "")).startswith(prefix):
                gone.append(entry)
            else:
                kept.append(line)
        if gone:
            journal.seek(0)
            journal.writelines(kept)
            journal.truncate()
            journal.flush()
            os.fsync(journal.fileno())
    for entry in gone:
        stem = str(entry.get("id", ""))
        if re.fullmatch(r"[A-Za-z0-9_-][A-Za-z0-9._-]*", stem):  # a stem `_stem` made, never a path
            for suffix in ("txt", "html"):
                (directory / f"{stem}.{suffix}").unlink(missing_ok=True)
    return len(gone)


def read_outbox(data_dir: Path | str, limit: int | None = 50) -> list[dict[str, Any]]:
    """The last `limit` messages written to the outbox (all if None), oldest first."""
    entries = _read_lines(Path(data_dir) / "outbox" / JOURNAL)
    if limit is None:
        return entries
    return list(deque(entries, maxlen=max(limit, 0)))
