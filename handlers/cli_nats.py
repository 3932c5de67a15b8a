"""`sims nats`: NATS users for an external server or cluster (NKeys per role) and stream setup."""

from __future__ import annotations

import asyncio
from pathlib import Path

import typer

from handlers import loop as event_loop

nats_app = typer.Typer(help="NATS: the roles' NKeys (admin, worker, web) and setting up streams as admin.",
                       no_args_is_help=True)


@nats_app.command("keys")
def keys(folder: Path = typer.Argument(..., help="Where to keep the seeds, e.g. /etc/sims/nats (0700)"),
         conf: Path = typer.Option(None, help="Write the server's authorization block here "
                                              "(default: FOLDER/authorization.conf)")) -> None:
    """Make one NKey seed per role (kept if present) and the server's authorization block (public keys only).

    Give each process its own seed (SIMS_NATS_CREDS): web to `sims web`, worker to `sims worker`,
    admin to the CLI and `sims nats setup`; `include` the block from every server's configuration.
    """
    from sims.adapters.nats_auth import authorization_config, ensure_seeds, public_key

    seeds = ensure_seeds(folder)
    target = conf or folder / "authorization.conf"
    target.write_text(authorization_config({role: public_key(path.read_bytes()) for role, path in seeds.items()}))
    for role, path in seeds.items():
        typer.echo(f"{role:7} {public_key(path.read_bytes())}  seed: {path}")
    typer.echo(f"Server authorization block (no secrets): {target}")
    signers = ",".join(public_key(seeds[role].read_bytes()) for role in ("web", "admin"))
    typer.echo(f"For every SIMS process (acknowledgements signed by these are accepted): SIMS_NATS_SIGNERS={signers}")


@nats_app.command("setup")
def setup() -> None:
    """Create or update every stream, consumer and bucket SIMS uses (needs the admin's credentials)."""
    from handlers import cli
    from handlers.serve import prepare_nats
    from sims.logs import configure

    settings = cli._settings()
    configure("warning", json=False)
    url = settings.resolved_nats_url()
    if not url:
        cli._fail("Set SIMS_NATS_URL (and SIMS_NATS_CREDS to the admin's seed).")
        return
    try:
        event_loop.run(asyncio.wait_for(prepare_nats(settings, url, embedded=True), 60))
    except Exception as exc:  # noqa: BLE001 - any failure gets the same advice
        cli._fail(f"Could not set up NATS at {url}: {exc or type(exc).__name__}. Are these the admin's credentials?")
    typer.secho(f"Streams, consumers and buckets are ready on {url}.", fg=typer.colors.GREEN)
