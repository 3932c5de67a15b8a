"""Shared parts of the benchmarks: synthetic protocol and directory, local provider processes, stats.

Everything listens on 127.0.0.1 only; every wait is bounded in time.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import queue
import secrets
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from handlers import loop as event_loop

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
RESULTS = Path(__file__).resolve().parent / "results"

# Incident type -> size of the recipient group it notifies. Nested groups: the first 10 contacts are
# in every group, the first 200 in the 200 and 2,000 groups, so one directory serves every size.
TYPE_FOR_SIZE = {10: "stabbing", 200: "shooting", 2000: "homicide", 50: "serious_assault", 1000: "other"}
WARD = "Centre"
TWILIO_FROM = "+15005550006"  # Twilio's magic test sender; never a directory number
DRAMA_MOBILES = 1000  # Ofcom drama range 07700 900000-900999: the only mobiles we may invent
TWILIO_TOKEN = "0123456789abcdef0123456789abcdef"  # letters and digits only: Apprise refuses others
LINK_SECRETS = "bench:" + "b" * 43
RAISE = {"actor": "bench-duty-officer", "level": "1", "ward": WARD, "location": "Market Square, by the clock tower",
         "outline": "A person was injured; police are at the scene (synthetic benchmark incident)",
         "restricted": "Synthetic: no real person"}


def now() -> datetime:
    return datetime.now(UTC)


# ---- protocol and directory -------------------------------------------------------------------

def group_role(size: int) -> str:
    return f"group_{size}"


def write_protocol(folder: Path, sizes: list[int]) -> Path:
    """A one-ward protocol with one notify rule per size, selected by incident type."""
    folder.mkdir(parents=True, exist_ok=True)
    rules = [{"why": f"Benchmark group of {n}", "when": {"types": [TYPE_FOR_SIZE[n]]}, "roles": [group_role(n)]}
             for n in sizes]
    data = {
        "version": 1,
        "borough": {"name": "Benchshire", "code": "BEN", "timezone": "Europe/London", "wards": [WARD, "Riverside"],
                    "neighbours": {WARD: ["Riverside"]}},
        "roles": {group_role(n): f"Synthetic recipients, group of {n}" for n in sizes},
        "notify": rules,
    }
    path = folder / "protocol.yaml"
    path.write_text("# Synthetic benchmark protocol (bench/common.py)\n" + yaml.safe_dump(data, sort_keys=False))
    return path


@dataclass(frozen=True)
class Person:
    id: str
    name: str
    channel: str  # "sms" or "email"
    address: str
    roles: tuple[str, ...]


def people_for(sizes: list[int]) -> list[Person]:
    """max(sizes) fictional people; even-numbered ones get SMS (unique drama numbers), the rest email.

    Half SMS, half email at every size (10 -> 5+5, 200 -> 100+100, 2,000 -> 1,000+1,000). Once the 1,000
    drama numbers are used, everyone else is email-only (example.org).
    """
    total = max(sizes)
    out: list[Person] = []
    mobiles = 0
    for i in range(total):
        roles = tuple(group_role(n) for n in sorted(sizes) if i < n)
        if i % 2 == 0 and mobiles < DRAMA_MOBILES:
            channel, address = "sms", f"+447700{900000 + mobiles}"
            mobiles += 1
        else:
            channel, address = "email", f"person{i:05d}@example.org"
        out.append(Person(id=f"person-{i:05d}", name=f"Bench Person {i}", channel=channel, address=address,
                          roles=roles))
    return out


def write_contacts(folder: Path, people: list[Person]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    contacts = []
    for p in people:
        entry: dict[str, Any] = {"id": p.id, "name": p.name, "organisation": "Benchshire (synthetic)",
                                 "roles": list(p.roles), "channels": [p.channel]}
        entry["mobile" if p.channel == "sms" else "email"] = p.address
        contacts.append(entry)
    (folder / "people.yaml").write_text("# Synthetic, fictional people (Ofcom drama numbers, example.org)\n"
                                        + yaml.safe_dump({"contacts": contacts}, sort_keys=False))
    return folder


@dataclass
class Scenario:
    """Protocol + contacts on disk, validated with SIMS's own loaders."""

    root: Path
    sizes: list[int]
    protocol_path: Path = field(init=False)
    contacts_dir: Path = field(init=False)
    people: list[Person] = field(init=False)

    def __post_init__(self) -> None:
        from sims.directory import load_directory
        from sims.protocol_config import load_protocol

        self.people = people_for(self.sizes)
        self.protocol_path = write_protocol(self.root / "protocol", self.sizes)
        self.contacts_dir = write_contacts(self.root / "contacts", self.people)
        protocol = load_protocol(self.protocol_path)
        directory = load_directory(self.contacts_dir, protocol)
        for n in self.sizes:
            assert len(directory.by_role(group_role(n))) == n, n

    def recipients(self, n: int) -> list[Person]:
        return self.people[:n]

    def mix(self, n: int) -> tuple[int, int]:
        sms = sum(1 for p in self.recipients(n) if p.channel == "sms")
        return sms, n - sms


def render_messages(scenario: Scenario, n: int, base_url: str = "http://127.0.0.1:8000") -> list[dict[str, str]]:
    """The holding message SIMS sends each of the first n people (same templates, a same-length link)."""
    from sims.model import Incident
    from sims.rendering import Renderer
    from sims.views import RecipientView, SharedView

    at = now()
    incident = Incident(id="0" * 32, reference="BEN-2026-0001", type=TYPE_FOR_SIZE[n], level="1", ward=WARD,
                        occurred_at=at, raised_at=at, updated_at=at, raised_by="bench",
                        **{k: v for k, v in RAISE.items() if k in ("location", "outline")})
    renderer = Renderer(ROOT / "templates", "OFFICIAL-SENSITIVE")
    view = SharedView.of(incident)
    out = []
    for p in scenario.recipients(n):
        link = f"{base_url}/l/{secrets.token_urlsafe(48)}"
        person = RecipientView(name=p.name, salutation=p.name, roles=p.roles)
        if p.channel == "sms":
            out.append({"channel": "sms", "to": p.address, "body": renderer.render_sms("holding", view, person, link).body})
        else:
            email = renderer.render_email("holding", view, person, link)
            out.append({"channel": "email", "to": p.address, "subject": email.subject, "body": email.text,
                        "html": email.html})
    return out


# ---- local processes --------------------------------------------------------------------------

_readers: dict[int, queue.Queue[str | None]] = {}


def read_line_pump(proc: subprocess.Popen[str]) -> queue.Queue[str | None]:
    assert proc.stdout is not None
    lines = _readers.get(proc.pid)
    if lines is None:
        lines = _readers[proc.pid] = queue.Queue()
        stream, sink = proc.stdout, lines

        def pump() -> None:
            for line in stream:
                sink.put(line)
            sink.put(None)

        threading.Thread(target=pump, daemon=True, name=f"stdout-{proc.pid}").start()
    return lines


def _queued_lines(lines: queue.Queue[str | None], timeout: float) -> Iterator[str]:
    """The lines a pump queued, until its process closed stdout or `timeout` seconds passed.

    The end mark stays in the queue, so a later reader sees the end too.
    """
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        try:
            line = lines.get(timeout=left)
        except queue.Empty:
            return
        if line is None:
            lines.put(None)
            return
        yield line


def read_line(proc: subprocess.Popen[str], timeout: float, want: str | None = None) -> str:
    """The next stdout line (containing `want`, if given) within `timeout` seconds.

    A daemon thread per process reads its stdout into a queue (select() on a buffered text pipe misses
    lines already in Python's buffer).
    """
    for line in _queued_lines(read_line_pump(proc), timeout):
        if want is None or want in line:
            return line.strip()
    raise TimeoutError(f"process {proc.args!r} gave no line{f' with {want!r}' if want else ''} in {timeout}s "
                       f"(exit {proc.poll()})")


def rest_of_output(proc: subprocess.Popen[str], timeout: float) -> str:
    """What the process printed after the lines already read, until it closed stdout."""
    lines = _readers.pop(proc.pid, None)
    if lines is None:
        out, _ = proc.communicate(timeout=timeout)
        return out or ""
    return "".join(_queued_lines(lines, timeout))


def stop_process(proc: subprocess.Popen[str] | None, timeout: float = 10.0) -> str:
    """SIGTERM one process we started (by its pid), SIGKILL if it lingers; return what it printed last."""
    if proc is None:
        return ""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    if proc.stdout is not None and proc.pid not in _readers:
        read_line_pump(proc)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)
    return rest_of_output(proc, 5) if proc.stdout is not None else ""


def child_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SIMS_", "TWILIO_"))}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.update(extra)
    return env


@dataclass
class Providers:
    """The local Twilio-like server and an SMTP sink, each in its own process (as a provider would be)."""

    twilio: subprocess.Popen[str] | None = None
    smtp: subprocess.Popen[str] | None = None
    twilio_url: str = ""
    account_sid: str = ""
    auth_token: str = ""
    smtp_port: int = 0
    counts: dict[str, Any] = field(default_factory=dict)
    twilio_delay: float = 0.0  # seconds the Twilio-like server takes to answer each request
    smtp_delay: float = 0.0  # seconds the SMTP sink takes to answer each end of data

    def start(self) -> Providers:
        from sims.adapters.nats_server import free_port

        env = child_env()
        self.twilio = subprocess.Popen(
            [PYTHON, "-m", "tests.support.twilio_server", "--port", str(free_port()), "--no-record",
             "--auth-token", TWILIO_TOKEN, "--delay", str(self.twilio_delay)],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, start_new_session=True)
        self.smtp = subprocess.Popen([PYTHON, "-m", "bench.smtp_sink", "--port", str(free_port()),
                                      "--delay", str(self.smtp_delay)],
                                     cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                                     start_new_session=True)
        try:
            info = json.loads(read_line(self.twilio, 20))
            self.twilio_url, self.account_sid, self.auth_token = info["url"], info["account_sid"], info["auth_token"]
            self.smtp_port = int(json.loads(read_line(self.smtp, 20))["port"])
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> dict[str, Any]:
        for name, proc in (("twilio", self.twilio), ("smtp", self.smtp)):
            out = stop_process(proc)
            for line in reversed(out.strip().splitlines()):
                try:
                    self.counts[name] = json.loads(line)
                    break
                except ValueError:
                    continue
        self.twilio = self.smtp = None
        return self.counts

    def __enter__(self) -> Providers:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# ---- statistics -------------------------------------------------------------------------------

def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (with 20 samples p99 is the maximum, with 5 it is the maximum too)."""
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def summarise(n: int, samples: list[float], extra: dict[str, Any] | None = None) -> dict[str, Any]:
    p50 = percentile(samples, 50)
    return {"n": n, "runs": len(samples), "p50_s": p50, "p99_s": percentile(samples, 99),
            "min_s": min(samples), "max_s": max(samples), "mean_s": sum(samples) / len(samples),
            "msgs_per_s_p50": n / p50 if p50 > 0 else None, "samples_s": samples, **(extra or {})}


def cpu_per_message(since: float, messages: int) -> float:
    """Milliseconds of this process's CPU per message since `since` (a `time.process_time()`).

    Steadier than wall-clock times on a shared machine: what one message costs the sending process.
    """
    return (time.process_time() - since) * 1000 / max(1, messages)


def fmt_s(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value * 1000:.0f} ms" if value < 10 else f"{value:.1f} s"


def machine() -> dict[str, Any]:
    import platform

    return {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform(),
            "at": now().isoformat()}


@contextmanager
def run_folder(prefix: str = "sims-bench-") -> Iterator[Path]:
    """A temporary folder for one run; kept (and named on stderr) with SIMS_BENCH_KEEP=1, to look into a failure."""
    if os.environ.get("SIMS_BENCH_KEEP"):
        kept = Path(tempfile.mkdtemp(prefix=prefix))
        print(f"keeping {kept}", file=sys.stderr)
        yield kept
        return
    with tempfile.TemporaryDirectory(prefix=prefix) as name:
        yield Path(name)


def _terminate(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)  # run the finally blocks: stop every process this run started


def stop_on_sigterm() -> None:
    """SIGTERM ends the run through its finally blocks, so no server or worker is left behind."""
    signal.signal(signal.SIGTERM, _terminate)


# ---- command lines ----------------------------------------------------------------------------

def parse_sizes(text: str) -> list[int]:
    sizes = sorted({int(s) for s in text.split(",") if s.strip()})
    unknown = [s for s in sizes if s not in TYPE_FOR_SIZE]
    if unknown:
        raise SystemExit(f"sizes must be among {sorted(TYPE_FOR_SIZE)}")
    return sizes


Contender = Callable[[Scenario, Providers, Path, list[int], bool], Coroutine[Any, Any, Any]]


def bench_parser(doc: str | None) -> argparse.ArgumentParser:
    """The options every contender run on its own takes (`--quick`, `--sizes`); a contender may add its own."""
    parser = argparse.ArgumentParser(description=doc.split("\n")[0] if doc else None)
    parser.add_argument("--quick", action="store_true", help="fewer runs (for smoke tests)")
    parser.add_argument("--sizes", default="10,200,2000")
    return parser


def run_alone(doc: str | None, contender: Contender, argv: list[str] | None = None,
              args: argparse.Namespace | None = None) -> None:
    """One contender on its own: its scenario and providers, then the providers' counts. `args`: options
    already parsed (by a `bench_parser` the contender added to), else `argv` is parsed here."""
    args = args or bench_parser(doc).parse_args(argv)
    sizes = parse_sizes(args.sizes)
    with run_folder("sims-bench-") as tmp_name:
        tmp = Path(tmp_name)
        scenario = Scenario(tmp / "scenario", sizes)
        with Providers() as providers:
            event_loop.run(contender(scenario, providers, tmp, sizes, args.quick))
    print(f"provider counts: {json.dumps(providers.counts)}; machine: {machine()['cpus']} cpus")


def finish_run(results: dict[str, Any], counts: dict[str, Any], started: float, path: Path | None) -> None:
    """Add the providers' counts, the machine and the seconds since `started` (a `time.monotonic()`) to a run's
    results, print the closing line, and write the results to `path` if one is given."""
    results["providers"] = counts
    results["machine"] = machine()
    results["elapsed_s"] = time.monotonic() - started
    print(f"done in {results['elapsed_s']:.0f} s; provider counts: {json.dumps(counts)}")
    if path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(results, indent=2))
