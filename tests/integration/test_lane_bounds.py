"""The lane's bounds: Retry-After is capped, answers have a size limit (in memory and streamed)."""

from __future__ import annotations

import email.utils
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import web

from aretriever.adapters.base import Request
from aretriever.errors import BodyTooLarge, RetryAfterTooLong
from aretriever.http import Lane
from aretriever.retry import is_transient
from aretriever.settings import LaneConfig
from aretriever.testing.fake_archive import Faults

from .test_backfill import ZTF, query

LIMIT = 100_000
CHUNK = 1 << 16  # the lane reads at most one chunk past what it has kept


class Server:
    """A tiny archive: 429s with a chosen Retry-After, and large bodies with or without a length."""

    def __init__(self) -> None:
        self.retry_after = "0"
        self.hits = 0
        self.sent = 0  # bytes of the large answers actually written to the socket
        self.size = 10 * LIMIT
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/busy", self._busy)
        app.router.add_get("/sized", self._sized)
        app.router.add_get("/chunked", self._chunked)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _busy(self, _: web.Request) -> web.Response:
        self.hits += 1
        if self.hits > 1:
            return web.Response(body=b"oid\n")
        return web.Response(status=429, headers={"Retry-After": self.retry_after})

    async def _sized(self, _: web.Request) -> web.Response:
        self.hits += 1
        return web.Response(body=b"x" * self.size)

    async def _chunked(self, request: web.Request) -> web.StreamResponse:
        # no Content-Length: only counting what arrives can stop the reader
        self.hits += 1
        response = web.StreamResponse()
        response.enable_chunked_encoding()
        await response.prepare(request)
        try:
            while self.sent < self.size:
                await response.write(b"y" * 8192)
                self.sent += 8192
            await response.write_eof()
        except (ConnectionError, RuntimeError):  # the client hung up, as it should
            pass
        return response


class Sleeps:
    def __init__(self) -> None:
        self.calls: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)


@pytest_asyncio.fixture
async def server() -> AsyncIterator[Server]:
    s = Server()
    await s.start()
    try:
        yield s
    finally:
        await s.close()


@pytest_asyncio.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


def _lane(session: aiohttp.ClientSession, sleeps: Sleeps, **cfg: float) -> Lane:
    config = LaneConfig(rate_per_s=1000.0, max_attempts=3, timeout_s=30.0, **cfg)  # type: ignore[arg-type]
    return Lane("ztf", config, session, sleep=sleeps)


def _http_date(seconds_from_now: float) -> str:
    when = datetime.now(UTC) + timedelta(seconds=seconds_from_now)
    return email.utils.format_datetime(when, usegmt=True)


@pytest.mark.parametrize("header", ["3600", "days"])
async def test_retry_after_over_the_cap_is_a_transient_failure_not_a_sleep(
    server: Server, session: aiohttp.ClientSession, header: str
) -> None:
    server.retry_after = _http_date(86_400) if header == "days" else header
    sleeps = Sleeps()
    lane = _lane(session, sleeps, max_retry_after_s=300.0)
    with pytest.raises(RetryAfterTooLong) as caught:
        await lane.send(Request("GET", f"{server.url}/busy"))
    assert sleeps.calls == [] and server.hits == 1  # not slept, not asked again
    exc = caught.value
    assert is_transient(exc) and exc.status == 429
    assert exc.reason is not None and "over the 300 s cap" in exc.reason
    asked = 3600 if header == "3600" else 86_400
    assert exc.retry_after_s == pytest.approx(asked, abs=5)
    assert "max_retry_after_s" in str(exc) and f"{server.url}/busy" in str(exc)


async def test_retry_after_under_the_cap_is_waited_for(server: Server, session: aiohttp.ClientSession) -> None:
    server.retry_after = "120"
    sleeps = Sleeps()
    lane = _lane(session, sleeps, max_retry_after_s=300.0)
    response = await lane.send(Request("GET", f"{server.url}/busy"))
    assert response.body == b"oid\n" and server.hits == 2
    assert len(sleeps.calls) == 1 and 120 <= sleeps.calls[0] <= 132  # the server's wait, some jitter


async def test_body_over_the_limit_by_content_length_is_refused_unread(
    server: Server, session: aiohttp.ClientSession
) -> None:
    lane = _lane(session, Sleeps(), max_body_bytes=LIMIT)
    with pytest.raises(BodyTooLarge) as caught:
        await lane.send(Request("GET", f"{server.url}/sized"))
    assert server.hits == 1  # a permanent failure: not retried
    assert not is_transient(caught.value)
    assert "observatories.ztf.max_body_bytes" in str(caught.value) and str(LIMIT) in str(caught.value)
    assert caught.value.reason == f"body over the ztf limit of {LIMIT} bytes"
    assert lane.stats.bytes_in == 0


async def test_body_at_the_limit_is_read(server: Server, session: aiohttp.ClientSession) -> None:
    server.size = LIMIT
    lane = _lane(session, Sleeps(), max_body_bytes=LIMIT)
    assert len((await lane.send(Request("GET", f"{server.url}/sized"))).body) == LIMIT


async def test_chunked_body_stops_being_read_at_the_limit(
    server: Server, session: aiohttp.ClientSession
) -> None:
    server.size = 10_000 * LIMIT  # ~1 GB offered: read to the end, this test would not finish
    lane = _lane(session, Sleeps(), max_body_bytes=LIMIT)
    with pytest.raises(BodyTooLarge) as caught:
        await lane.send(Request("GET", f"{server.url}/chunked"))
    assert server.hits == 1
    assert "more than 100000 bytes" in str(caught.value)
    assert LIMIT < lane.stats.bytes_in <= LIMIT + CHUNK


async def test_streamed_download_stops_at_the_limit_and_leaves_no_file(
    server: Server, session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    server.size = 10_000 * LIMIT
    lane = _lane(session, Sleeps(), max_body_bytes=LIMIT)
    target = tmp_path / "big.fits"
    with pytest.raises(BodyTooLarge):
        await lane.send(Request("GET", f"{server.url}/chunked", stream_to=str(target)))
    assert LIMIT < lane.stats.bytes_in <= LIMIT + CHUNK
    assert not target.exists()
    # and with a Content-Length over the limit, nothing is written at all
    server.size = 2 * LIMIT
    with pytest.raises(BodyTooLarge):
        await lane.send(Request("GET", f"{server.url}/sized", stream_to=str(target)))
    assert not target.exists()


async def test_streamed_download_within_the_limit_is_kept(
    server: Server, session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    server.size = LIMIT
    lane = _lane(session, Sleeps(), max_body_bytes=LIMIT)
    target = tmp_path / "ok.fits"
    await lane.send(Request("GET", f"{server.url}/sized", stream_to=str(target)))
    assert target.stat().st_size == LIMIT


# -- through the pipeline: the failures table says why -----------------------------------------


def test_archive_asking_to_wait_too_long_fails_the_sources_with_the_reason(run_cli, archive, db_url) -> None:
    archive.archive.faults = Faults(rate_429=1.0, retry_after_s=3600)
    assert run_cli("--set", "observatories.ztf.max_retry_after_s=60", size=3) == 1
    assert archive.archive.count(ZTF) == 3  # one request each: the hour is not waited for
    rows = query(db_url, "select stage, reason, attempts, last_error from failures order by source_name")
    assert len(rows) == 3
    for stage, reason, attempts, last_error in rows:
        assert (stage, reason) == ("fetch", "retry_after 3600 s over the 60 s cap")
        assert attempts == 5  # counted as transient (LaneConfig.max_attempts): retried on a later run
        assert "3600 s" in last_error and "max_retry_after_s" in last_error
    archive.archive.faults = Faults()
    assert run_cli(size=3) == 0  # the archive is back: a later run fetches them
    assert query(db_url, "select count(*) from failures where resolved = false") == [(0,)]


def test_answer_over_the_size_limit_is_a_recorded_failure(run_cli, archive, db_url) -> None:
    assert run_cli("--set", "observatories.ztf.max_body_bytes=1000", size=3) == 1
    assert archive.archive.count(ZTF) == 3  # not retried: the answer will not shrink
    rows = query(db_url, "select stage, reason, last_error from failures")
    assert len(rows) == 3
    for stage, reason, last_error in rows:
        assert (stage, reason) == ("fetch", "body over the ztf limit of 1000 bytes")
        assert "observatories.ztf.max_body_bytes" in last_error
    assert query(db_url, "select count(*) from raw_photometry") == [(0,)]
