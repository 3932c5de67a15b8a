"""The duty officer's web console: sign-in, the live incident board (SSE), the outbox and users.

Every route checks the signed session and the role; every POST checks the session's CSRF token.
Actions become ordinary commands (`submit`), so the console never changes state itself. Incident
pages and the raise form are in `handlers/console_incident.py`; the board's data in `console_board.py`.
"""

from __future__ import annotations

import contextlib
import re
import secrets
import time
from datetime import datetime
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response, StreamingResponse
from jinja2 import Environment, FileSystemLoader, select_autoescape
from markupsafe import Markup, escape

from handlers import auth
from handlers.auth import Need, Session
from handlers.console_board import BoardFeed, board_rows, supplier_rows
from sims.adapters.commands import submit
from sims.bootstrap import Runtime, keyring

LIVE_SPLIT = "\n<!-- suppliers -->\n"
PAGES = Path(__file__).resolve().parent.parent / "templates" / "pages"
COOKIE, SIGNIN_COOKIE = "sims_session", "sims_signin"
HEADERS = {
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; "
                               "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'; "
                               "object-src 'none'",
    "X-Frame-Options": "DENY", "X-Content-Type-Options": "nosniff", "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}
_URL = re.compile(r"https?://[^\s<>\"']+")


class Refused(Exception):
    """A console request that may not go ahead: not signed in (401), not allowed or no CSRF token (403)."""

    def __init__(self, status: int, title: str, message: str) -> None:
        self.status, self.title, self.message = status, title, message
        super().__init__(message)


def linkify(text: str) -> Markup:
    """Escaped text with every http(s) address made a link (for the outbox viewer)."""
    out, last = [], 0
    for match in _URL.finditer(text):
        url = match.group(0).rstrip(".,;)")
        out += [escape(text[last:match.start()]), Markup('<a href="{0}">{0}</a>').format(url)]
        last = match.start() + len(url)
    out.append(escape(text[last:]))
    return Markup("").join(out)


class Console:
    """Shared plumbing of the console routes: pages, sessions, roles, CSRF, audit and commands."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self.env = Environment(loader=FileSystemLoader(str(PAGES)), autoescape=select_autoescape(("html",)))
        self.env.filters.update(local_time=self._local_time, linkify=linkify,
                                label=lambda v: str(v).replace("_", " "),
                                local_time_iso=lambda v: self._local_time(datetime.fromisoformat(v)))
        self.limiter = auth.SignInLimiter()
        self.feed = BoardFeed(self.live_html)
        self._keys: list[bytes] | None = None
        self._users: auth.UserStore | None = None

    def _local_time(self, value: Any, year: bool = False) -> str:
        return str(self.rt.notifications.renderer.env.filters["local_time"](value, year=year))

    @property
    def users(self) -> auth.UserStore:
        if self._users is None:
            from sims.adapters.jetstream import replicas_for

            self._users = auth.UserStore(self.rt.js, replicas_for(self.rt.nc, self.rt.settings.replicas))
        return self._users

    @property
    def keys(self) -> list[bytes]:
        if self._keys is None:
            self._keys = [auth.session_key(secret) for secret in keyring(self.rt.settings).values()]
        return self._keys

    @property
    def secure(self) -> bool:
        return self.rt.settings.base_url.startswith("https://")

    def page(self, name: str, session: Session | None, status: int = 200, **context: Any) -> HTMLResponse:
        html = self.env.get_template(f"console/{name}").render(
            session=session, can_act=bool(session and auth.may(session.role, Need.ACT)),
            is_admin=bool(session and auth.may(session.role, Need.ADMIN)), **context)
        return HTMLResponse(html, status_code=status, headers=HEADERS)

    def set_cookie(self, response: Response, name: str, value: str, max_age: int) -> None:
        response.set_cookie(name, value, max_age=max_age, path="/console", httponly=True, samesite="strict",
                            secure=self.secure)

    async def session(self, request: Request) -> Session | None:
        """The signed, unexpired session of a user who still exists, with their current role."""
        found = auth.read_session(self.keys, request.cookies.get(COOKIE, ""))
        user = await self.users.get(found.username) if found else None
        if found is None or user is None or found.issued_at < user.valid_after:
            return None
        return replace(found, role=user.role)

    async def require(self, request: Request, need: Need) -> Session:
        session = await self.session(request)
        if session is None:
            raise Refused(401, "Sign in", "Sign in to use the console.")
        if not auth.may(session.role, need):
            await self.audit(session.username, "console.refused", "forbidden",
                             {"path": request.url.path, "method": request.method, "role": session.role})
            raise Refused(403, "You cannot do that",
                          f"Your role ({session.role.replace('_', ' ')}) can view incidents but not do this. "
                          "Ask the duty officer or an administrator.")
        return session

    async def posted(self, request: Request, need: Need = Need.ACT) -> tuple[Session, dict[str, str]]:
        """The session (with the role `need`s) and the form, after checking the form's CSRF token."""
        session = await self.require(request, need)
        form = {k: str(v) for k, v in (await request.form()).items()}
        if not auth.csrf_ok(session, form.get("csrf_token")):
            await self.audit(session.username, "console.refused", "csrf", {"path": request.url.path})
            raise Refused(403, "The form has expired", "The form was missing its security token. Go back, "
                          "reload the page and try again.")
        return session, form

    async def audit(self, actor: str, action: str, outcome: str, detail: dict[str, Any],
                    incident_id: str | None = None) -> None:
        await self.rt.audit.append(chain="system", actor=actor, incident_id=incident_id, action=action,
                                   outcome=outcome, detail=detail)

    async def run(self, command: Any) -> dict[str, Any]:
        return await submit(self.rt.nc, self.rt.js, self.rt.kv, command, self.rt.settings.command_timeout)

    async def board_html(self) -> str:
        rows = await board_rows(self.rt)
        return self.env.get_template("console/_board_rows.html").render(rows=rows)

    async def suppliers_html(self) -> str:
        return self.env.get_template("console/_suppliers.html").render(suppliers=await supplier_rows(self.rt))

    async def live_html(self) -> str:
        """What the live board pushes: the incident rows, then the suppliers panel (split on LIVE_SPLIT)."""
        return await self.board_html() + LIVE_SPLIT + await self.suppliers_html()


def _safe_next(target: str) -> str:
    safe = target.startswith("/console") and "//" not in target and "\\" not in target
    return target if safe else "/console"


def build_router(con: Console) -> APIRouter:
    router = APIRouter(include_in_schema=False)

    @router.get("/console/sign-in", response_class=HTMLResponse)
    async def sign_in_form(request: Request, next: str = "/console", signed_out: str = "") -> Response:
        if await con.session(request):
            return RedirectResponse(_safe_next(next), status_code=303)
        return _sign_in_page(con, next, notice="You have signed out." if signed_out else "")

    @router.post("/console/sign-in")
    async def sign_in(request: Request) -> Response:
        form = {k: str(v) for k, v in (await request.form()).items()}
        username, password = form.get("username", "").strip().lower(), form.get("password", "")
        address = request.client.host if request.client else "-"
        target = _safe_next(form.get("next", "/console"))
        if not auth.same_token(request.cookies.get(SIGNIN_COOKIE), form.get("csrf_token")):
            await con.audit(username or "-", "signin.refused", "csrf", {"address": address})
            raise Refused(403, "The form has expired", "Reload the sign-in page and try again.")
        errors = [(f, m) for f, m in (("username", "Enter your username"),
                                      ("password", "Enter your password")) if not form.get(f, "").strip()]
        if errors:
            return _sign_in_page(con, target, 400, errors=errors, username=username)
        if con.limiter.blocked(username, address):
            await con.audit(username, "signin.refused", "rate_limited", {"address": address})
            return _sign_in_page(con, target, 429, username=username, errors=[(
                "username", "Too many failed attempts to sign in. Wait 15 minutes and try again.")])
        user = await auth.check_credentials(con.users, username, password)
        if user is None:
            con.limiter.failed(username, address)
            await con.audit(username, "signin.failed", "bad_credentials", {"address": address})
            return _sign_in_page(con, target, 401, username=username, errors=[(
                "username", "Enter a correct username and password")])
        con.limiter.succeeded(username, address)
        session = Session.start(user.username, user.role)
        await con.audit(user.username, "signin.succeeded", user.role, {"address": address})
        response = RedirectResponse(target, status_code=303, headers=HEADERS)
        con.set_cookie(response, COOKIE, auth.sign_session(con.keys[0], session), int(auth.SESSION_TTL))
        response.delete_cookie(SIGNIN_COOKIE, path="/console")
        return response

    @router.post("/console/sign-out")
    async def sign_out(request: Request) -> Response:
        session, _ = await con.posted(request, Need.VIEW)
        await con.users.sign_out_everywhere(session.username)
        await con.audit(session.username, "signout", "ok", {})
        response = RedirectResponse("/console/sign-in?signed_out=1", status_code=303, headers=HEADERS)
        response.delete_cookie(COOKIE, path="/console")
        return response

    @router.get("/console", response_class=HTMLResponse)
    async def board(request: Request, queued: str = "") -> HTMLResponse:
        session = await con.require(request, Need.VIEW)
        return con.page("board.html", session, rows_html=Markup(await con.board_html()),
                        suppliers_html=Markup(await con.suppliers_html()),
                        notice="The incident was accepted and queued; it will appear here shortly." if queued else "")

    @router.get("/console/events")
    async def events(request: Request) -> Response:
        """Server-sent events: the board's table body each time it changes (and a comment to keep alive)."""
        session = await con.require(request, Need.VIEW)

        async def stream() -> Any:
            yield "retry: 2000\n\n"
            until = min(time.time() + 300, session.expires_at)  # then the browser reconnects: session checked again
            async with contextlib.aclosing(con.feed.listen()) as updates:
                async for html in updates:
                    if time.time() > until:  # a closed connection cancels this stream (Starlette)
                        return
                    if html is None:
                        yield ": keep-alive\n\n"
                    else:
                        rows, _, suppliers = html.partition(LIVE_SPLIT)
                        for name, part in (("board", rows), ("suppliers", suppliers)):
                            data = "".join(f"data: {line}\n" for line in part.splitlines()) or "data: \n"
                            yield f"event: {name}\n{data}\n"

        return StreamingResponse(stream(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})

    @router.get("/console/outbox", response_class=HTMLResponse)
    async def outbox(request: Request) -> HTMLResponse:
        from sims.adapters.outbox import read_outbox

        session = await con.require(request, Need.VIEW)
        entries = list(reversed(read_outbox(con.rt.settings.data_dir, 200)))
        senders = con.rt.notifications.senders.values()
        in_use = any(getattr(s, "name", "").startswith("outbox") for s in senders)
        return con.page("outbox.html", session, entries=entries, in_use=in_use)

    @router.get("/console/users", response_class=HTMLResponse)
    async def users(request: Request, added: str = "") -> HTMLResponse:
        session = await con.require(request, Need.ADMIN)
        return con.page("users.html", session, users=await con.users.all(), roles=list(auth.Role),
                        notice=f"User {added} added." if added else "")

    @router.post("/console/users")
    async def add_user(request: Request) -> Response:
        session, form = await con.posted(request, Need.ADMIN)
        username, role = form.get("username", "").strip().lower(), form.get("role", "")
        try:
            await con.users.add(username, role, form.get("password", ""), by=session.username)
        except (ValueError, auth.UserExists) as exc:
            return con.page("users.html", session, 400, users=await con.users.all(), roles=list(auth.Role),
                            errors=[("username", p) for p in str(exc).split("; ")], username=username,
                            role=role)
        await con.audit(session.username, "user.added", role, {"username": username})
        return RedirectResponse(f"/console/users?added={quote(username)}", status_code=303)

    return router


def _sign_in_page(con: Console, target: str, status: int = 200, **context: Any) -> HTMLResponse:
    token = secrets.token_urlsafe(32)
    response = con.page("sign_in.html", None, status, next=target, csrf_token=token, **context)
    con.set_cookie(response, SIGNIN_COOKIE, token, 3600)
    return response


def install(app: FastAPI, rt: Runtime) -> None:
    """Add the console's routes and its refusal pages to the app (builds nothing that connects)."""
    from handlers.console_drills import build_router as drills_router
    from handlers.console_incident import build_router as incident_router

    con = Console(rt)
    if rt is not None:  # None when only the OpenAPI document is built
        rt.extras["console"] = con
    app.include_router(build_router(con))
    app.include_router(incident_router(con))
    app.include_router(drills_router(con))

    @app.exception_handler(Refused)
    async def refused(request: Request, exc: Refused) -> Response:
        if exc.status == 401:
            if request.url.path == "/console/events":
                return PlainTextResponse(exc.message, status_code=401, headers=HEADERS)
            back = request.url.path if request.method == "GET" else "/console"  # a form posted after expiry
            return RedirectResponse(f"/console/sign-in?next={quote(back)}", status_code=303)
        session = await con.session(request)
        return con.page("refused.html", session, exc.status, title=exc.title, message=exc.message)
