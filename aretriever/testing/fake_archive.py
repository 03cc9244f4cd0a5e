"""A local aiohttp server that replays real recorded archive answers, with fault knobs.

Tests, benchmarks and offline trials point an observatory's ``base_url`` at it. Each request is
answered from a small route table (path -> handler); before the handler runs, a per-request
``random.Random`` seeded from :attr:`Faults.seed` and the request's serial number decides its
fate: base latency or a slow tail, a 503, a 429 with ``Retry-After``, a request that is never
answered, or a body cut short. Scripted answers (:meth:`FakeArchive.script`) are served first.
A held request (:meth:`FakeArchive.hold`) waits, before any of that, until the test releases it,
so tests can order answers without timing them.

The ZTF route answers ``/cgi-bin/ZTF/nph_light_curves`` with the recorded IRSA rows in
``data/ZTF_lightcurve.csv`` moved onto the requested position (see :mod:`.ztf_replay`). The MAST
routes answer ``/api/v0/invoke`` (TIC, CAOM, products) and ``/api/v0.1/Download/file`` with TESS
answers templated from recorded ones and the real lightcurve files (see :mod:`.mast_replay`).

Run it on its own::

    python -m aretriever.testing.fake_archive --port 8080 --latency-ms 200 --error-rate 0.01
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import email.utils
import math
import random
import signal
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Final

from aiohttp import web

from aretriever.testing import tap_replay, vizier_replay
from aretriever.testing.mast_replay import DOWNLOAD_PATH, INVOKE_PATH, MastReplay
from aretriever.testing.ztf_replay import ZTF_PATH, ZtfReplay

DATA_DIR: Final = Path(__file__).parent / "data"


@dataclass
class Faults:
    """What goes wrong, and how often. Rates are fractions of requests in [0, 1].

    One uniform draw per request picks at most one of timeout, 503, 429 and truncation, in
    that order (so their rates should add up to at most 1).
    """

    latency_ms: float = 0.0  # every answer waits this long...
    slow_fraction: float = 0.0  # ...except this fraction, which waits slow_ms instead
    slow_ms: float = 4000.0
    error_rate: float = 0.0  # 503 Service Unavailable
    rate_429: float = 0.0  # 429 Too Many Requests with Retry-After
    retry_after_s: float = 1.0  # sent as whole seconds, rounded up (HTTP allows no fractions)
    retry_after_http_date: bool = False  # send Retry-After as an HTTP date instead
    timeout_rate: float = 0.0  # never answered: held open until the client gives up
    truncate_rate: float = 0.0  # full Content-Length, part of the body, then the connection drops
    seed: int = 0


@dataclass(frozen=True, slots=True)
class Answer:
    """What a route handler (or a script) wants sent back."""

    status: int
    body: bytes
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Gate:
    """One request held by the fake archive until :meth:`release`; :attr:`arrived` is set when it comes."""

    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    released: asyncio.Event = field(default_factory=asyncio.Event)

    def release(self) -> None:
        """Let the held request be answered (as it would have been)."""
        self.released.set()


Handler = Callable[[web.Request], Awaitable[Answer]]
Recorded = tuple[str, dict[str, str], int]  # (path, query, status served; 0 = never answered)
ScriptedResponse = tuple[int, bytes | str, dict[str, str]]

_TIMEOUT, _ERROR, _TOO_MANY, _TRUNCATE = "timeout", "503", "429", "truncate"


class FakeArchive:
    """An aiohttp server replaying recorded archive answers, with faults and scripts.

    Parameters
    ----------
    faults : Faults, optional
        Fault knobs; :attr:`faults` may be replaced or changed while the server runs.
    data_dir : path, optional
        Folder with the recorded files (default: the package's ``data`` folder).
    max_recorded : int
        How many requests :attr:`requests` remembers (counts are kept for all).
    """

    def __init__(
        self,
        faults: Faults | None = None,
        data_dir: str | Path | None = None,
        *,
        max_recorded: int = 100_000,
    ) -> None:
        self.faults = faults if faults is not None else Faults()
        data = Path(data_dir) if data_dir is not None else DATA_DIR
        self.ztf = ZtfReplay.load(data)
        self.mast = MastReplay.load(data)
        self.url = ""
        self._routes: dict[str, Handler] = {
            ZTF_PATH: self._ztf_lightcurves,
            INVOKE_PATH: self._mast_invoke,
            DOWNLOAD_PATH: self._mast_download,
        }
        vizier_replay.install(self, data)
        tap_replay.install(self, data)
        self._scripts: dict[str, deque[Answer]] = {}
        self._gates: dict[str, deque[Gate]] = {}
        self._log: deque[Recorded] = deque(maxlen=max_recorded)
        self._counts: Counter[str] = Counter()
        self._serial = 0
        self._closing = asyncio.Event()
        self._runner: web.AppRunner | None = None

    # ---------------------------------------------------------------- lifecycle

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Start serving; returns the base URL, e.g. ``http://127.0.0.1:41234``."""
        self._closing = asyncio.Event()
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._dispatch)
        # handler_cancellation: a client that gives up frees its held (timeout) handler
        runner = web.AppRunner(app, access_log=None, handler_cancellation=True, shutdown_timeout=1.0)
        await runner.setup()
        await web.TCPSite(runner, host, port).start()
        self._runner = runner
        bound_host, bound_port = runner.addresses[0][:2]
        shown = f"[{bound_host}]" if ":" in bound_host else bound_host
        self.url = f"http://{shown}:{bound_port}"
        return self.url

    async def close(self) -> None:
        """Release held and waiting requests, then stop the server."""
        self._closing.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeArchive:
        if self._runner is None:
            await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # ---------------------------------------------------------------- test controls

    def add_route(self, path: str, handler: Handler) -> None:
        """Answer ``path`` with ``handler`` (faults and scripts still apply)."""
        self._routes[path] = handler

    def script(self, path: str, responses: list[ScriptedResponse]) -> None:
        """Serve these ``(status, body, headers)`` for ``path``, in order, before anything else."""
        queue = self._scripts.setdefault(path, deque())
        for status, body, headers in responses:
            data = body.encode() if isinstance(body, str) else body
            queue.append(Answer(status, data, dict(headers)))

    def hold(self, path: str) -> Gate:
        """Hold the next request for ``path`` (after those already held) until the gate is released."""
        gate = Gate()
        self._gates.setdefault(path, deque()).append(gate)
        return gate

    @property
    def requests(self) -> list[Recorded]:
        """The requests received so far: (path, query, status served; 0 = never answered)."""
        return list(self._log)

    def count(self, path_prefix: str = "") -> int:
        """How many requests arrived for paths starting with ``path_prefix``."""
        return sum(n for path, n in self._counts.items() if path.startswith(path_prefix))

    def reset_counts(self) -> None:
        """Forget the requests received so far."""
        self._log.clear()
        self._counts.clear()

    # ---------------------------------------------------------------- serving

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        await self._pass_gate(request.path)
        scripted = self._next_scripted(request.path)
        rng = random.Random(self.faults.seed * 1_000_003 + self._serial)
        self._serial += 1
        fault, delay_s, cut = _draw(self.faults, rng)
        if scripted is not None:
            fault = None
        if fault == _TIMEOUT:
            self._record(request, 0)
            return await self._hold(request)
        answer = scripted if scripted is not None else await self._answer(request, fault)
        self._record(request, answer.status)
        await self._pause(delay_s)
        if fault == _TRUNCATE and not self._closing.is_set():
            return await _truncated(request, answer, cut)
        return web.Response(status=answer.status, body=answer.body, headers=answer.headers)

    async def _answer(self, request: web.Request, fault: str | None) -> Answer:
        if fault == _ERROR:
            return _html(503, "Service Unavailable", "The server is temporarily unable to serve.")
        if fault == _TOO_MANY:
            return self._too_many_requests()
        handler = self._routes.get(request.path)
        if handler is None:
            return _html(404, "Not Found", f"The requested URL {request.path} was not found.")
        return await handler(request)

    def _too_many_requests(self) -> Answer:
        wait_s = max(0, math.ceil(self.faults.retry_after_s))
        value = str(wait_s)
        if self.faults.retry_after_http_date:
            value = email.utils.formatdate(time.time() + wait_s, usegmt=True)
        page = _html(429, "Too Many Requests", "Slow down.")
        return Answer(429, page.body, {**page.headers, "Retry-After": value})

    def _next_scripted(self, path: str) -> Answer | None:
        queue = self._scripts.get(path)
        return queue.popleft() if queue else None

    async def _pass_gate(self, path: str) -> None:
        gates = self._gates.get(path)
        if not gates:
            return
        gate = gates.popleft()
        gate.arrived.set()
        # A client that gives up cancels this wait (handler_cancellation); closing the server ends it too.
        waits = [asyncio.ensure_future(gate.released.wait()), asyncio.ensure_future(self._closing.wait())]
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for wait in waits:
                wait.cancel()

    def _record(self, request: web.Request, status: int) -> None:
        self._log.append((request.path, dict(request.query), status))
        self._counts[request.path] += 1

    async def _pause(self, seconds: float) -> None:
        if seconds > 0 and not self._closing.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closing.wait(), seconds)

    async def _hold(self, request: web.Request) -> web.StreamResponse:
        # Until the client gives up (aiohttp then cancels this handler) or the server closes.
        await self._closing.wait()
        if request.transport is not None:
            request.transport.close()
        return web.Response(status=503)

    # ---------------------------------------------------------------- routes

    async def _ztf_lightcurves(self, request: web.Request) -> Answer:
        return ztf_lightcurves(self.ztf, request.query)

    async def _mast_invoke(self, request: web.Request) -> Answer:
        return Answer(*await self.mast.invoke(request))

    async def _mast_download(self, request: web.Request) -> Answer:
        return Answer(*await self.mast.download(request))


def ztf_lightcurves(replay: ZtfReplay, query: Mapping[str, str]) -> Answer:
    """IRSA's ``nph_light_curves`` for a ``POS=CIRCLE`` query in CSV; a 400 page otherwise."""
    params = {key.upper(): value for key, value in query.items()}
    fmt = params.get("FORMAT", "")
    if fmt.lower() != "csv":
        return _irsa_error(f"FORMAT={fmt!r} is not supported here (only FORMAT=csv)")
    pos = params.get("POS", "")
    position = _parse_circle(pos)
    if position is None:
        return _irsa_error(f"POS must be 'CIRCLE <ra> <dec> <radius>' (got {pos!r})")
    mask = params.get("BAD_CATFLAGS_MASK", "0")
    if not mask.isdigit():
        return _irsa_error(f"BAD_CATFLAGS_MASK must be a non-negative integer (got {mask!r})")
    body = replay.answer(position[0], position[1], int(mask))
    return Answer(200, body, {"Content-Type": "text/csv"})


# -------------------------------------------------------------------- helpers


def _draw(faults: Faults, rng: random.Random) -> tuple[str | None, float, float]:
    """(fault or None, delay in s, where a truncated body is cut); always three draws."""
    pick, slow, cut = rng.random(), rng.random(), rng.uniform(0.1, 0.9)
    fault = None
    edge = 0.0
    for name, rate in (
        (_TIMEOUT, faults.timeout_rate),
        (_ERROR, faults.error_rate),
        (_TOO_MANY, faults.rate_429),
        (_TRUNCATE, faults.truncate_rate),
    ):
        edge += rate
        if pick < edge:
            fault = name
            break
    delay_ms = faults.slow_ms if slow < faults.slow_fraction else faults.latency_ms
    return fault, delay_ms / 1000.0, cut


async def _truncated(request: web.Request, answer: Answer, cut: float) -> web.StreamResponse:
    """Announce the whole body, send part of it, then drop the connection."""
    response = web.StreamResponse(status=answer.status, headers=answer.headers)
    response.content_length = len(answer.body)
    await response.prepare(request)
    await response.write(answer.body[: int(len(answer.body) * cut)])
    if request.transport is not None:
        request.transport.close()  # flushes what was written, then closes
    return response


def _parse_circle(pos: str) -> tuple[float, float, float] | None:
    parts = pos.replace("+", " ").split()
    if len(parts) != 4 or parts[0].upper() != "CIRCLE":
        return None
    try:
        ra, dec, radius = (float(p) for p in parts[1:])
    except ValueError:
        return None
    if not (math.isfinite(ra) and -90.0 <= dec <= 90.0 and 0.0 < radius <= 1.0):
        return None
    return ra % 360.0, dec, radius


def _html(status: int, title: str, text: str) -> Answer:
    page = (
        f"<!DOCTYPE html>\n<html><head><title>{status} {title}</title></head>\n"
        f"<body><h1>{title}</h1>\n<p>{text}</p>\n</body></html>\n"
    )
    return Answer(status, page.encode(), {"Content-Type": "text/html; charset=utf-8"})


def _irsa_error(message: str) -> Answer:
    # Shaped like IRSA's HTML error pages; the wording is ours.
    return _html(400, "ZTF Lightcurve Query Error", f"ERROR: {message}")


# -------------------------------------------------------------------- command line


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m aretriever.testing.fake_archive",
        description="Serve recorded archive answers locally, with injected faults.",
    )
    defaults = Faults()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080, help="0 picks a free port")
    parser.add_argument("--data-dir", default=None, help="folder with the recorded files")
    for name in (
        "latency_ms",
        "slow_fraction",
        "slow_ms",
        "error_rate",
        "rate_429",
        "retry_after_s",
        "timeout_rate",
        "truncate_rate",
    ):
        flag = "--" + name.replace("_", "-")
        parser.add_argument(flag, type=float, default=getattr(defaults, name))
    parser.add_argument("--retry-after-http-date", action="store_true")
    parser.add_argument("--seed", type=int, default=defaults.seed)
    return parser.parse_args(argv)


def _faults_from(args: argparse.Namespace) -> Faults:
    names = Faults.__dataclass_fields__
    return Faults(**{name: getattr(args, name) for name in names})


async def serve(args: argparse.Namespace) -> None:
    """Serve until SIGINT or SIGTERM, printing the base URL first."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    archive = FakeArchive(_faults_from(args), args.data_dir)
    print(await archive.start(args.host, args.port), flush=True)
    try:
        await stop.wait()
    finally:
        await archive.close()


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    asyncio.run(serve(_parse_args(argv)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
