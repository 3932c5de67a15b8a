"""deploy/compose.yaml as an operator reads it: its variables, and the commands its header says to run."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
COMPOSE = REPO / "deploy" / "compose.yaml"
_VARIABLE = re.compile(r"\$\{([A-Z_][A-Z0-9_]*)(?::-([^}]*))?\}")


def interpolate(value: str, env: Mapping[str, str] | None = None) -> str:
    """`${NAME:-default}` and `${NAME}` as compose expands them (an unset or empty NAME takes the default)."""
    env = env or {}
    return _VARIABLE.sub(lambda m: env.get(m.group(1)) or (m.group(2) or ""), value)


def variables() -> dict[str, str]:
    """Every variable compose.yaml reads, with its default."""
    return {m.group(1): m.group(2) or "" for m in _VARIABLE.finditer(COMPOSE.read_text())}


def compose(env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """compose.yaml with its variables expanded (defaults unless `env` sets them)."""
    data: dict[str, Any] = yaml.safe_load(interpolate(COMPOSE.read_text(), env))
    return data


def header_commands() -> list[str]:
    """The commands compose.yaml's header gives before `docker compose`, as written."""
    header = []
    for line in COMPOSE.read_text().splitlines():
        if not line.startswith("#"):
            break
        header.append(line)
    commands = [line[1:].strip() for line in header if line.startswith("#   ")]
    return [c.split("   #")[0].strip() for c in commands if not c.startswith("docker ")]


def run_header_commands(root: Path, env: Mapping[str, str]) -> str:
    """Run the header commands in `root` (a copy of the repository's layout); what they printed."""
    printed = []
    for command in header_commands():
        done = subprocess.run(["sh", "-c", command], cwd=root, env=dict(env), capture_output=True, text=True,
                              timeout=60)
        assert done.returncode == 0, f"compose.yaml header: `{command}` failed: {done.stderr}"
        printed.append(done.stdout)
    return "".join(printed)
