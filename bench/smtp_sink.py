"""An SMTP sink for benchmarks: tests.support.smtp_server.SmtpServer with a handler that only counts.

    python -m bench.smtp_sink --port N [--delay S]  # prints {"port": N}; on SIGTERM prints {"accepted": count}

--delay: seconds the sink takes to answer each end of data (a relay queueing the mail to disk).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal

from aiosmtpd.smtp import SMTP, Envelope, Session

from tests.support.smtp_server import RecordingHandler, SmtpServer


class CountingHandler(RecordingHandler):
    """Accepts every mail like RecordingHandler but keeps only a count (no parsing, no memory growth)."""

    def __init__(self) -> None:
        super().__init__()
        self.accepted = 0
        self.recipients = 0

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        if self.delay:
            await asyncio.sleep(self.delay)
        self.accepted += 1
        self.recipients += len(envelope.rcpt_tos)
        return "250 2.0.0 Message accepted for delivery"


async def serve(port: int, delay: float = 0.0) -> None:
    handler = CountingHandler()
    handler.delay = delay
    server = await SmtpServer(handler, port=port).start()
    print(json.dumps({"port": server.port}), flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.stop()
    print(json.dumps({"accepted": handler.accepted, "recipients": handler.recipients,
                      "connections": server.connections_made}), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--delay", type=float, default=0.0, help="seconds before answering each end of data")
    args = parser.parse_args()
    asyncio.run(serve(args.port, args.delay))


if __name__ == "__main__":
    main()
