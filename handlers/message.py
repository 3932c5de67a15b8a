"""The NATS message as a handler parameter, resolved in the event loop.

FastStream's own `NatsMessage` annotation is a `Context("message")` field whose `use` is a plain
function, and fast_depends runs a plain function in a worker thread: one thread hop (and GIL
hand-over) for every message every subscriber handles. This field does the same lookup as a
coroutine, which fast_depends awaits directly.
"""

from __future__ import annotations

from typing import Annotated, Any

from faststream._internal.context.context_type import Context  # the field class; `faststream.Context` makes one
from faststream.nats.message import NatsMessage as _NatsMessage


class InLoopContext(Context):
    async def use(self, /, **kwargs: Any) -> dict[str, Any]:  # type: ignore[override]
        return Context.use(self, **kwargs)


NatsMessage = Annotated[_NatsMessage, InLoopContext("message")]
