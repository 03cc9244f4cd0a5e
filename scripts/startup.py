"""Start-up and exit of the fetch CLI, timed from outside the process (a benchmark, not a test).

For each run the real CLI (``python -m aretriever.fetch``) is started against a fake archive that
this script serves on its own loop in a thread, so the archive's clock and the process's start
and exit are read by one process:

- start -> first request: ``Popen`` to the first archive request (imports, config, stores, pool);
- last answer -> exit: the last archive answer to the process's exit (the last sources, closing);
- import: ``import aretriever.cli.fetch`` alone, timed in a fresh interpreter.

The archive answers at once (``--latency-ms 0`` by default), so the last request is the last
answer. ``--rate`` keeps the pool ahead of the archive, as in ``scripts/bench``'s archive-bound
figure, so the tail is closing, not a backlog of parsing.

    .venv/bin/python scripts/startup.py --runs 3
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web

from aretriever.testing.fake_archive import Answer, FakeArchive, Faults, ztf_lightcurves
from aretriever.testing.ztf_replay import ZTF_PATH

PY = sys.executable


@dataclass
class Stamps:
    """Monotonic times of the archive's requests (answered at once, so also its answers)."""

    requests: list[float] = field(default_factory=list)


class ArchiveThread:
    """A :class:`FakeArchive` on its own event loop in a daemon thread, stamping every ZTF request."""

    def __init__(self, faults: Faults) -> None:
        self.faults = faults
        self.stamps = Stamps()
        self.url = ""
        self._ready = threading.Event()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._serve, name="fake-archive", daemon=True)

    def __enter__(self) -> ArchiveThread:
        self._thread.start()
        self._ready.wait()
        return self

    def __exit__(self, *exc: object) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        archive = FakeArchive(self.faults)

        async def stamped(request: web.Request) -> Answer:
            self.stamps.requests.append(time.monotonic())
            return ztf_lightcurves(archive.ztf, request.query)

        archive.add_route(ZTF_PATH, stamped)
        self.url = self._loop.run_until_complete(archive.start())
        self._ready.set()
        self._loop.run_forever()
        self._loop.run_until_complete(archive.close())


@dataclass(frozen=True)
class Timing:
    to_first_request_s: float
    after_last_answer_s: float
    total_s: float
    requests: int


def run_once(archive: ArchiveThread, n: int, rate: float, extra: list[str]) -> Timing:
    """One CLI run of ``n`` generated sources at ``rate`` requests/s, timed around the process."""
    archive.stamps.requests.clear()
    with tempfile.TemporaryDirectory() as tmp:
        argv = [
            PY, "-m", "aretriever.fetch", "--quiet", "--no-config", "--catalog", "test",
            "--data-root", str(Path(tmp) / "data"),
            "--set", f"catalog.test_size={n}",
            "--set", f"observatories.ztf.base_url={archive.url}",
            "--set", "observatories.ztf.max_concurrency=32",
            "--set", f"observatories.ztf.rate_per_s={rate}",
            *extra,
        ]  # fmt: skip
        t0 = time.monotonic()
        proc = subprocess.run(argv, capture_output=True, text=True, check=False)
        t_exit = time.monotonic()
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr)
        raise SystemExit(f"CLI exited {proc.returncode}")
    stamps = archive.stamps.requests
    if not stamps:
        raise SystemExit("the CLI sent no request")
    return Timing(stamps[0] - t0, t_exit - stamps[-1], t_exit - t0, len(stamps))


def import_time(module: str) -> float:
    """Seconds to import ``module`` in a fresh interpreter (the interpreter's own start aside)."""
    code = f"import time; t = time.perf_counter(); import {module}; print(time.perf_counter() - t)"
    out = subprocess.run([PY, "-c", code], capture_output=True, text=True, check=True)
    return float(out.stdout)


def _spread(values: list[float]) -> str:
    return f"{min(values):.3f} / {statistics.median(values):.3f} / {max(values):.3f} s (min/median/max)"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--sources", type=int, default=40)
    parser.add_argument(
        "--rate", type=float, default=20.0, help="requests/s (the bench's archive-bound rate)"
    )
    parser.add_argument("--latency-ms", type=float, default=0.0)
    parser.add_argument("--set", action="append", default=[], dest="sets", help="passed on to the CLI")
    args = parser.parse_args(argv)
    extra = [arg for s in args.sets for arg in ("--set", s)]
    imports = [import_time("aretriever.cli.fetch") for _ in range(args.runs)]
    timings: list[Timing] = []
    with ArchiveThread(Faults(latency_ms=args.latency_ms)) as archive:
        for i in range(args.runs):
            load = os.getloadavg()[0]
            t = run_once(archive, args.sources, args.rate, extra)
            timings.append(t)
            print(
                f"run {i + 1}: start -> first request {t.to_first_request_s:.3f} s,"
                f" last answer -> exit {t.after_last_answer_s:.3f} s, total {t.total_s:.2f} s,"
                f" {t.requests} requests, load {load:.2f}",
                flush=True,
            )
    print(f"import aretriever.cli.fetch   {_spread(imports)}")
    print(f"start -> first request       {_spread([t.to_first_request_s for t in timings])}")
    print(f"last answer -> exit          {_spread([t.after_last_answer_s for t in timings])}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
