"""``python -m aretriever.daemon --config configs/<name>.yaml``: fill DATA_ROOT and keep it fresh.

The daemon works through its catalogs (``daemon.catalogs``, else the configured catalog), then
every ``daemon.interval_s`` goes through them again: new catalog rows are fetched, raw data older
than ``engine.refresh_after_days`` is fetched again, and failed sources are retried once
``engine.retry_failed_after_s`` has passed. Everything already done is skipped by the usual skip
check, so a pass over a finished catalog costs a few queries per 200 sources.

- ``GET /healthz``: 200 when the loop runs and the database answers, else 503.
- ``GET /metrics``: Prometheus text (sources per observatory and outcome, requests, retries,
  429s, queue depths, lane rates, writer backlog); see docs/operations.md.
- SIGTERM or SIGINT: finish the sources in flight (``engine.grace_s``), flush, exit 0; a second
  one aborts in-flight work. SIGHUP: finish the current pass, reload the config file, go on.
- Logs: one line per event (JSON by default), each source result naming source and
  observatory, except skipped sources: a pass over a finished catalog of a million rows logs one
  line with its counts, not a million. ``daemon.log_file`` rotates at ``daemon.log_max_mb``.
- A catalog that cannot be loaded (a missing file, an archive down) is logged with its name and
  the reason and tried again on the next pass; the other catalogs go on.
- A client that opens a connection and sends no complete request is disconnected after
  ``daemon.http_timeout_s``.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager

import anyio
from aiohttp import web

from aretriever.cli.exits import report
from aretriever.cli.options import add_config_options, config_from_args
from aretriever.engine.pipeline import SourceResult
from aretriever.engine.summary import Outcome, RunSummary
from aretriever.errors import AretrieverError, ConfigError, StoreError, cause, leaves
from aretriever.redact import redact
from aretriever.service import logs
from aretriever.service.metrics import EngineMetrics
from aretriever.service.retriever import Retriever
from aretriever.settings import Config, DaemonConfig
from aretriever.store.queries import check_database

log = logging.getLogger("aretriever.service.daemon")

HEALTH_TIMEOUT_S = 5.0


class Daemon:
    """The loop, its HTTP endpoint and its signals (see the module docstring).

    Parameters
    ----------
    load
        Reads the configuration; called at start and on every reload.
    """

    def __init__(self, load: Callable[[], Config]) -> None:
        self._load = load
        self.metrics = EngineMetrics()
        self._registry = self.metrics.registry()
        self._stopping = anyio.Event()
        self._wake = anyio.Event()
        self._reload = False
        self.retriever: Retriever | None = None
        self.port: int | None = None

    # -- control (signal handlers call these) --------------------------------------------------

    def stop(self) -> None:
        """Finish what is in flight and exit; called twice, abort in-flight work."""
        log.warning("stop requested")
        self._stopping.set()
        self._interrupt()

    def reload(self) -> None:
        """Finish the current pass, then read the config again."""
        log.warning("reload requested")
        self._reload = True
        self._interrupt()

    def _interrupt(self) -> None:
        if self.retriever is not None:
            self.retriever.engine.request_stop()
        self._wake.set()

    # -- the loop ------------------------------------------------------------------------------

    async def serve(self, *, once: bool = False) -> int:
        """Run until stopped (or, with ``once``, for one pass); return the exit code."""
        cfg = self._load()
        async with self._endpoint(cfg.daemon):
            while not self._stopping.is_set():
                self._reload = False
                await self._passes(cfg, once=once)
                if once:
                    break
                if self._reload and not self._stopping.is_set():
                    cfg = self._reloaded(cfg)
        log.info("daemon stopped")
        return 0

    async def _passes(self, cfg: Config, *, once: bool) -> None:
        specs = cfg.daemon.catalogs or [cfg.catalog.path or cfg.catalog.default or ""]
        if not all(specs):
            raise ConfigError("daemon: no catalog (set daemon.catalogs, catalog.default or catalog.path)")
        async with Retriever(cfg) as retriever:
            retriever.engine.add_listener(self._on_result)
            self.retriever, self.metrics.engine = retriever, retriever.engine
            try:
                while not (self._stopping.is_set() or self._reload):
                    for spec in specs:
                        if self._stopping.is_set() or self._reload:
                            break
                        await self._pass_over(retriever, spec)
                    self.metrics.passes += 1
                    if once:
                        return
                    await self._idle(cfg.daemon.interval_s)
            finally:
                self.retriever, self.metrics.engine = None, None

    async def _pass_over(self, retriever: Retriever, spec: str) -> None:
        """One pass over one catalog; one that cannot be loaded is reported, not fatal."""
        summary: RunSummary | None = None
        try:
            summary = await retriever.run(spec)
        except* (AretrieverError, OSError) as group:  # the engine's task groups raise groups
            self.metrics.catalog_failures += 1
            reason = redact("; ".join(str(exc) for exc in leaves(group)))
            log.error(
                "catalog %s failed, trying again next pass: %s",
                spec,
                reason,
                extra={"catalog": spec, "reason": reason},
            )
        if summary is None:
            return
        log.info(
            "pass over %s done: %s",
            spec,
            _counts(summary),
            extra={"catalog": spec, "summary": summary.as_dict()},
        )

    async def _idle(self, seconds: float) -> None:
        self._wake = anyio.Event()
        with anyio.move_on_after(seconds):
            await self._wake.wait()

    def _reloaded(self, cfg: Config) -> Config:
        try:
            fresh = self._load()
        except AretrieverError as exc:
            log.error("reload failed, keeping the running config: %s", exc)
            return cfg
        log.info("config reloaded")
        return fresh

    def _on_result(self, result: SourceResult) -> None:
        self.metrics.record(result)
        if result.outcome is Outcome.SKIPPED:
            return  # counted (metrics, the pass's summary line), never logged one by one
        level = logging.WARNING if result.outcome.value == "failed" else logging.INFO
        log.log(
            level,
            "%s %s: %s",
            result.observatory,
            result.source,
            result.outcome.value,
            extra={
                "source": result.source,
                "observatory": result.observatory,
                "outcome": result.outcome.value,
                "reason": result.reason,
                "lightcurves": result.num_lightcurves,
            },
        )

    # -- HTTP ----------------------------------------------------------------------------------

    @asynccontextmanager
    async def _endpoint(self, cfg: DaemonConfig) -> AsyncIterator[None]:
        app = web.Application()
        app.router.add_get("/healthz", self._health)
        app.router.add_get("/metrics", self._metrics)
        # aiohttp's keep-alive timer also runs from the moment a connection opens and closes it
        # while no complete request has arrived: half-sent requests cannot pile up (its default
        # is an hour)
        runner = web.AppRunner(app, access_log=None, keepalive_timeout=cfg.http_timeout_s)
        await runner.setup()
        site = web.TCPSite(runner, cfg.host, cfg.port)
        await site.start()
        server = site._server  # aiohttp does not expose the bound port of port 0 otherwise
        sockets = getattr(server, "sockets", None) or []
        self.port = sockets[0].getsockname()[1] if sockets else cfg.port
        log.info("listening on http://%s:%d", cfg.host, self.port, extra={"port": self.port})
        try:
            yield
        finally:
            await runner.cleanup()

    async def _health(self, _: web.Request) -> web.Response:
        retriever = self.retriever
        sessions = retriever.engine.sessions if retriever is not None else None
        if sessions is None:
            return web.json_response({"status": "starting"}, status=503)
        try:
            with anyio.fail_after(HEALTH_TIMEOUT_S):
                await check_database(sessions)
        except (TimeoutError, StoreError) as exc:
            answer = {"status": "database unreachable", "error": redact(str(exc))}
            return web.json_response(answer, status=503)
        return web.json_response({"status": "ok", "database": "ok"})

    async def _metrics(self, _: web.Request) -> web.Response:
        body = self.metrics.text(self._registry)
        return web.Response(body=body, headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"})


def _counts(summary: RunSummary) -> str:
    """``"1200 skipped, 3 fetched"``: a pass's outcomes on one line."""
    counts = [f"{summary.total(o)} {o.value}" for o in Outcome if summary.total(o)]
    return ", ".join(counts) or "no sources"


# ------------------------------------------------------------------------------------ CLI


def build_parser() -> argparse.ArgumentParser:
    """``python -m aretriever.daemon``'s parser (``aretriever daemon`` has the same arguments)."""
    parser = argparse.ArgumentParser(prog="python -m aretriever.daemon", description=__doc__.split("\n")[0])
    add_arguments(parser)
    return parser


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the daemon's arguments: the shared configuration options (``--config`` required)."""
    parser.add_argument("--once", action="store_true", help="one pass over the catalogs, then exit")
    add_config_options(parser, config_required=True)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m aretriever.daemon ARGS``; return the exit code."""
    return run(build_parser().parse_args(argv))


def run(args: argparse.Namespace) -> int:
    """Run a parsed daemon command line (also ``aretriever daemon``) until stopped."""

    def load() -> Config:
        # the same options each time: SIGHUP re-reads the file under them
        return config_from_args(args)

    try:
        cfg = load()
    except AretrieverError as exc:
        return report(exc)
    d = cfg.daemon
    logs.configure(fmt=d.log_format, file=d.log_file, max_mb=d.log_max_mb, backups=d.log_backups)
    daemon = Daemon(load)

    async def run() -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, daemon.stop)
        loop.add_signal_handler(signal.SIGHUP, daemon.reload)
        return await daemon.serve(once=args.once)

    try:
        return asyncio.run(run())
    except BaseException as error:
        if isinstance(error, SystemExit):
            raise
        found = cause(error)
        log.error("%s", found, exc_info=not isinstance(found, AretrieverError | KeyboardInterrupt))
        return report(found)


if __name__ == "__main__":
    sys.exit(main())
