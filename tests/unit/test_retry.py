"""The retry decision table: what is retried, after how long, and what is not."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import aiohttp
import pytest

from aretriever.errors import (
    ArchiveErrorPage,
    MalformedResponse,
    PermanentFetchError,
    TransientFetchError,
)
from aretriever.retry import backoff_s, decide, decide_for_exception, parse_retry_after

NOW = datetime(2026, 11, 28, 12, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("status", "exc", "attempt", "retry", "reason"),
    [
        (503, None, 1, True, "http_503"),
        (500, None, 1, True, "http_500"),
        (502, None, 4, True, "http_502"),
        (504, None, 5, False, "http_504"),  # attempts used up
        (429, None, 1, True, "http_429"),
        (404, None, 1, False, "http_404"),
        (400, None, 1, False, "http_400"),
        (403, None, 1, False, "http_403"),
        (None, TimeoutError(), 1, True, "timeout"),
        (None, TimeoutError(), 2, True, "timeout"),
        (None, aiohttp.ClientConnectionError(), 1, True, "ClientConnectionError"),
        (None, aiohttp.ServerDisconnectedError(), 1, True, "ServerDisconnectedError"),
        (None, aiohttp.ClientPayloadError(), 1, True, "ClientPayloadError"),
        (None, MalformedResponse("cut"), 1, True, "MalformedResponse"),
        (None, TransientFetchError("x"), 1, True, "TransientFetchError"),
        (None, PermanentFetchError("x"), 1, False, "PermanentFetchError"),
        (None, ArchiveErrorPage("html"), 1, False, "ArchiveErrorPage"),
        (None, ValueError("a bug"), 1, False, "ValueError"),
    ],
)
def test_decision_table(
    status: int | None, exc: BaseException | None, attempt: int, retry: bool, reason: str
) -> None:
    d = decide(attempt=attempt, max_attempts=5, status=status, exc=exc, base_s=1.0, max_s=60.0)
    assert (d.retry, d.reason) == (retry, reason)
    assert d.delay_s >= 0 if retry else d.delay_s == 0


@pytest.mark.parametrize(
    ("attempt", "jitter", "expected"),
    [(1, 0.0, 0.5), (1, 0.999, 0.9995), (2, 0.0, 1.0), (3, 0.5, 3.0), (10, 0.0, 30.0), (10, 1.0, 60.0)],
)
def test_backoff_grows_exponentially_with_jitter_and_cap(
    attempt: int, jitter: float, expected: float
) -> None:
    assert backoff_s(attempt, 1.0, 60.0, jitter) == pytest.approx(expected)


def test_retry_after_wins_over_backoff() -> None:
    d = decide(attempt=1, max_attempts=5, status=429, retry_after_s=7.0, jitter=0.0)
    assert d.retry and d.delay_s == pytest.approx(7.0)
    d = decide(attempt=1, max_attempts=5, status=503, retry_after_s=2.0, jitter=1.0)
    assert d.delay_s == pytest.approx(2.2)


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("3", 3.0),
        (" 120 ", 120.0),
        ((NOW + timedelta(seconds=30)).strftime("%a, %d %b %Y %H:%M:%S GMT"), 30.0),
        ((NOW - timedelta(seconds=30)).strftime("%a, %d %b %Y %H:%M:%S GMT"), 0.0),
        ("soon", None),
        ("", None),
        (None, None),
    ],
)
def test_parse_retry_after(header: str | None, expected: float | None) -> None:
    assert parse_retry_after(header, NOW) == expected


def test_decision_reads_status_and_retry_after_off_the_error() -> None:
    exc = TransientFetchError("429", status=429, retry_after_s=4.0)
    d = decide_for_exception(exc, 1, 3, base_s=1.0, max_s=60.0, jitter=0.0)
    assert d.retry and d.delay_s == pytest.approx(4.0) and d.reason == "http_429"
    exc = PermanentFetchError("404", status=404)
    assert not decide_for_exception(exc, 1, 3, base_s=1.0, max_s=60.0, jitter=0.0).retry


@pytest.mark.parametrize(("retry_after", "retry"), [(299.0, True), (300.0, True), (301.0, False), (None, True)])
def test_retry_after_over_the_cap_is_not_waited_for(retry_after: float | None, retry: bool) -> None:
    d = decide(attempt=1, max_attempts=5, status=429, retry_after_s=retry_after, max_retry_after_s=300.0)
    assert d.retry is retry
    if not retry:
        assert (d.delay_s, d.reason) == (0.0, "retry_after_over_cap")
    exc = TransientFetchError("429", status=429, retry_after_s=retry_after)
    d = decide_for_exception(exc, 1, 5, base_s=1.0, max_s=60.0, jitter=0.0, max_retry_after_s=300.0)
    assert d.retry is retry


# -- one rule for every domain: the caller's classification, an attempt or a time budget --------


@pytest.mark.parametrize(
    ("transient", "attempt", "max_attempts", "remaining_s", "retry", "delay_s"),
    [
        (True, 1, None, 100.0, True, 0.05),  # the database's schedule: doubling, no jitter
        (True, 4, None, 100.0, True, 0.4),
        (True, 9, None, 100.0, True, 5.0),  # capped
        (True, 3, None, 0.07, True, 0.07),  # never waits past the time left
        (True, 1, None, 0.0, False, 0.0),  # time spent
        (False, 1, None, 100.0, False, 0.0),  # the data failed, not the connection
        (True, 3, 3, None, False, 0.0),  # attempts spent
        (True, 2, 3, None, True, 0.1),
    ],
)
def test_one_rule_for_any_classification(
    transient: bool, attempt: int, max_attempts: int | None, remaining_s: float | None, retry: bool, delay_s: float
) -> None:
    d = decide(
        attempt=attempt,
        max_attempts=max_attempts,
        transient=transient,
        remaining_s=remaining_s,
        base_s=0.05,
        max_s=5.0,
        jitter=1.0,
    )
    assert (d.retry, d.delay_s) == (retry, pytest.approx(delay_s))


def test_store_and_http_share_the_schedule() -> None:
    """store.transient.retry_delay is decide() with the database's classification."""
    import sqlalchemy as sa

    from aretriever.store import transient

    lost = sa.exc.OperationalError("SELECT 1", {}, ConnectionRefusedError("refused"))
    for attempt in range(1, 8):
        shared = decide(attempt=attempt, transient=True, remaining_s=100.0, base_s=0.05, max_s=5.0, jitter=1.0)
        assert transient.retry_delay(lost, attempt, 100.0) == shared.delay_s


async def test_call_retrying_uses_the_callers_classification() -> None:
    import logging

    from aretriever.retry import call_retrying

    calls: list[int] = []

    async def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise KeyError("busy")
        return "ok"

    got = await call_retrying(
        flaky,
        transient=lambda exc: isinstance(exc, KeyError),
        what="test",
        for_s=10.0,
        base_s=0.001,
        max_s=0.001,
        log=logging.getLogger("test"),
    )
    assert (got, len(calls)) == ("ok", 3)
