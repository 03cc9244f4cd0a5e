"""The daemon at scale and under abuse: quiet skips, a bad catalog, half-open HTTP clients.

The daemon runs in the test's event loop on the demo observatory (no archive); passes follow
each other every ``daemon.interval_s``, and the tests wait on the daemon's own counters, with
generous deadlines, never on elapsed time.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pandas as pd
import pytest

from aretriever.config import load_config
from aretriever.service.daemon import Daemon
from aretriever.settings import Config

DEADLINE_S = 120.0  # generous: only a broken daemon gets near it


def _catalog(path: Path, first: int, n: int) -> list[str]:
    names = [f"STAR{i:04d}" for i in range(first, first + n)]
    rows = pd.DataFrame({"name": names, "ra": [10.0 + i for i in range(first, first + n)], "dec": 20.0})
    rows.to_csv(path, index=False)
    return names


def _config(tmp_path: Path, db_url: str, catalogs: list[str], **daemon: Any) -> Config:
    return load_config(
        False,
        overrides={
            "project": {"obs_names": ["demo"]},
            "store": {"data_root": str(tmp_path / "data"), "db_url": db_url},
            "engine": {"workers": 1},
            "daemon": {"catalogs": catalogs, "port": 0, "interval_s": 0.05, **daemon},
        },
    )


async def _until(condition: Callable[[], bool], what: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + DEADLINE_S
    while not condition():
        if loop.time() > deadline:
            raise AssertionError(f"never happened: {what}")
        await asyncio.sleep(0.05)


@asynccontextmanager
async def _running(cfg: Config) -> AsyncIterator[Daemon]:
    daemon = Daemon(lambda: cfg)
    task = asyncio.create_task(daemon.serve())
    try:
        await _until(lambda: daemon.retriever is not None or task.done(), "the daemon opened")
        if task.done():
            task.result()  # raise what stopped it
        yield daemon
    finally:
        daemon.stop()
        assert await asyncio.wait_for(task, DEADLINE_S) == 0


def _fetched(daemon: Daemon) -> int:
    return daemon.metrics.sources[("demo", "fetched")]


async def _health(port: int | None) -> int:
    async with aiohttp.ClientSession() as session, session.get(f"http://127.0.0.1:{port}/healthz") as r:
        return r.status


async def test_a_pass_over_skipped_sources_logs_one_line_with_the_count(
    tmp_path: Path, db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    catalog = tmp_path / "stars.csv"
    names = _catalog(catalog, 0, 40)
    cfg = _config(tmp_path, db_url, [str(catalog)])
    assert await Daemon(lambda: cfg).serve(once=True) == 0  # fetches them all
    caplog.clear()
    with caplog.at_level(logging.DEBUG, logger="aretriever"):
        daemon = Daemon(lambda: cfg)
        assert await daemon.serve(once=True) == 0  # finds them all stored
    assert daemon.metrics.sources[("demo", "skipped")] == 40  # counted...
    messages = [r.getMessage() for r in caplog.records]
    assert not [m for m in messages if any(name in m for name in names)]  # ...not logged one by one
    assert not [r for r in caplog.records if getattr(r, "outcome", None) == "skipped"]
    passes = [r for r in caplog.records if r.getMessage().startswith("pass over")]
    assert [r.getMessage() for r in passes] == [f"pass over {catalog} done: 40 skipped"]
    assert passes[0].summary["observatories"]["demo"]["skipped"] == 40  # type: ignore[attr-defined]


@pytest.mark.parametrize("fault", ["missing", "no_ra_column"])
async def test_a_catalog_that_fails_to_load_is_reported_and_retried_next_pass(
    tmp_path: Path, db_url: str, caplog: pytest.LogCaptureFixture, fault: str
) -> None:
    bad, good = tmp_path / "bad.csv", tmp_path / "good.csv"
    _catalog(good, 0, 3)
    if fault == "no_ra_column":  # read inside the engine's task group, not when opened
        pd.DataFrame({"name": ["X1"], "dec": [1.0]}).to_csv(bad, index=False)
    cfg = _config(tmp_path, db_url, [str(bad), str(good)])
    caplog.set_level(logging.INFO, logger="aretriever")
    async with _running(cfg) as daemon:
        await _until(lambda: _fetched(daemon) == 3, "the good catalog backfilled")
        await _until(lambda: daemon.metrics.catalog_failures >= 2, "the bad catalog tried on two passes")
        assert await _health(daemon.port) == 200
        failed = [r for r in caplog.records if getattr(r, "catalog", None) == str(bad) and r.levelname == "ERROR"]
        assert failed and str(bad) in failed[0].getMessage()
        reason = failed[0].reason  # type: ignore[attr-defined]
        assert ("neither a file" in reason) if fault == "missing" else ("column 'ra' not found" in reason)
        _catalog(bad, 100, 2)  # fixed: a later pass loads it
        await _until(lambda: _fetched(daemon) == 5, "the fixed catalog backfilled")
        assert await _health(daemon.port) == 200


async def test_half_sent_requests_are_cut_off_and_healthz_and_fetching_go_on(
    tmp_path: Path, db_url: str
) -> None:
    catalog = tmp_path / "stars.csv"
    _catalog(catalog, 0, 3)
    cfg = _config(tmp_path, db_url, [str(catalog)], http_timeout_s=1.0)
    async with _running(cfg) as daemon:
        await _until(lambda: _fetched(daemon) == 3, "the catalog backfilled")
        stalled = []
        for i in range(200):  # half a request each: a request line and part of the headers
            reader, writer = await asyncio.open_connection("127.0.0.1", daemon.port)
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow-" + str(i).encode())
            await writer.drain()
            stalled.append((reader, writer))
        assert await _health(daemon.port) == 200
        _catalog(catalog, 0, 6)  # new rows: the next pass fetches them
        await _until(lambda: _fetched(daemon) == 6, "fetching went on")
        for reader, writer in stalled:  # the server closed every one of them (EOF)
            try:
                rest = await asyncio.wait_for(reader.read(), DEADLINE_S)
            except ConnectionResetError:
                rest = b""
            assert rest == b""
            writer.close()
        assert await _health(daemon.port) == 200
