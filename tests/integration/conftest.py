"""Fixtures for end-to-end tests: a fake archive on its own thread, and the CLI run in-process."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from pathlib import Path

import pytest

from aretriever.cli.fetch import main as fetch_main
from aretriever.testing.fake_archive import FakeArchive, Faults


class ArchiveThread:
    """A FakeArchive serving from its own event loop, so sync tests can run the CLI beside it."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.archive = FakeArchive(Faults())
        self._thread = threading.Thread(target=self.loop.run_forever, name="fake-archive", daemon=True)

    def start(self) -> str:
        self._thread.start()
        return self.call(self.archive.start())

    def call(self, coro):  # type: ignore[no-untyped-def]
        future: Future[object] = asyncio.run_coroutine_threadsafe(coro, self.loop)
        return future.result(timeout=30)

    def stop(self) -> None:
        self.call(self.archive.close())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)
        self.loop.close()

    @property
    def url(self) -> str:
        return self.archive.url

    def served_rows(self, ra: float, dec: float, mask: int = 32768) -> int:
        """Data rows the archive answers for a position (its CSV lines minus the header)."""
        return self.archive.ztf.answer(ra, dec, mask).count(b"\n") - 1


@pytest.fixture
def archive() -> Iterator[ArchiveThread]:
    thread = ArchiveThread()
    thread.start()
    try:
        yield thread
    finally:
        thread.stop()


RunCli = Callable[..., int]


@pytest.fixture
def run_cli(archive: ArchiveThread, tmp_path: Path, db_url: str) -> RunCli:
    """Run ``python -m aretriever.fetch`` in-process against the fake archive and ``db_url``."""

    def run(*args: str, size: int = 20, data_root: Path | None = None) -> int:
        argv = [
            "--quiet",
            "--data-root", str(data_root or tmp_path / "data"),
            "--db-url", db_url,
            "--set", f"observatories.ztf.base_url={archive.url}",
            "--set", "observatories.ztf.rate_per_s=1000",
            "--set", "observatories.ztf.backoff_base_s=0.02",
            "--set", f"observatories.tess.base_url={archive.url}",
            "--set", "observatories.tess.rate_per_s=1000",
            "--set", "observatories.tess.backoff_base_s=0.02",
            "--set", "observatories.tess.poll_interval_s=0.01",
            "--set", f"catalog.vizier_url={archive.url}",
            "--set", f"catalog.cache_dir={tmp_path / 'catalogs'}",
            "--set", f"catalog.test_size={size}",
            "--set", "engine.workers=2",
            *args,
        ]  # fmt: skip
        if "--catalog" not in args:
            argv += ["--catalog", "test"]
        return fetch_main(argv)

    return run
