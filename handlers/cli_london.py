"""`sims london`: a pan-London deployment on one NATS - accounts per borough and for the VRU, their setup,
and the VRU's overview of every borough's incidents (see deploy/pan-london/README.md)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import typer

from handlers import loop as event_loop

london_app = typer.Typer(help="Pan-London: one NATS account per borough and one for the VRU; boundary notices "
                              "between neighbours; the VRU's overview.", no_args_is_help=True)

PROTOCOLS = typer.Argument(..., help="Each borough's protocol file, e.g. protocols/southwark.yaml protocols/lambeth.yaml")


def _boroughs(protocols: list[Path]) -> dict[str, Path]:
    from handlers import cli
    from sims.errors import SimsError
    from sims.protocol_config import load_protocol

    found: dict[str, Path] = {}
    for path in protocols:
        try:
            code = load_protocol(path).borough.code
        except SimsError as exc:
            cli._fail(str(exc))
            raise
        if code in found:
            cli._fail(f"{path} and {found[code]} are both borough {code}")
        found[code] = path
    return found


@london_app.command("accounts")
def accounts(protocols: list[Path] = PROTOCOLS,
             seeds: Path = typer.Option(..., help="Where to keep every account's seeds, e.g. /etc/sims/london (0700)"),
             conf: Path = typer.Option(None, help="Write the server's accounts block here (default: SEEDS/accounts.conf)")
             ) -> None:
    """Make each account's NKey seeds (kept if present) and the server's `accounts` block (public keys only).

    Boundary notices may flow between two boroughs when either's protocol names the other under
    `boundaries:` (each direction its own export/import). `include` the block from the server's config.
    """
    from sims.adapters.nats_accounts import VRU, write_accounts_config
    from sims.protocol_config import load_protocol

    boroughs = _boroughs(protocols)
    links = set()
    for code, path in boroughs.items():
        for other in load_protocol(path).boundaries:
            if other in boroughs:
                links |= {(code, other), (other, code)}
            else:
                typer.secho(f"{code}: neighbour {other} is not in this deployment; no notices to it", err=True,
                            fg=typer.colors.YELLOW)
    text = write_accounts_config(seeds, links, boroughs)
    target = conf or seeds / "accounts.conf"
    target.write_text(text)
    for account in [*sorted(boroughs), VRU]:
        typer.echo(f"{account}: seeds in {seeds / account}")
    for a, b in sorted(links):
        typer.echo(f"boundary notices {a} -> {b}")
    typer.echo(f"Server accounts block (no secrets): {target}")


@london_app.command("setup")
def setup(protocols: list[Path] = PROTOCOLS,
          seeds: Path = typer.Option(..., help="The folder `sims london accounts` wrote the seeds to")) -> None:
    """Create every borough's streams, buckets and boundary inbox, and the VRU's overview stream (as each admin)."""
    from handlers import cli
    from handlers.pan_london import setup_borough, setup_vru
    from sims.adapters.nats_accounts import VRU
    from sims.adapters.nats_auth import NatsAccess

    settings = cli._settings()
    url = settings.resolved_nats_url()
    if not url:
        cli._fail("Set SIMS_NATS_URL to the pan-London NATS.")
        return

    async def go() -> None:
        for code, path in _boroughs(protocols).items():
            own = settings.model_copy(update={"nats_creds": seeds / code / "admin.nk", "protocol": path})
            await asyncio.wait_for(setup_borough(own, url), 60)
            typer.echo(f"{code}: streams, buckets and boundary inbox ready")
        access = NatsAccess(creds=seeds / VRU / "admin.nk", tls_ca=settings.nats_tls_ca,
                            tls_cert=settings.nats_tls_cert, tls_key=settings.nats_tls_key)
        await asyncio.wait_for(setup_vru(url, access, settings.replicas), 60)
        typer.echo(f"{VRU}: overview stream ready")

    try:
        event_loop.run(go())
    except Exception as exc:  # noqa: BLE001 - any failure gets the same advice
        cli._fail(f"Could not set up {url}: {exc or type(exc).__name__}. Did `sims london accounts` write these "
                  "seeds, and does the server include its accounts block?")


@london_app.command("incidents")
def incidents(all_: bool = typer.Option(False, "--all", help="Closed and stood-down incidents too"),
              as_json: bool = typer.Option(False, "--json", help="JSON lines")) -> None:
    """The VRU's overview: every borough's incidents (SIMS_NATS_CREDS: the VRU's viewer seed)."""
    from handlers import cli
    from handlers.pan_london import overview, overview_rows
    from sims.adapters import jetstream as jsa
    from sims.adapters.nats_auth import access_for

    settings = cli._settings()
    url = settings.resolved_nats_url()
    if not url:
        cli._fail("Set SIMS_NATS_URL to the pan-London NATS and SIMS_NATS_CREDS to the VRU's viewer seed.")
        return

    async def go() -> list[dict[str, object]]:
        nc = await asyncio.wait_for(jsa.connect(url, "sims-london", **access_for(settings, "viewer").connect_options()), 10)
        try:
            return overview_rows(await overview(nc.jetstream(timeout=10.0)), open_only=not all_)
        finally:
            await nc.close()

    try:
        rows = event_loop.run(go())
    except Exception as exc:  # noqa: BLE001 - any failure gets the same advice
        cli._fail(f"Cannot read the VRU's overview at {url}: {exc or type(exc).__name__}")
        return
    if as_json:
        for row in rows:
            typer.echo(json.dumps(row))
        return
    if not rows:
        typer.echo("No open incidents in any borough." if not all_ else "No incidents in any borough.")
        return
    typer.echo(f"{'borough':12} {'reference':15} {'state':12} {'type':16} lvl {'ward':34} linked / concerns")
    for r in rows:
        extra = " ".join(filter(None, [f"from {r['linked_from']}" if r["linked_from"] else "",
                                       "tells " + ",".join(r["concerns"]) if r["concerns"] else "",  # type: ignore[arg-type]
                                       "GOLD" if r["gold"] else "", "EXERCISE" if r["exercise"] else ""]))
        typer.echo(f"{r['borough']!s:12} {r['reference']!s:15} {r['state']!s:12} {r['type']!s:16} {r['level']!s:3} "
                   f"{r['ward']!s:34} {extra}")
