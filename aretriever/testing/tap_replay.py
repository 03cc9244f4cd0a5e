"""The Gaia archive's asynchronous TAP service (UWS), replayed for the fake archive.

``POST /tap-server/tap/async`` (``REQUEST=doQuery``, ``LANG=ADQL``, ``FORMAT``, ``QUERY``,
``PHASE=RUN``, optional ``MAXREC``) creates a job and answers 303 to ``.../async/<jobid>``; the
job then answers like the archive does:

- ``GET .../<jobid>``: the UWS job document (phase, parameters, result link, errorSummary);
- ``GET .../<jobid>/phase``: ``EXECUTING`` for the first :attr:`TapReplay.executing_polls` polls,
  then ``COMPLETED`` (or ``ERROR``); ``POST .../<jobid>/phase PHASE=RUN`` starts a PENDING job;
- ``GET .../<jobid>/results/result``: for a query on ``gaiadr3.gaia_source``, the recorded Gaia
  answer: ``data/1710099405832VAL-result.vot`` (``FORMAT=votable``, 2 rows) or
  ``data/launch_job.json`` (``FORMAT=json``, 1 row), whatever the rest of the query says.

A query on any other table ends in ``ERROR`` with a message. ``MAXREC`` (or the server-side cap
:attr:`TapReplay.server_max_rows`) below the row count cuts the VOTable there and adds
``<INFO name="QUERY_STATUS" value="OVERFLOW"/>`` after the table, as TAP services do.
"""

from __future__ import annotations

import re
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Final
from xml.sax.saxutils import escape

from aretriever.testing.vizier_replay import GAIA_JSON, GAIA_VOT, error_page

if TYPE_CHECKING:
    from aiohttp import web

    from aretriever.testing.fake_archive import Answer, FakeArchive

TAP_ASYNC: Final = "/tap-server/tap/async"
KNOWN_TABLE: Final = "gaiadr3.gaia_source"
FIRST_JOB_ID: Final = 1710099405832  # the recorded job's number; later jobs count up from it

_ROW: Final = re.compile(rb"<TR>.*?</TR>\n", re.DOTALL)
_FROM: Final = re.compile(r"\bFROM\s+([\w.]+)", re.IGNORECASE)


@dataclass
class TapJob:
    """One job's state."""

    job_id: str
    query: str
    fmt: str
    maxrec: int | None
    phase: str
    polls_left: int
    error: str | None = None
    parameters: dict[str, str] = field(default_factory=dict)


@dataclass
class TapReplay:
    """The recorded results, the jobs created so far, and the knobs tests turn."""

    votable: bytes
    json_body: bytes
    executing_polls: int = 1
    server_max_rows: int | None = None
    start_pending: bool = False  # leave new jobs PENDING even with PHASE=RUN (client must start them)
    jobs: dict[str, TapJob] = field(default_factory=dict)

    @classmethod
    def load(cls, data_dir: Path) -> TapReplay:
        return cls((data_dir / GAIA_VOT).read_bytes(), (data_dir / GAIA_JSON).read_bytes())

    def create(self, form: dict[str, str]) -> TapJob | Answer:
        """A new job from the submitted form, or a 400 page for a request TAP would refuse."""
        params = {key.upper(): value for key, value in form.items()}
        fmt = params.get("FORMAT", "votable").lower()
        if params.get("REQUEST") != "doQuery" or params.get("LANG", "").upper() != "ADQL":
            return error_page(400, "Bad Request", "REQUEST=doQuery and LANG=ADQL are required")
        if fmt not in {"votable", "json"} or not params.get("QUERY", "").strip():
            return error_page(400, "Bad Request", f"FORMAT={fmt!r} is not recorded here, or QUERY is empty")
        maxrec = params.get("MAXREC")
        if maxrec is not None and not maxrec.isdigit():
            return error_page(400, "Bad Request", f"MAXREC={maxrec!r} is not a number")
        if maxrec is None and self.server_max_rows is not None:  # the archive's own limit, reported
            params["MAXREC"] = str(self.server_max_rows)
        job_id = f"{FIRST_JOB_ID + len(self.jobs)}VAL"
        running = params.get("PHASE", "").upper() == "RUN" and not self.start_pending
        job = TapJob(
            job_id,
            params["QUERY"],
            fmt,
            None if maxrec is None else int(maxrec),
            "EXECUTING" if running else "PENDING",
            self.executing_polls,
            parameters={k.lower(): v for k, v in params.items()},
        )
        self.jobs[job_id] = job
        return job

    def change_phase(self, job: TapJob, wanted: str) -> None:
        """``POST .../phase``: RUN starts a PENDING job, ABORT stops an unfinished one."""
        if wanted == "RUN" and job.phase == "PENDING":
            job.phase = "EXECUTING"
        elif wanted == "ABORT" and job.phase not in {"COMPLETED", "ERROR"}:
            job.phase = "ABORTED"

    def poll(self, job: TapJob) -> str:
        """The phase a ``GET /phase`` sees (each poll of a running job brings its end nearer)."""
        if job.phase == "EXECUTING":
            if job.polls_left > 0:
                job.polls_left -= 1
            else:
                self._finish(job)
        return job.phase

    def _finish(self, job: TapJob) -> None:
        tables = {t.lower() for t in _FROM.findall(job.query)}
        unknown = sorted(tables - {KNOWN_TABLE})
        if unknown or not tables:
            job.phase = "ERROR"
            job.error = f"Cannot execute query: table(s) {unknown or ['(none)']} not recorded here"
        else:
            job.phase = "COMPLETED"

    def result(self, job: TapJob) -> bytes:
        """The recorded answer in the job's format, cut at its row limit (VOTable only)."""
        if job.fmt == "json":
            return self.json_body
        limits = [n for n in (job.maxrec, self.server_max_rows) if n is not None]
        return overflow(self.votable, min(limits)) if limits else self.votable


def overflow(document: bytes, limit: int) -> bytes:
    """The VOTable with at most ``limit`` rows and, when cut, ``QUERY_STATUS=OVERFLOW`` after it."""
    rows = list(_ROW.finditer(document))
    if len(rows) <= limit:
        return document
    end = rows[limit - 1].end() if limit > 0 else rows[0].start()
    cut = document[:end] + document[rows[-1].end() :]
    marker = b"</TABLE>"
    at = cut.index(marker) + len(marker)
    return cut[:at] + b'\n<INFO name="QUERY_STATUS" value="OVERFLOW"/>' + cut[at:]


def job_document(job: TapJob, job_url: str) -> bytes:
    """The UWS 1.1 job document."""
    params = "".join(
        f'    <uws:parameter id="{escape(k)}">{escape(v)}</uws:parameter>\n'
        for k, v in job.parameters.items()
    )
    error = ""
    if job.error:
        message = f"<uws:message>{escape(job.error)}</uws:message>"
        error = f'  <uws:errorSummary type="fatal">{message}</uws:errorSummary>\n'
    results = ""
    if job.phase == "COMPLETED":
        results = f'    <uws:result id="result" xlink:href="{escape(job_url)}/results/result"/>\n'
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<uws:job xmlns:uws="http://www.ivoa.net/xml/UWS/v1.0" '
        'xmlns:xlink="http://www.w3.org/1999/xlink" version="1.1">\n'
        f"  <uws:jobId>{job.job_id}</uws:jobId>\n"
        f"  <uws:phase>{job.phase}</uws:phase>\n"
        f"  <uws:parameters>\n{params}  </uws:parameters>\n"
        f"  <uws:results>\n{results}  </uws:results>\n"
        f"{error}</uws:job>\n"
    ).encode()


_REPLAYS: weakref.WeakKeyDictionary[FakeArchive, TapReplay] = weakref.WeakKeyDictionary()


def install(archive: FakeArchive, data_dir: Path | None = None) -> TapReplay:
    """Serve the Gaia TAP service from ``archive``; knobs via :func:`replay_for`."""
    from aretriever.testing.fake_archive import DATA_DIR, Answer

    replay = TapReplay.load(data_dir or DATA_DIR)
    _REPLAYS[archive] = replay

    async def submit(request: web.Request) -> Answer:
        if request.method != "POST":
            return error_page(405, "Method Not Allowed", "submit a job with POST")
        made = replay.create({k: str(v) for k, v in (await request.post()).items()})
        if not isinstance(made, TapJob):
            return made
        job_url = str(request.url.with_path(f"{TAP_ASYNC}/{made.job_id}").with_query(None))
        _add_job_routes(archive, replay, made, job_url)
        return Answer(303, b"", {"Location": job_url})

    archive.add_route(TAP_ASYNC, submit)
    return replay


def _add_job_routes(archive: FakeArchive, replay: TapReplay, job: TapJob, job_url: str) -> None:
    from aretriever.testing.fake_archive import Answer

    xml = {"Content-Type": "text/xml"}

    async def document(request: web.Request) -> Answer:
        return Answer(200, job_document(job, job_url), xml)

    async def phase(request: web.Request) -> Answer:
        if request.method == "POST":
            replay.change_phase(job, str((await request.post()).get("PHASE", "")).upper())
            return Answer(303, b"", {"Location": job_url})
        return Answer(200, replay.poll(job).encode(), {"Content-Type": "text/plain"})

    async def result(request: web.Request) -> Answer:
        if job.phase != "COMPLETED":
            return error_page(404, "Not Found", f"job {job.job_id} has no result ({job.phase})")
        kind = "application/json" if job.fmt == "json" else "application/x-votable+xml"
        return Answer(200, replay.result(job), {"Content-Type": kind})

    base = f"{TAP_ASYNC}/{job.job_id}"
    archive.add_route(base, document)
    archive.add_route(f"{base}/phase", phase)
    archive.add_route(f"{base}/results/result", result)


def replay_for(archive: FakeArchive) -> TapReplay:
    """The TAP replay installed on ``archive``."""
    return _REPLAYS[archive]
