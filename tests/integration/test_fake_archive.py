"""The fake archive, seen by a real aiohttp client: recorded ZTF answers, faults, scripts, CLI."""

from __future__ import annotations

import asyncio
import base64
import email.utils
import os
import signal
import sys
import time
from collections.abc import AsyncIterator

import aiohttp
import astropy.units as u
import numpy as np
import pandas as pd
import pytest
from aiohttp import web
from astropy.coordinates import Angle, SkyCoord

from aretriever.adapters.base import Request, Response, Target
from aretriever.adapters.ztf import ZtfAdapter, parse_lightcurve_table
from aretriever.settings import Credentials, ZtfConfig
from aretriever.store.hdf5 import records_to_frame
from aretriever.testing.fake_archive import DATA_DIR, Answer, FakeArchive, Faults
from aretriever.testing.ztf_replay import RECORDED_FILE, ZTF_PATH

SHORT = aiohttp.ClientTimeout(total=5)


@pytest.fixture()
async def archive() -> AsyncIterator[FakeArchive]:
    async with FakeArchive() as fake:
        yield fake


@pytest.fixture()
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=SHORT) as client:
        yield client


def _query(ra: float, dec: float, mask: int = 32768) -> dict[str, str]:
    return {"POS": f"CIRCLE {ra} {dec} 0.0006", "BAD_CATFLAGS_MASK": str(mask), "FORMAT": "csv"}


async def _get(
    session: aiohttp.ClientSession, url: str, params: dict[str, str] | None = None
) -> tuple[int, bytes, dict[str, str]]:
    async with session.get(url, params=params) as response:
        return response.status, await response.read(), dict(response.headers)


def _median_position(frame: pd.DataFrame) -> SkyCoord:
    ra = Angle(frame["ra"].to_numpy(), u.deg)
    offsets = (ra - ra[0]).wrap_at(180 * u.deg)
    center = (ra[0] + np.median(offsets)).wrap_at(360 * u.deg)
    return SkyCoord(center, np.median(frame["dec"]) * u.deg)


# ------------------------------------------------------------------ the ZTF route


@pytest.mark.parametrize(
    ("ra", "dec"), [(180.0, 10.0), (359.9999, 51.39), (0.00005, -20.0), (123.4, 0.0), (10.0, 80.0)]
)
async def test_ztf_answer_moves_to_the_request(
    archive: FakeArchive, session: aiohttp.ClientSession, ra: float, dec: float
) -> None:
    url = archive.url + ZTF_PATH
    status, body, headers = await _get(session, url, _query(ra, dec))
    assert status == 200
    assert headers["Content-Type"].startswith("text/csv")
    table = records_to_frame(parse_lightcurve_table(body, source="t", url=url))
    assert len(table) == 1852 - 42  # catflags 32768 rows left out
    center = _median_position(table)
    assert center.separation(SkyCoord(ra * u.deg, dec * u.deg)).arcsec < 1.0
    assert ((table["ra"] >= 0) & (table["ra"] < 360)).all()


async def test_answer_keeps_the_recorded_oids_and_values(
    archive: FakeArchive, session: aiohttp.ClientSession
) -> None:
    recorded = pd.read_csv(DATA_DIR / RECORDED_FILE)
    status, body, _ = await _get(session, archive.url + ZTF_PATH, _query(180.0, 10.0, mask=0))
    table = records_to_frame(parse_lightcurve_table(body))
    assert status == 200 and len(table) == len(recorded) == 1852
    for name in ("oid", "expid", "mjd", "mag", "catflags", "filtercode", "qid"):
        assert table[name].tolist() == recorded[name].tolist(), name
    # the shape of the cloud is kept: the spread in Dec is the recorded one
    assert table["dec"].std() == pytest.approx(recorded["dec"].std(), rel=1e-3)


@pytest.mark.parametrize("mask", [0, 1, 16, 32768, 32768 | 1 | 16 | 516])
async def test_bad_catflags_mask(archive: FakeArchive, session: aiohttp.ClientSession, mask: int) -> None:
    recorded = pd.read_csv(DATA_DIR / RECORDED_FILE)
    expected = int(((recorded["catflags"] & mask) == 0).sum())
    _, body, _ = await _get(session, archive.url + ZTF_PATH, _query(10.0, 10.0, mask))
    table = parse_lightcurve_table(body)
    assert len(table) == expected
    assert ((table["catflags"] & mask) == 0).all()


async def test_reducer_keeps_the_same_oids_anywhere(
    archive: FakeArchive, session: aiohttp.ClientSession
) -> None:
    adapter = ZtfAdapter(ZtfConfig(base_url=archive.url))
    kept = []
    for ra, dec in [(0.0, 51.39), (200.0, -25.0), (359.99999, 0.0)]:
        _, body, _ = await _get(session, archive.url + ZTF_PATH, _query(ra, dec))
        target = Target("t", ra, dec, mag=20.28)
        curves = adapter.reduce(parse_lightcurve_table(body), target)
        kept.append({oid for lc in curves for oid in lc.meta["oids"]})
    assert kept[0] == kept[1] == kept[2]
    assert len(kept[0]) == 5


class _AiohttpPort:
    """The smallest HttpPort: one GET through aiohttp, no retries."""

    def __init__(self, session: aiohttp.ClientSession) -> None:
        self.scratch_dir: str | None = None
        self.session = session

    async def send(self, request: Request) -> Response:
        async with self.session.get(
            request.url, params=list(request.params), headers=dict(request.headers)
        ) as resp:
            body = await resp.read()
            assert resp.status == 200, body[:200]
            return Response(resp.status, body, str(resp.url), dict(resp.headers))

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


async def test_adapter_end_to_end(archive: FakeArchive, session: aiohttp.ClientSession) -> None:
    adapter = ZtfAdapter(ZtfConfig(base_url=archive.url, collection="ztf_dr23"))
    target = Target("WD", 45.0, 30.0, mag=20.3, pmra_mas_yr=100.0)
    fetched = await adapter.fetch(target, _AiohttpPort(session))
    assert fetched.url.startswith(archive.url + ZTF_PATH)
    path, query, status = archive.requests[-1]
    assert (path, status) == (ZTF_PATH, 200)
    assert query["COLLECTION"] == "ztf_dr23" and query["FORMAT"] == "csv"
    assert query["POS"].startswith("CIRCLE 45.00000000 30.00000000 ")
    curves = adapter.reduce(adapter.parse(fetched), target)
    assert len(curves) == 10


async def test_credentials_reach_the_archive_as_basic_auth(
    archive: FakeArchive, session: aiohttp.ClientSession
) -> None:
    seen: list[str | None] = []

    async def echo(request: web.Request) -> Answer:
        seen.append(request.headers.get("Authorization"))
        return Answer(200, b"oid\n")

    archive.add_route("/private" + ZTF_PATH, echo)
    creds = Credentials(username="alice", password="pa55")
    cfg = ZtfConfig(base_url=archive.url + "/private", credentials=creds)
    fetched = await ZtfAdapter(cfg).fetch(Target("p", 1.0, 2.0), _AiohttpPort(session))
    assert seen == ["Basic " + base64.b64encode(b"alice:pa55").decode()]
    assert "pa55" not in fetched.url and "pa55" not in repr(archive.requests)


@pytest.mark.parametrize(
    ("params", "needle"),
    [
        ({"POS": "CIRCLE 10 20", "FORMAT": "csv"}, "POS must be"),
        ({"POS": "BOX 10 20 1", "FORMAT": "csv"}, "POS must be"),
        ({"FORMAT": "csv"}, "POS must be"),
        ({"POS": "CIRCLE 10 20 0.001"}, "FORMAT"),
        ({"POS": "CIRCLE 10 20 0.001", "FORMAT": "votable"}, "FORMAT"),
        ({"POS": "CIRCLE 10 20 0.001", "FORMAT": "csv", "BAD_CATFLAGS_MASK": "x"}, "MASK"),
    ],
)
async def test_bad_requests_get_an_html_error_page(
    archive: FakeArchive, session: aiohttp.ClientSession, params: dict[str, str], needle: str
) -> None:
    status, body, headers = await _get(session, archive.url + ZTF_PATH, params)
    assert status == 400
    assert headers["Content-Type"].startswith("text/html")
    assert body.lstrip().startswith(b"<") and needle.encode() in body


async def test_unknown_path_is_404(archive: FakeArchive, session: aiohttp.ClientSession) -> None:
    status, _, _ = await _get(session, archive.url + "/nothing/here")
    assert status == 404
    assert archive.requests[-1] == ("/nothing/here", {}, 404)


# ------------------------------------------------------------------ faults


async def test_503(archive: FakeArchive, session: aiohttp.ClientSession) -> None:
    archive.faults = Faults(error_rate=1.0)
    status, body, _ = await _get(session, archive.url + ZTF_PATH, _query(1, 2))
    assert status == 503 and b"Service Unavailable" in body
    archive.faults.error_rate = 0.0  # flipped while running
    status, _, _ = await _get(session, archive.url + ZTF_PATH, _query(1, 2))
    assert status == 200


async def test_429_with_retry_after(archive: FakeArchive, session: aiohttp.ClientSession) -> None:
    archive.faults = Faults(rate_429=1.0, retry_after_s=3)
    status, _, headers = await _get(session, archive.url + ZTF_PATH, _query(1, 2))
    assert status == 429 and headers["Retry-After"] == "3"
    archive.faults = Faults(rate_429=1.0, retry_after_s=0.2)
    _, _, headers = await _get(session, archive.url + ZTF_PATH, _query(1, 2))
    assert headers["Retry-After"] == "1"  # whole seconds, rounded up


async def test_429_with_http_date(archive: FakeArchive, session: aiohttp.ClientSession) -> None:
    archive.faults = Faults(rate_429=1.0, retry_after_s=30, retry_after_http_date=True)
    before = time.time()
    status, _, headers = await _get(session, archive.url + ZTF_PATH, _query(1, 2))
    when = email.utils.parsedate_to_datetime(headers["Retry-After"]).timestamp()
    assert status == 429
    assert before + 28 <= when <= time.time() + 31


async def test_truncated_body(archive: FakeArchive, session: aiohttp.ClientSession) -> None:
    archive.faults = Faults(truncate_rate=1.0)
    with pytest.raises(aiohttp.ClientPayloadError):
        await _get(session, archive.url + ZTF_PATH, _query(1, 2))
    assert archive.requests[-1][2] == 200


async def test_timeout(archive: FakeArchive, session: aiohttp.ClientSession) -> None:
    archive.faults = Faults(timeout_rate=1.0)
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        async with session.get(
            archive.url + ZTF_PATH, params=_query(1, 2), timeout=aiohttp.ClientTimeout(total=0.02)
        ):
            pass
    assert time.monotonic() - started < 1.0
    assert archive.requests[-1][2] == 0  # never answered


async def test_close_releases_held_requests(session: aiohttp.ClientSession) -> None:
    fake = FakeArchive(Faults(timeout_rate=1.0))
    await fake.start()
    pending = asyncio.create_task(_get(session, fake.url + ZTF_PATH, _query(1, 2)))
    while fake.count() == 0:  # noqa: ASYNC110 - the server's counter is what says it holds one
        await asyncio.sleep(0.001)
    started = time.monotonic()
    await fake.close()
    with pytest.raises(aiohttp.ClientError):
        await pending
    assert time.monotonic() - started < 2.0


async def test_latency_and_slow_tail(archive: FakeArchive, session: aiohttp.ClientSession) -> None:
    archive.faults = Faults(latency_ms=4.0)
    started = time.monotonic()
    await _get(session, archive.url + ZTF_PATH, _query(1, 2))
    assert time.monotonic() - started >= 0.004
    archive.faults = Faults(slow_fraction=1.0, slow_ms=8.0)
    started = time.monotonic()
    await _get(session, archive.url + ZTF_PATH, _query(1, 2))
    assert time.monotonic() - started >= 0.008


async def _statuses(faults: Faults, session: aiohttp.ClientSession, n: int = 30) -> list[int]:
    async with FakeArchive(faults) as fake:
        return [(await _get(session, fake.url + "/x"))[0] for _ in range(n)]


async def test_faults_are_seeded(session: aiohttp.ClientSession) -> None:
    first = await _statuses(Faults(error_rate=0.3, rate_429=0.3, seed=7), session)
    again = await _statuses(Faults(error_rate=0.3, rate_429=0.3, seed=7), session)
    other = await _statuses(Faults(error_rate=0.3, rate_429=0.3, seed=8), session)
    assert first == again
    assert first != other
    assert {503, 429, 404} == set(first)


# ------------------------------------------------------------------ scripts and counts


async def test_scripted_answers_come_first(archive: FakeArchive, session: aiohttp.ClientSession) -> None:
    archive.script(
        ZTF_PATH,
        [(503, "busy", {}), (429, b"", {"Retry-After": "0"}), (200, "oid\n", {"X-Script": "1"})],
    )
    archive.faults = Faults(error_rate=1.0)  # scripts are served as written, without faults
    answers = [await _get(session, archive.url + ZTF_PATH, _query(1, 2)) for _ in range(3)]
    assert [a[0] for a in answers] == [503, 429, 200]
    assert answers[0][1] == b"busy" and answers[1][2]["Retry-After"] == "0"
    assert answers[2][2]["X-Script"] == "1"
    archive.faults = Faults()
    status, body, _ = await _get(session, archive.url + ZTF_PATH, _query(1, 2))
    assert status == 200 and len(parse_lightcurve_table(body)) == 1810


async def test_counts_and_requests(archive: FakeArchive, session: aiohttp.ClientSession) -> None:
    for _ in range(3):
        await _get(session, archive.url + ZTF_PATH, _query(5, 6))
    await _get(session, archive.url + "/other", {"a": "1"})
    assert archive.count() == 4
    assert archive.count("/cgi-bin/ZTF") == 3
    assert archive.count("/other") == 1
    assert archive.count("/mast") == 0
    assert archive.requests[0] == (ZTF_PATH, _query(5, 6), 200)
    assert archive.requests[-1] == ("/other", {"a": "1"}, 404)
    archive.reset_counts()
    assert archive.count() == 0 and archive.requests == []


# ------------------------------------------------------------------ command line


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT])
async def test_cli_serves_until_signalled(stop: signal.Signals) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "aretriever.testing.fake_archive",
        "--port",
        "0",
        "--seed",
        "3",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONWARNINGS": "error"},
    )
    try:
        assert process.stdout is not None
        line = await asyncio.wait_for(process.stdout.readline(), timeout=30)
        url = line.decode().strip()
        assert url.startswith("http://127.0.0.1:")
        async with aiohttp.ClientSession(timeout=SHORT) as client:
            status, body, _ = await _get(client, url + ZTF_PATH, _query(100.0, 20.0))
        assert status == 200 and len(parse_lightcurve_table(body)) == 1810
        process.send_signal(stop)
        assert await asyncio.wait_for(process.wait(), timeout=10) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.stderr is not None
    assert (await process.stderr.read()) == b""
