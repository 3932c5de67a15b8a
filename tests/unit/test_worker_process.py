"""FastStream's restart of a pull task after a fetch timeout is one debug line, not an error with a traceback."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from handlers.worker import FetchTimeoutRestart, build_broker

SUPERVISOR = ("Task-40 raised an exception, retrying...\nIf this behavior causes issues, you can disable it via "
              "setting the FASTSTREAM_SUPERVISOR_DISABLED env to 1.")


class _Kept(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def faststream_log() -> Iterator[tuple[logging.Logger, _Kept]]:
    build_broker(None, "nats://127.0.0.1:4222")  # type: ignore[arg-type]  # sets up the logger; connects nothing
    logger, kept = logging.getLogger("sims.faststream"), _Kept()
    logger.addHandler(kept)
    try:
        yield logger, kept
    finally:
        logger.removeHandler(kept)
        logger.setLevel(logging.WARNING)


def test_a_fetch_timeout_restart_is_not_logged_as_an_error(faststream_log: tuple[logging.Logger, _Kept]) -> None:
    logger, kept = faststream_log
    assert sum(isinstance(f, FetchTimeoutRestart) for f in logger.filters) == 1
    build_broker(None, "nats://127.0.0.1:4222")  # type: ignore[arg-type]  # a second broker adds no second filter
    assert sum(isinstance(f, FetchTimeoutRestart) for f in logger.filters) == 1
    logger.log(logging.ERROR, SUPERVISOR, exc_info=TimeoutError())
    assert kept.records == []  # at the worker's WARNING level: dropped

    logger.setLevel(logging.DEBUG)
    logger.log(logging.ERROR, SUPERVISOR, exc_info=TimeoutError())
    [record] = kept.records
    assert record.levelno == logging.DEBUG and record.exc_info is None
    assert record.getMessage() == "pull fetch timed out (asyncio.TimeoutError from nats-py); task restarted"


def test_any_other_failure_of_a_task_keeps_its_error_and_traceback(faststream_log: tuple[logging.Logger, _Kept]) -> None:
    logger, kept = faststream_log
    logger.log(logging.ERROR, SUPERVISOR, exc_info=ValueError("a real bug"))
    logger.log(logging.ERROR, "something else timed out", exc_info=TimeoutError())
    assert [(r.levelno, type(r.exc_info[1]) if r.exc_info else None) for r in kept.records] == [
        (logging.ERROR, ValueError), (logging.ERROR, TimeoutError)]
    assert kept.records[0].getMessage() == SUPERVISOR

