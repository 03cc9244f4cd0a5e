"""A Gaia archive TAP query as a catalog: an asynchronous UWS job, polled with backoff.

The job's life, as the IVOA TAP/UWS standards and the Gaia archive define it::

    POST {tap}/async  REQUEST=doQuery LANG=ADQL FORMAT=votable PHASE=RUN QUERY=... [MAXREC=n]
        -> 303 See Other, Location: {tap}/async/<jobid>   (the lane follows it to the job document)
    GET  {tap}/async/<jobid>/phase          -> QUEUED | EXECUTING | COMPLETED | ERROR | ABORTED
    GET  {tap}/async/<jobid>/results/result -> the table (VOTable, JSON or CSV)
    GET  {tap}/async/<jobid>                -> the job document; on ERROR its errorSummary

Polling waits through the lane's ``sleep`` (tests move no real clock), starting at
``poll_interval_s`` and growing 1.5x up to ``poll_max_interval_s``, until ``poll_deadline_s``.
A result cut at a row limit (``QUERY_STATUS=OVERFLOW``, or as many rows as ``MAXREC``) fails the
catalog with a message naming the limit, unless ``allow_truncated`` is set (then it is logged).
Results are cached by query, so a later ``--start/--stop`` slice asks the archive nothing.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Final

import aiohttp
import anyio
import pandas as pd

from aretriever.adapters.base import Request
from aretriever.catalogs.cache import (
    RemoteOptions,
    Sleep,
    cache_is_valid,
    check_rows,
    checked_votable,
    download,
    open_lane,
    send,
    temp_path,
    write_cache,
)
from aretriever.catalogs.formats import (
    FINAL_PHASES,
    ParsedTable,
    UwsJob,
    parse_phase,
    parse_uws_job,
    read_csv_table,
    read_tap_json,
)
from aretriever.catalogs.names import names_text
from aretriever.errors import CatalogError
from aretriever.http import Lane

ARCHIVE: Final = "the Gaia archive"
FORMATS: Final = ("votable", "json", "csv")
log = logging.getLogger("aretriever.catalogs.core")
_RELEASE = re.compile(r"\bgaia(e?dr\d)\b", re.IGNORECASE)


# -------------------------------------------------------------------------- requests (pure)


def submit_request(tap_url: str, query: str, fmt: str = "votable", max_rows: int | None = None) -> Request:
    """The POST that creates and starts an asynchronous job."""
    if fmt not in FORMATS:
        raise CatalogError(f"catalog: gaia: result format {fmt!r} is not one of {FORMATS}")
    data = {"REQUEST": "doQuery", "LANG": "ADQL", "FORMAT": fmt, "PHASE": "RUN", "QUERY": query}
    if max_rows is not None:
        data["MAXREC"] = str(max_rows)
    # identity: the lane compares streamed bytes with Content-Length (see vizier_request).
    return Request("POST", f"{tap_url.rstrip('/')}/async", data=data, headers={"Accept-Encoding": "identity"})


def phase_request(job_url: str) -> Request:
    return Request("GET", f"{job_url}/phase")


def job_request(job_url: str) -> Request:
    return Request("GET", job_url)


def run_request(job_url: str) -> Request:
    """Start a job the archive left PENDING."""
    return Request("POST", f"{job_url}/phase", data={"PHASE": "RUN"})


def abort_request(job_url: str) -> Request:
    """Ask the archive to stop a job we no longer wait for."""
    return Request("POST", f"{job_url}/phase", data={"PHASE": "ABORT"})


def result_request(job_url: str) -> Request:
    return Request("GET", f"{job_url}/results/result", headers={"Accept-Encoding": "identity"})


def job_url_of(final_url: str, tap_url: str, job: UwsJob) -> str:
    """The job's URL: where the submit's redirect landed, else ``{tap}/async/<jobid>``."""
    # The redirect's Location is the job's canonical URL; rebuilding it is the fallback for archives
    # that answer the POST with the job document directly, with no redirect to follow.
    base = final_url.split("?", 1)[0].rstrip("/")
    if base.endswith(f"/{job.job_id}"):
        return base
    return f"{tap_url.rstrip('/')}/async/{job.job_id}"


def poll_delays(first_s: float, max_s: float, deadline_s: float, factor: float = 1.5) -> Iterator[float]:
    """The waits between polls: growing by ``factor`` up to ``max_s``, summing to <= ``deadline_s``."""
    waited, delay = 0.0, first_s
    # The sum of waits stays within the deadline, so a job is given up on time, not one long wait late.
    while waited + delay <= deadline_s:
        yield delay
        waited += delay
        delay = min(max_s, delay * factor)


# -------------------------------------------------------------------------- results (pure)


def release_of(query: str) -> str:
    """The Gaia release a query reads from ("DR3" for gaiadr3.*), or "" when it does not say."""
    found = _RELEASE.search(query)
    return found.group(1).upper() if found else ""


def reference_epoch_yr(query: str, parsed_epoch: str | None = None) -> float:
    """The epoch of Gaia positions: the answer's COOSYS if given, else the release's."""
    if parsed_epoch:
        # COOSYS epochs read like "J2016.0"; Gaia only uses Julian epochs, so the letter is dropped.
        return float(parsed_epoch.lstrip("JjBb"))
    # DR2 is at J2015.5; EDR3 and DR3 at J2016.0, also assumed when the query names no release.
    return 2015.5 if release_of(query) == "DR2" else 2016.0


def with_names(frame: pd.DataFrame, query: str) -> pd.DataFrame:
    """The result with a ``name`` column: Gaia's ``designation``, else ``Gaia <release> <source_id>``."""
    for column in ("ra", "dec"):
        if column not in frame.columns:
            raise CatalogError(
                f"catalog: gaia: column {column!r} not found; the query returned {list(frame.columns)}"
            )
    if "name" in frame.columns:
        return frame
    out = frame.copy()
    if "designation" in frame.columns:
        out["name"] = names_text(frame["designation"])  # a missing one stays "" (a bad row later)
    elif "source_id" in frame.columns:
        prefix = f"Gaia {release_of(query)} ".replace("  ", " ")
        ids = names_text(frame["source_id"])  # exact digits, never through a float
        out["name"] = [f"{prefix}{i}" if i else "" for i in ids]
    else:
        raise CatalogError(
            f"catalog: gaia: the query returned no 'designation' or 'source_id' to name sources by; "
            f"it has {list(frame.columns)}"
        )
    return out


def job_row_limit(job: UwsJob, asked: int | None) -> int | None:
    """The row limit the job ran under: ours, else the ``maxrec`` its document reports."""
    if asked is not None:
        return asked
    # Without our MAXREC the archive applies its own default; a result of exactly that size is cut too.
    reported = job.parameters.get("maxrec", "")
    return int(reported) if reported.isdigit() else None


def read_result(path: Path, fmt: str, what: str, limit: int | None, allow_truncated: bool) -> ParsedTable:
    """The downloaded result, checked for emptiness and for reaching the row limit ``limit``."""
    if fmt == "votable":
        return checked_votable(path, what, limit, allow_truncated)
    body = path.read_bytes()
    frame = read_tap_json(body, what) if fmt == "json" else read_csv_table(body, what)
    parsed = ParsedTable(frame)
    check_rows(parsed, what, limit, allow_truncated)
    return parsed


def cache_path(options: RemoteOptions, query: str, fmt: str) -> Path:
    """One cache file per (query, format, MAXREC)."""
    # MAXREC is part of the key: a result cut at 1000 rows must never answer the unlimited query.
    key = f"{query.strip()}\n{fmt}\n{options.tap_max_rows}"
    return options.cache_dir / f"gaia_{hashlib.sha256(key.encode()).hexdigest()[:16]}.parquet"


# -------------------------------------------------------------------------- the job (IO)


async def wait_for_job(lane: Lane, job_url: str, phase: str, options: RemoteOptions, what: str) -> str:
    """Poll the job's phase with growing waits until it ends or the deadline passes."""
    for delay in poll_delays(options.poll_interval_s, options.poll_max_interval_s, options.poll_deadline_s):
        # Checked before sleeping: a small query is often COMPLETED by the time the submit returns.
        if phase in FINAL_PHASES:
            return phase
        await lane.sleep(delay)
        phase = parse_phase((await send(lane, phase_request(job_url), what, ARCHIVE)).body)
    if phase in FINAL_PHASES:
        return phase
    with contextlib.suppress(CatalogError):  # be polite: stop the archive working for nobody
        await send(lane, abort_request(job_url), what, ARCHIVE)
    raise CatalogError(
        f"catalog: {what}: Gaia TAP job {job_url} still {phase} after {options.poll_deadline_s:g} s "
        "(raise catalog.poll_deadline_s, or try again later)"
    )


async def run_job(lane: Lane, query: str, fmt: str, dest: Path, options: RemoteOptions, what: str) -> UwsJob:
    """Submit, wait for and download one job's result into ``dest``."""
    submit = submit_request(options.gaia_tap_url, query, fmt, options.tap_max_rows)
    submitted = await send(lane, submit, what, ARCHIVE)
    job = parse_uws_job(submitted.body, what)
    job_url = job_url_of(submitted.url, options.gaia_tap_url, job)
    log.info("catalog: %s: Gaia TAP job %s is %s", what, job_url, job.phase)
    phase = job.phase
    # UWS lets an archive ignore PHASE=RUN on creation and leave the job PENDING until started.
    if phase == "PENDING":
        phase = parse_uws_job((await send(lane, run_request(job_url), what, ARCHIVE)).body, what).phase
    phase = await wait_for_job(lane, job_url, phase, options, what)
    if phase != "COMPLETED":
        # The phase endpoint gives one word; the job document carries the errorSummary worth showing.
        final = parse_uws_job((await send(lane, job_request(job_url), what, ARCHIVE)).body, what)
        raise CatalogError(
            f"catalog: {what}: Gaia TAP job {final.job_id} ended {phase}: {final.error or 'no message'}"
        )
    await download(lane, result_request(job_url), dest, what, ARCHIVE)
    return job


async def fetch_gaia(
    query: str,
    options: RemoteOptions,
    *,
    fmt: str = "votable",
    session: aiohttp.ClientSession | None = None,
    sleep: Sleep | None = None,
) -> Path:
    """The cached result of ``query`` (Parquet), running the TAP job only when there is none."""
    target = cache_path(options, query, fmt)
    if cache_is_valid(target, {"name", "ra", "dec"}):
        return target
    # Queries can be long; messages name the start of one and stay on a line.
    what = f"gaia ({query.strip()[:80]})"
    await anyio.Path(options.cache_dir).mkdir(parents=True, exist_ok=True)
    tmp = temp_path(options.cache_dir, target.stem)
    try:
        async with open_lane("gaia", options, options.gaia_tap_url, session, sleep) as lane:
            job = await run_job(lane, query, fmt, tmp, options, what)
        limit = job_row_limit(job, options.tap_max_rows)
        parsed = await anyio.to_thread.run_sync(read_result, tmp, fmt, what, limit, options.allow_truncated)
        meta = {"query": query, "format": fmt, "job_id": job.job_id, "epoch": parsed.epoch}
        # Names are added before caching: cache_is_valid requires a name column.
        frame = with_names(parsed.frame, query)
        await anyio.to_thread.run_sync(write_cache, frame, target, meta)
    finally:
        await anyio.Path(tmp).unlink(missing_ok=True)
    return target
