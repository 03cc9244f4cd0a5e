"""Remote catalogs through the fake archive: the WD catalog from VizieR, Gaia TAP jobs, the CLI."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa

from aretriever.catalogs.cache import CATALOGS_ENV, RemoteOptions
from aretriever.catalogs.core import FileCatalog, open_catalog
from aretriever.catalogs.remote import WD_CACHE_FILE, open_catalog_async
from aretriever.catalogs.tap import fetch_gaia
from aretriever.cli.fetch import main as fetch_main
from aretriever.errors import CatalogError
from aretriever.settings import CatalogConfig
from aretriever.store import db
from aretriever.testing import tap_replay, vizier_replay
from aretriever.testing.fake_archive import DATA_DIR, FakeArchive, Faults

VIZIER = "/viz-bin/votable"
TAP = "/tap-server/tap/async"
WD_NAMES = ["WDJ112612.21-512138.31", "WDJ164550.61-504617.31", "WDJ175216.24+263027.39"]
QUERY = "SELECT TOP 20 * FROM gaiadr3.gaia_source WHERE source_id = 4583627001381815936"


class Clock:
    """A fake ``sleep``: records the waits, waits for nothing."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


@pytest.fixture()
async def fake() -> AsyncIterator[FakeArchive]:
    async with FakeArchive() as archive:
        yield archive


@pytest.fixture()
def clock() -> Clock:
    return Clock()


@pytest.fixture()
def own_event_loop() -> Iterator[None]:
    """A loop set for a sync test that calls ``asyncio.run`` (which unsets the current loop).

    Without it, looptime creates a loop around the sync test, ``asyncio.run`` unsets it, and
    nothing closes it: its sockets surface later as an unraisable ResourceWarning.
    """
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        yield
    finally:
        asyncio.set_event_loop(None)
        loop.close()


def options(archive_url: str, cache: Path, **kwargs: object) -> RemoteOptions:
    values: dict[str, object] = {
        "cache_dir": cache,
        "vizier_url": archive_url,
        "gaia_tap_url": f"{archive_url}/tap-server/tap",
        "max_attempts": 3,
        "download_timeout_s": 10.0,
        "rate_per_s": 1000.0,
    }
    return RemoteOptions(**{**values, **kwargs})  # type: ignore[arg-type]


def leftovers(cache: Path) -> list[str]:
    return sorted(p.name for p in cache.iterdir()) if cache.exists() else []


# -------------------------------------------------------------------------- the WD catalog


async def test_wd_is_downloaded_verified_cached_and_never_downloaded_again(
    fake: FakeArchive, clock: Clock, tmp_path: Path
) -> None:
    opts = options(fake.url, tmp_path / "catalogs")
    catalog = await open_catalog_async("wd", CatalogConfig(chunk_rows=2), options=opts, sleep=clock)
    assert fake.requests == [
        (
            VIZIER,
            {
                "-source": "J/MNRAS/508/3877/maincat",
                "-out": "WDJname,GaiaEDR3,RA_ICRS,DE_ICRS,Gmag,Plx,pmRA,pmDE,Pwd",
                "-out.max": "unlimited",
            },
            200,
        )
    ]
    assert leftovers(tmp_path / "catalogs") == ["gaiaedr3_wd_main.json", WD_CACHE_FILE]
    assert catalog.name == "wd" and len(catalog) == 3
    frames = list(catalog.iter_chunks(0, 1000))
    assert [len(f) for f in frames] == [2, 1]
    rows = pd.concat(frames)
    assert list(rows["name"]) == WD_NAMES
    assert list(rows["source_id"]) == [5348723816842275584, 5937144193345094528, 4583627001381815936]
    assert rows["ra"].iloc[2] == 268.0676646661466 and rows["dec"].iloc[2] == 26.50748605871529
    assert rows["mag"].iloc[0] == pytest.approx(7.0179033, abs=1e-6)
    assert rows["parallax"].iloc[1] == 0.029992199777711163 and rows["Pwd"].isna().all()

    fake.reset_counts()
    again = await open_catalog_async("WD", CatalogConfig(), options=opts, sleep=clock)
    assert open_catalog("white_dwarfs", CatalogConfig(), options=opts).name == "wd"
    assert fake.count() == 0
    assert list(next(again.iter_chunks())["name"]) == WD_NAMES
    assert isinstance(again, FileCatalog) and again.get_row("WDJ164550.61-504617.31")["source_id"] == (
        5937144193345094528
    )
    nearest = again.get_nearest_row(171.5508, -51.3606, 5.0)
    assert nearest is not None and nearest["name"] == WD_NAMES[0]


async def test_a_download_cut_short_every_time_is_refused_and_not_cached(
    fake: FakeArchive, clock: Clock, tmp_path: Path
) -> None:
    fake.faults = Faults(truncate_rate=1.0)
    opts = options(fake.url, tmp_path / "catalogs")
    with pytest.raises(CatalogError) as caught:
        await open_catalog_async("wd", CatalogConfig(), options=opts, sleep=clock)
    assert str(caught.value).startswith("catalog: wd: VizieR ")
    assert "gave up after at most 3 attempts" in str(caught.value)
    assert fake.count(VIZIER) == 3 and len(clock.waits) == 2  # retried, through the fake clock
    assert leftovers(tmp_path / "catalogs") == []

    fake.faults = Faults()
    catalog = await open_catalog_async("wd", CatalogConfig(), options=opts, sleep=clock)
    assert len(catalog) == 3 and leftovers(tmp_path / "catalogs")[-1] == WD_CACHE_FILE


async def test_a_complete_looking_but_cut_votable_is_refused(
    fake: FakeArchive, clock: Clock, tmp_path: Path
) -> None:
    body = (DATA_DIR / vizier_replay.WD_FIXTURE).read_bytes()
    fake.script(VIZIER, [(200, body[: len(body) * 2 // 3], {"Content-Type": "text/xml"})])
    opts = options(fake.url, tmp_path / "catalogs")
    with pytest.raises(
        CatalogError, match=r"catalog: wd: the download is not a complete VOTable \(\d+ bytes\)"
    ):
        await open_catalog_async("wd", CatalogConfig(), options=opts, sleep=clock)
    assert leftovers(tmp_path / "catalogs") == []


async def test_vizier_errors_read_like_the_house_style(
    fake: FakeArchive, clock: Clock, tmp_path: Path
) -> None:
    fake.script(VIZIER, [(503, "busy", {})] * 3)
    with pytest.raises(CatalogError) as caught:
        await open_catalog_async("wd", CatalogConfig(), options=options(fake.url, tmp_path), sleep=clock)
    message = str(caught.value)
    assert re.match(
        r"catalog: wd: VizieR answered 503 \(http://127\.0\.0\.1:\d+/viz-bin/votable\?-source=", message
    )
    assert message.endswith("[gave up after at most 3 attempts]")


async def test_a_vizier_row_limit_is_never_silent(
    fake: FakeArchive, clock: Clock, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    vizier_replay.replay_for(fake).server_max_rows = 2
    opts = options(fake.url, tmp_path / "catalogs")
    with pytest.raises(
        CatalogError, match=re.escape("VizieR stopped at its row limit: -out.max=2 and 2 rows")
    ):
        await open_catalog_async("wd", CatalogConfig(), options=opts, sleep=clock)
    assert leftovers(tmp_path / "catalogs") == []

    kept = options(fake.url, tmp_path / "catalogs", allow_truncated=True)
    with caplog.at_level(logging.WARNING, logger="aretriever.catalogs.core"):
        catalog = await open_catalog_async("wd", CatalogConfig(), options=kept, sleep=clock)
    assert len(catalog) == 2
    assert "-out.max=2" in caplog.text and "keeping the truncated catalog" in caplog.text


@pytest.mark.usefixtures("own_event_loop")
def test_sync_open_inside_a_running_loop_uses_a_helper_thread(archive, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    async def inside_a_loop() -> int:
        return len(open_catalog("wd", CatalogConfig(), options=options(archive.url, tmp_path)))

    assert asyncio.run(inside_a_loop()) == 3
    assert archive.archive.count(VIZIER) == 1


# -------------------------------------------------------------------------- Gaia TAP


async def test_gaia_tap_job_is_submitted_polled_and_fetched_then_cached(
    fake: FakeArchive, clock: Clock, tmp_path: Path
) -> None:
    opts = options(fake.url, tmp_path / "catalogs", poll_interval_s=0.5)
    catalog = await open_catalog_async(f"gaia:{QUERY}", CatalogConfig(), options=opts, sleep=clock)
    job = f"{TAP}/1710099405832VAL"
    assert [(path, status) for path, _, status in fake.requests] == [
        (TAP, 303),
        (job, 200),  # the redirect, followed: the job document (EXECUTING)
        (f"{job}/phase", 200),  # EXECUTING
        (f"{job}/phase", 200),  # COMPLETED
        (f"{job}/results/result", 200),
    ]
    assert clock.waits == [0.5, 0.75]
    state = tap_replay.replay_for(fake).jobs["1710099405832VAL"]
    assert state.phase == "COMPLETED" and state.parameters["query"] == QUERY
    assert state.parameters["format"] == "votable" and "maxrec" not in state.parameters

    rows = pd.concat(list(catalog.iter_chunks()))
    assert list(rows["name"]) == ["Gaia DR3 4583627001381815936", "Gaia DR3 5348723816842275584"]
    assert list(rows["source_id"]) == [4583627001381815936, 5348723816842275584]
    assert rows["mag"].iloc[0] == pytest.approx(7.0120187, abs=1e-6)
    assert catalog.name.startswith("gaia-")

    fake.reset_counts()
    await open_catalog_async(f"gaia:{QUERY}", CatalogConfig(), options=opts, sleep=clock)
    assert fake.count() == 0


async def test_a_longer_job_is_polled_with_growing_waits(
    fake: FakeArchive, clock: Clock, tmp_path: Path
) -> None:
    tap_replay.replay_for(fake).executing_polls = 5
    opts = options(fake.url, tmp_path, poll_interval_s=1.0, poll_max_interval_s=2.0)
    await fetch_gaia(QUERY, opts, sleep=clock)
    assert clock.waits == [1.0, 1.5, 2.0, 2.0, 2.0, 2.0]
    assert fake.count(f"{TAP}/1710099405832VAL/phase") == 6


async def test_a_job_left_pending_is_started(fake: FakeArchive, clock: Clock, tmp_path: Path) -> None:
    tap_replay.replay_for(fake).start_pending = True
    path = await fetch_gaia(QUERY, options(fake.url, tmp_path), sleep=clock)
    job = f"{TAP}/1710099405832VAL"
    assert [(p, status) for p, _, status in fake.requests][:4] == [
        (TAP, 303), (job, 200), (f"{job}/phase", 303), (job, 200)  # POST PHASE=RUN, then its job
    ]  # fmt: skip
    assert len(pd.read_parquet(path)) == 2


async def test_a_job_that_never_ends_hits_the_deadline(
    fake: FakeArchive, clock: Clock, tmp_path: Path
) -> None:
    tap_replay.replay_for(fake).executing_polls = 1000
    opts = options(fake.url, tmp_path, poll_interval_s=1.0, poll_max_interval_s=1.0, poll_deadline_s=5.0)
    with pytest.raises(
        CatalogError, match=r"Gaia TAP job http://\S+/1710099405832VAL still EXECUTING after 5 s"
    ):
        await fetch_gaia(QUERY, opts, sleep=clock)
    assert sum(clock.waits) == 5.0 and leftovers(tmp_path) == []
    assert tap_replay.replay_for(fake).jobs["1710099405832VAL"].phase == "ABORTED"  # not left running


async def test_maxrec_reached_is_an_error_naming_it(fake: FakeArchive, clock: Clock, tmp_path: Path) -> None:
    opts = options(fake.url, tmp_path, tap_max_rows=1)
    with pytest.raises(CatalogError) as caught:
        await fetch_gaia(QUERY, opts, sleep=clock)
    assert "QUERY_STATUS=OVERFLOW: the result was cut at 1 rows (MAXREC=1)" in str(caught.value)
    assert tap_replay.replay_for(fake).jobs["1710099405832VAL"].parameters["maxrec"] == "1"
    assert leftovers(tmp_path) == []

    path = await fetch_gaia(
        QUERY, options(fake.url, tmp_path, tap_max_rows=1, allow_truncated=True), sleep=clock
    )
    assert len(pd.read_parquet(path)) == 1


async def test_the_archives_own_limit_is_named_too(fake: FakeArchive, clock: Clock, tmp_path: Path) -> None:
    tap_replay.replay_for(fake).server_max_rows = 1  # no MAXREC sent: the job document reports it
    with pytest.raises(CatalogError, match=re.escape("OVERFLOW: the result was cut at 1 rows (MAXREC=1)")):
        await fetch_gaia(QUERY, options(fake.url, tmp_path), sleep=clock)
    # a JSON result has no OVERFLOW marker: the row count reaching the job's limit gives it away
    json_query = "SELECT source_id, ra, dec FROM gaiadr3.gaia_source"
    with pytest.raises(
        CatalogError, match=re.escape("1 rows came back, as many as the row limit (MAXREC=1)")
    ):
        await fetch_gaia(json_query, options(fake.url, tmp_path), fmt="json", sleep=clock)
    assert leftovers(tmp_path) == []


async def test_a_failed_job_reports_the_archives_message(
    fake: FakeArchive, clock: Clock, tmp_path: Path
) -> None:
    with pytest.raises(CatalogError) as caught:
        await fetch_gaia("SELECT ra, dec FROM gaiadr3.nope", options(fake.url, tmp_path), sleep=clock)
    assert str(caught.value) == (
        "catalog: gaia (SELECT ra, dec FROM gaiadr3.nope): Gaia TAP job 1710099405832VAL ended ERROR: "
        "Cannot execute query: table(s) ['gaiadr3.nope'] not recorded here"
    )


async def test_a_json_result_becomes_a_catalog(fake: FakeArchive, clock: Clock, tmp_path: Path) -> None:
    query = (
        "SELECT source_id, ra, dec, parallax FROM gaiadr3.gaia_source WHERE source_id = 5937144193345094528"
    )
    frame = pd.read_parquet(await fetch_gaia(query, options(fake.url, tmp_path), fmt="json", sleep=clock))
    assert list(frame["name"]) == ["Gaia DR3 5937144193345094528"]
    assert frame["source_id"].iloc[0] == 5937144193345094528


async def test_a_refused_submit_reads_like_the_house_style(
    fake: FakeArchive, clock: Clock, tmp_path: Path
) -> None:
    fake.script(TAP, [(500, "down", {})] * 3)
    with pytest.raises(CatalogError, match=r"^catalog: gaia \(SELECT .*\): the Gaia archive answered 500 \("):
        await fetch_gaia(QUERY, options(fake.url, tmp_path), sleep=clock)


# -------------------------------------------------------------------------- the CLI


@pytest.mark.usefixtures("own_event_loop")
def test_cli_dry_run_with_the_wd_catalog(archive, tmp_path: Path, monkeypatch, capsys) -> None:  # type: ignore[no-untyped-def]
    cache = tmp_path / "catalogs"
    open_catalog("wd", CatalogConfig(), options=options(archive.url, cache))  # fills the cache
    archive.archive.reset_counts()
    monkeypatch.setenv(CATALOGS_ENV, str(cache))
    argv = ["--quiet", "--catalog", "wd", "--observatory", "ztf", "--start", "0", "--stop", "1000"]
    argv += [
        "--dry-run",
        "--data-root",
        str(tmp_path / "data"),
        "--db-url",
        f"sqlite+aiosqlite:///{tmp_path}/t.db",
    ]
    assert fetch_main(argv) == 0
    out = capsys.readouterr().out.strip()
    assert out.startswith("ztf: ") and sum(int(n) for n in re.findall(r" (\d+)", out)) == 3
    assert archive.archive.count() == 0


def test_cli_backfills_the_wd_catalog_from_ztf(run_cli, archive, db_url, tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    cache = tmp_path / "catalogs"
    open_catalog("wd", CatalogConfig(), options=options(archive.url, cache))
    archive.archive.reset_counts()
    monkeypatch.setenv(CATALOGS_ENV, str(cache))
    assert run_cli("--catalog", "wd", "--start", "0", "--stop", "1000") == 0
    assert archive.archive.count(VIZIER) == 0
    # one source is north of ZTF's -30 deg limit; the other two are stored as "no data" unasked
    assert archive.archive.count("/cgi-bin/ZTF/nph_light_curves") == 1

    async def sources() -> list[tuple[str, str]]:
        engine = db.create_engine(db_url)
        try:
            async with engine.begin() as conn:
                result = await conn.execute(sa.text("select name, catalog from sources order by name"))
                return [(r[0], r[1]) for r in result]
        finally:
            await engine.dispose()

    assert asyncio.run(sources()) == [(name, "wd") for name in WD_NAMES]


@pytest.mark.usefixtures("own_event_loop")
def test_cli_downloads_the_wd_catalog_from_a_configured_vizier(archive, tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    argv = [
        "--quiet",
        "--catalog",
        "wd",
        "--observatory",
        "ztf",
        "--start",
        "0",
        "--stop",
        "1000",
        "--dry-run",
    ]
    argv += ["--set", f"catalog.vizier_url={archive.url}", "--set", f"catalog.cache_dir={tmp_path / 'cat'}"]
    argv += ["--data-root", str(tmp_path / "data"), "--db-url", f"sqlite+aiosqlite:///{tmp_path}/t.db"]
    assert fetch_main(argv) == 0
    assert archive.archive.count(VIZIER) == 1 and (tmp_path / "cat" / WD_CACHE_FILE).is_file()
    assert sum(int(n) for n in re.findall(r" (\d+)", capsys.readouterr().out)) == 3
