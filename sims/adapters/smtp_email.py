"""EmailSender over aiosmtplib: a few reused connections, multipart text+HTML, errors become DeliveryFailed."""

from __future__ import annotations

import asyncio
import binascii
import functools
import re
import secrets
import time
from datetime import UTC, datetime
from email.header import Header
from email.message import EmailMessage
from email.parser import BytesParser
from email.policy import default as default_policy
from email.utils import format_datetime, formataddr, parseaddr
from typing import Literal

import aiosmtplib
from aiosmtplib.email import quote_address

from sims.ports import Accepted, DeliveryFailed, OutgoingEmail, Recorder

PROVIDER = "smtp"
Tls = Literal["none", "starttls", "tls"]
_END_OF_LINE = re.compile(rb"\r\n|\r|\n")


class _NotRecorded(Exception):
    """`recorded` failed after the server took the mail (its cause is the caller's own exception)."""


class _Connection:
    """One SMTP client; `last_used` tells when an idle check is worth its round trip."""

    def __init__(self, client: aiosmtplib.SMTP) -> None:
        self.client = client
        self.last_used = 0.0


class SmtpEmailSender:
    """Sends each email over one of `connections` reused SMTP connections (default one).

    A connection is opened on first use, checked with NOOP after `idle_check` seconds idle, and
    dropped after any connection-level error so the next send reconnects. A send is never retried
    here: the caller owns backoff, and a blind resend after a drop mid-DATA could duplicate a mail.

    With `recorded`, a send commits like this: the envelope and the message go over each connection
    at once, but the end of the data (the moment the server takes the mail) and `recorded(accepted)`
    happen under one semaphore of `in_doubt` places for the whole sender (default one: a lock). So at
    any moment at most `in_doubt` emails are taken by the server and not yet recorded: a process killed
    mid-send can cause that many emails to be sent twice on redelivery, however many connections it
    had (an SMTP server cannot be asked what it took). With one, the sender takes at most one email
    per end-of-data answer; a relay that answers slowly (it queues each mail to disk first) is worth
    more places, or more workers.
    """

    records_on_commit = True

    def __init__(self, host: str, port: int, tls: Tls = "starttls", username: str | None = None,
                 password: str | None = None, *, from_addr: str, name: str = "smtp", timeout: float = 10,
                 connections: int = 1, idle_check: float = 5.0, validate_certs: bool = True,
                 in_doubt: int = 1) -> None:
        if tls not in ("none", "starttls", "tls"):
            raise ValueError(f"tls must be none, starttls or tls, not {tls!r}")
        if connections < 1 or in_doubt < 1:
            raise ValueError("connections and in_doubt must be at least 1")
        self.name = name
        self._host = host
        self._port = port
        self._tls = tls
        self._username = username
        self._password = password
        self._from = from_addr
        self._envelope_from = parseaddr(from_addr)[1] or from_addr
        self._from_header: str | None = None
        self._timeout = timeout
        self._size = connections
        self._idle_check = idle_check
        self._validate_certs = validate_certs
        self._idle: asyncio.Queue[_Connection] | None = None
        self._all: list[_Connection] = []
        self._commit = asyncio.Semaphore(in_doubt)  # end of data + record: `in_doubt` at a time (class doc)

    def _new_client(self) -> aiosmtplib.SMTP:
        return aiosmtplib.SMTP(
            hostname=self._host, port=self._port, username=self._username, password=self._password,
            timeout=self._timeout, use_tls=self._tls == "tls",
            start_tls=self._tls == "starttls",
            validate_certs=self._validate_certs)

    def _pool(self) -> asyncio.Queue[_Connection]:
        if self._idle is None:
            self._idle = asyncio.Queue()
            for _ in range(self._size):
                connection = _Connection(self._new_client())
                self._all.append(connection)
                self._idle.put_nowait(connection)
        return self._idle

    def build(self, email: OutgoingEmail) -> EmailMessage:
        """The MIME message (parsed back from `mime`): multipart/alternative, plain text, then HTML."""
        _envelope, raw, _message_id = self.mime(email)
        return BytesParser(_class=EmailMessage, policy=default_policy).parsebytes(raw)

    def mime(self, email: OutgoingEmail) -> tuple[str, bytes, str]:
        """The recipient's address, the message's bytes and its Message-ID, assembled directly.

        Python's `email` package costs about 3-5 ms of CPU a message here (header parsing, folding,
        flattening); this writes the same multipart/alternative structure (UTF-8, quoted-printable
        bodies, RFC 2047 headers when not ASCII) in a fraction of that.
        """
        message_id = email.message_id.strip()
        message_id = message_id if message_id.startswith("<") else f"<{message_id}>"
        if self._from_header is None:
            self._from_header = _address(self._from)[0]
        to_header, to = _address(email.to)
        headers = {"From": self._from_header, "To": to_header, "Subject": _text_header(email.subject),
                   "Date": format_datetime(datetime.now(UTC)), "Message-ID": _text_header(message_id)}
        for name, value in email.headers.items():
            headers = {k: v for k, v in headers.items() if k.lower() != name.lower()}
            headers[_header_name(name)] = _text_header(value)
        boundary = "=_sims_" + secrets.token_hex(12)
        lines = [f"{name}: {value}" for name, value in headers.items()]
        lines += ["MIME-Version: 1.0", f'Content-Type: multipart/alternative; boundary="{boundary}"', ""]
        head = "\r\n".join(lines).encode("ascii")
        parts = b"".join(
            f"\r\n--{boundary}\r\nContent-Type: text/{kind}; charset=\"utf-8\"\r\n"
            "Content-Transfer-Encoding: quoted-printable\r\n\r\n".encode("ascii") + _quoted_printable(body)
            for kind, body in (("plain", email.text), ("html", email.html)))
        return to, head + parts + f"\r\n--{boundary}--\r\n".encode("ascii"), message_id

    async def send(self, email: OutgoingEmail, recorded: Recorder | None = None) -> Accepted:
        """Send one email; with `recorded`, it is called (and awaited) once the server took the mail,
        before any other email of this sender can be taken (see the class doc)."""
        try:
            to, raw, message_id = self.mime(email)
        except ValueError as exc:  # a line break in a header, an address with none in it
            raise DeliveryFailed(provider=PROVIDER, transient=False, code="address", message=str(exc)) from exc
        accepted = Accepted(provider=PROVIDER, provider_id=message_id, status="accepted")
        pool = self._pool()
        connection = await pool.get()
        try:
            await self._ready(connection)
            if recorded is None:
                await connection.client.sendmail(self._envelope_from, [to], raw)
            else:
                await self._sendmail_committed(connection.client, to, raw, accepted, recorded)
            connection.last_used = time.monotonic()
        except _NotRecorded as exc:  # the server took it; our own record failed: the caller's problem
            raise exc.__cause__ from None  # type: ignore[misc]
        except aiosmtplib.SMTPRecipientsRefused as exc:
            raise _refused(exc) from exc
        except (aiosmtplib.SMTPAuthenticationError, aiosmtplib.SMTPHeloError) as exc:
            # The server refuses us, not this message: fixable by an operator, so worth retrying.
            _drop(connection)
            raise DeliveryFailed(provider=PROVIDER, transient=True, code=str(exc.code),
                                 message=f"{type(exc).__name__}: {exc.message}") from exc
        except aiosmtplib.SMTPResponseException as exc:
            if exc.code == 421 or isinstance(exc, aiosmtplib.SMTPConnectError):
                _drop(connection)
            raise DeliveryFailed(provider=PROVIDER, transient=exc.code < 500, code=str(exc.code),
                                 message=exc.message) from exc
        except aiosmtplib.SMTPNotSupported as exc:
            raise DeliveryFailed(provider=PROVIDER, transient=False, code="not-supported",
                                 message=str(exc)) from exc
        except (TimeoutError, aiosmtplib.SMTPTimeoutError) as exc:
            _drop(connection)
            raise DeliveryFailed(provider=PROVIDER, transient=True, code="timeout",
                                 message=f"{type(exc).__name__}: {exc}") from exc
        except (aiosmtplib.SMTPException, OSError) as exc:  # disconnects, refused connections
            _drop(connection)
            raise DeliveryFailed(provider=PROVIDER, transient=True, code="connection",
                                 message=f"{type(exc).__name__}: {exc}") from exc
        except ValueError as exc:  # an address aiosmtplib cannot put in an envelope
            raise DeliveryFailed(provider=PROVIDER, transient=False, code="address", message=str(exc)) from exc
        finally:
            pool.put_nowait(connection)
        return accepted

    async def _sendmail_committed(self, client: aiosmtplib.SMTP, to: str, raw: bytes, accepted: Accepted,
                                  recorded: Recorder) -> None:
        """aiosmtplib's sendmail for one recipient, with the end of data and the record under `_commit`."""
        if client.is_ehlo_or_helo_needed:
            try:
                await client.ehlo()
            except aiosmtplib.SMTPHeloError:
                if not client.is_connected:
                    raise
                await client.helo()
        data = _smtp_data(raw)
        options = [f"size={len(data)}".encode("ascii")] if client.supports_extension("size") else []
        try:
            # aiosmtplib's mail() and rcpt(), with each address parsed and quoted once (`_quoted`), not
            # on every message: the same answers checked, the same exceptions raised.
            mail = await client.execute_command(b"MAIL", b"FROM:" + _quoted(self._envelope_from), *options)
            if mail.code != 250:
                raise aiosmtplib.SMTPSenderRefused(mail.code, mail.message, self._envelope_from)
            rcpt = await client.execute_command(b"RCPT", b"TO:" + _quoted(to))
            if rcpt.code not in (250, 251):
                refused = aiosmtplib.SMTPRecipientRefused(rcpt.code, rcpt.message, to)
                raise aiosmtplib.SMTPRecipientsRefused([refused]) from refused
            start = await client.execute_command(b"DATA")
            if start.code != 354:
                raise aiosmtplib.SMTPDataError(start.code, start.message)
            assert client.protocol is not None  # connected: execute_command would have raised
            client.protocol.write(data)  # the whole message; the server takes it only at the end of data
            async with self._commit:
                end = await client.execute_command(b".")  # the end-of-data line, ".\r\n"
                if end.code != 250:
                    raise aiosmtplib.SMTPDataError(end.code, end.message)
                try:
                    await recorded(accepted)
                except Exception as exc:
                    raise _NotRecorded() from exc
        except (aiosmtplib.SMTPResponseException, aiosmtplib.SMTPRecipientsRefused):
            try:  # as sendmail does: reset the envelope for the next message on this connection
                await client.rset()
            except (ConnectionError, aiosmtplib.SMTPResponseException, aiosmtplib.SMTPServerDisconnected):
                pass
            raise

    async def _ready(self, connection: _Connection) -> None:
        """Connect if needed; after a long idle, check the connection with NOOP and reopen it if dead."""
        client = connection.client
        if client.is_connected and time.monotonic() - connection.last_used > self._idle_check:
            try:
                await client.noop()
            except (aiosmtplib.SMTPException, OSError):
                _drop(connection)
        if not client.is_connected:
            await client.connect()
            connection.last_used = time.monotonic()

    async def close(self) -> None:
        for connection in self._all:
            if connection.client.is_connected:
                try:
                    await connection.client.quit(timeout=min(self._timeout, 2))
                except (TimeoutError, aiosmtplib.SMTPException, OSError):
                    connection.client.close()
        self._all.clear()
        self._idle = None


@functools.lru_cache(maxsize=4096)
def _quoted(address: str) -> bytes:
    """An envelope address as MAIL FROM / RCPT TO carry it (`<addr>`), checked by aiosmtplib's own
    `quote_address` (ValueError for what cannot go on a command line); kept for the next message."""
    return quote_address(address).encode("ascii")


def _smtp_data(raw: bytes) -> bytes:
    """A message as DATA sends it: CRLF line ends, ending in CRLF, and a line starting with "." given
    another (RFC 5321 4.5.2). `mime` already writes CRLF only, which three counts confirm without the
    regular expression (the slower path for anything else); the dots are doubled with `bytes.replace`."""
    crlf = raw.count(b"\r\n")
    if raw.count(b"\r") != crlf or raw.count(b"\n") != crlf:
        raw = _END_OF_LINE.sub(b"\r\n", raw)
    if not raw.endswith(b"\r\n"):
        raw += b"\r\n"
    data = raw.replace(b"\r\n.", b"\r\n..")
    return b"." + data if data.startswith(b".") else data


def _header_name(name: str) -> str:
    if not name or any(c in name for c in ": \r\n") or not name.isascii():
        raise ValueError(f"not a header name: {name!r}")
    return name


def _text_header(value: str) -> str:
    """A header value as-is when short plain ASCII, else RFC 2047 encoded and folded; never a line break."""
    if "\r" in value or "\n" in value:
        raise ValueError("a header value may not contain a line break")
    if value.isascii() and len(value) <= 76:
        return value
    return Header(value, "utf-8" if not value.isascii() else "us-ascii", maxlinelen=76).encode(linesep="\r\n")


@functools.lru_cache(maxsize=4096)  # the same people are written to again and again
def _address(value: str) -> tuple[str, str]:
    """The header (`Name <addr>`, a non-ASCII name encoded) and the bare address, which must be ASCII."""
    if "\r" in value or "\n" in value:
        raise ValueError("an address may not contain a line break")
    name, addr = parseaddr(value)
    if not addr or not addr.isascii():
        raise ValueError(f"not a usable address: {value!r}")
    return (formataddr((name, addr), charset="utf-8") if name else addr), addr


def _quoted_printable(text: str) -> bytes:
    """UTF-8 quoted-printable with CRLF line ends and soft breaks before 76 characters."""
    lines = text.replace("\r\n", "\n").replace("\r", "\n")
    body = (lines if lines.endswith("\n") else lines + "\n").encode("utf-8")  # as `email` ends a text part
    return binascii.b2a_qp(body, istext=True).replace(b"\n", b"\r\n")


def _drop(connection: _Connection) -> None:
    connection.client.close()


def _refused(exc: aiosmtplib.SMTPRecipientsRefused) -> DeliveryFailed:
    """Every recipient refused (we send to one): 5xx is final, 4xx (greylisting, full box) is not."""
    codes = [r.code for r in exc.recipients] or [450]
    code = max(codes)
    detail = "; ".join(f"{r.recipient}: {r.code} {r.message}" for r in exc.recipients)
    return DeliveryFailed(provider=PROVIDER, transient=code < 500, code=str(code), message=detail)
