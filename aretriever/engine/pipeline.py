"""What happens to one source in one lane, once the skip check has decided.

Fetch through the lane's port; parse, reduce and build the HDF5 files (as images) in the pool;
hand the images to the file writer, and only when the files are complete hand their rows to the
row writer. Any failure becomes a
``failures`` row with its stage and reason; it never stops the run.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from aretriever.adapters.base import Adapter, Fetched, Target
from aretriever.engine.cpu import CpuRunner as CpuRunner  # its home before engine/cpu
from aretriever.engine.pool import CpuJob, CpuResult, ReducedTable
from aretriever.engine.skipcheck import Action, Decision, Products
from aretriever.engine.summary import Outcome
from aretriever.errors import FetchError, MalformedResponse, StoreError
from aretriever.http import Lane
from aretriever.redact import redact
from aretriever.retry import is_transient
from aretriever.settings import AnalysisConfig, HistogramConfig
from aretriever.store import paths, rows
from aretriever.store.hdf5 import Compression, h5_nrows
from aretriever.store.models import Stage
from aretriever.store.rows import source_row as source_row  # its home before store/rows
from aretriever.store.writers import FileWriter, RowWriter

log = logging.getLogger("aretriever.engine.pipeline")

Row = dict[str, Any]


class HistogramSink(Protocol):
    """Where the score histograms of analysed lightcurves are counted.

    Pool workers bin the scores with ``cfg`` (``ReducedTable.binned``); the sink counts them.
    """

    cfg: HistogramConfig

    async def add(self, target: Target, tables: Sequence[ReducedTable], observatory: str = "") -> None: ...


@dataclass(frozen=True, slots=True)
class SourceResult:
    """What happened to one source in one lane (streamed to progress bars and embedders)."""

    source: str
    observatory: str
    outcome: Outcome
    reason: str = ""
    num_lightcurves: int = 0


@dataclass(frozen=True, slots=True)
class FileCompression:
    """How the pool compresses each kind of file (``store.raw_compression``/``reduced_compression``)."""

    raw: Compression = "gzip"
    reduced: Compression = "none"


@dataclass(slots=True)
class Stores:
    """The two writer tasks, where files live and how they are compressed."""

    files: FileWriter
    rows: RowWriter
    data_root: Path
    compression: FileCompression = field(default_factory=FileCompression)


def _now() -> datetime:
    return datetime.now(UTC)


def raw_attrs(target: Target, observatory: str, fetched: Fetched) -> dict[str, Any]:
    """Metadata kept beside the raw table, so a file alone says what it holds."""
    return {
        "source_name": target.name,
        "observatory": observatory,
        "ra_deg": target.ra_deg,
        "dec_deg": target.dec_deg,
        "mag": target.mag,
        "url": fetched.url,
        "fetched_at": _now().isoformat(),
        "archive": dict(fetched.meta),
    }


class SourcePipeline:
    """Carries out skip-check decisions for one observatory lane."""

    def __init__(
        self,
        *,
        adapter: Adapter,
        http: Lane,
        cpu: CpuRunner,
        stores: Stores,
        products: Products,
        catalog: str,
        max_attempts: int,
        analysis: AnalysisConfig | None = None,
        histograms: HistogramSink | None = None,
    ) -> None:
        self.adapter = adapter
        # Analysis reads reduced lightcurves: without reduction there is nothing to analyse.
        self.analysis = analysis if products.reduce and products.analyze else None
        self.histograms = histograms
        self.observatory = adapter.name
        self.http = http
        self.cpu = cpu
        self.stores = stores
        self.products = products
        self.catalog = catalog
        self.max_attempts = max_attempts

    async def handle(self, decision: Decision) -> SourceResult:
        """Do what ``decision`` says; a failure is recorded, never raised."""
        try:
            return await self._dispatch(decision)
        except FetchError as exc:
            return await self._fail(decision, Stage.FETCH, exc)
        # The stage names what to look at: the archive (FETCH), the disk or database (WRITE), else the code.
        except StoreError as exc:
            return await self._fail(decision, Stage.WRITE, exc)
        except Exception as exc:  # a bad source never stops the run; the traceback goes to the log
            log.exception("%s: %s failed", self.observatory, decision.target.name)
            return await self._fail(decision, Stage.REDUCE, exc)

    async def _dispatch(self, d: Decision) -> SourceResult:
        if d.action is Action.SKIP:
            return self._result(d.target, Outcome.SKIPPED)
        if d.action is Action.RELINK:
            return await self._relink(d)
        if d.action is Action.REDUCE:
            return await self._reduce_stored(d, Outcome.REDUCED)
        outcome = Outcome.REFETCHED if d.action is Action.REFETCH else Outcome.FETCHED
        return await self._fetch(d, outcome)

    def _result(self, target: Target, outcome: Outcome, reason: str = "", n: int = 0) -> SourceResult:
        return SourceResult(target.name, self.observatory, outcome, reason, n)

    # -- fetch ---------------------------------------------------------------------------------

    async def _fetch(self, d: Decision, outcome: Outcome) -> SourceResult:
        target = d.target
        fetched, result = await self._fetch_and_parse(target)
        if fetched.body is None or result is None:
            await self._store_no_data(d, fetched)
            return self._result(target, Outcome.NO_DATA, fetched.no_data_reason or "")
        image = result.raw_image
        if image is None:  # pragma: no cover - a job built from a fetched body always builds it
            raise AssertionError("the pool returned no raw file for a fetched body")
        # Files before rows: raw and reduced files are complete on disk before any row names them, so a
        # crash leaves at worst a file without a row, which the next skip check re-links.
        relpath = paths.raw_relpath(self.observatory, target.name, target.ra_deg)
        nbytes = await self._write(relpath, image)
        lc_rows = await self._write_lightcurves(target, result)
        raw_row = self._raw_row(target, relpath, result.num_raw_rows, nbytes, fetched)
        await self._submit_rows(d, raw_row, lc_rows, result)
        return self._result(target, outcome, d.reason, len(result.lightcurves))

    async def _fetch_and_parse(self, target: Target) -> tuple[Fetched, CpuResult | None]:
        """Fetch and parse; a body that parses as cut short is asked for again (it is transient).

        The re-asks spend the lane's attempt budget for the source
        (:class:`~aretriever.http.Attempts`), so an always-malformed source costs
        ``max_attempts`` requests, not ``max_attempts`` squared.
        """
        # One port per source: every re-ask below shares the same attempt budget.
        port = self.http.for_source()
        while True:
            fetched = await self.adapter.fetch(target, port)
            if fetched.body is None:
                return fetched, None
            # The attrs are made here, not in the worker: ``fetched_at`` is when the answer came.
            attrs = raw_attrs(target, self.observatory, fetched)
            job = self._job(target, self.products.reduce, fetched=fetched, raw_attrs=attrs)
            try:
                return fetched, await self.cpu.run(job)
            except MalformedResponse:
                # no request counted (an adapter that fetched none) would loop forever
                if port.attempts.exhausted() or not port.attempts.most():
                    raise
                log.info(
                    "%s: malformed answer for %s, asking again [attempt %d/%d]",
                    self.observatory,
                    target.name,
                    port.attempts.most(),
                    port.attempts.max_attempts,
                )

    def _job(self, target: Target, reduce: bool, **source: Any) -> CpuJob:
        """A pool job for ``target`` from ``fetched`` and ``raw_attrs``, or ``raw_path`` and ``raw_key``."""
        bins = self.histograms.cfg if self.histograms is not None and self.analysis is not None else None
        return CpuJob(
            self.adapter,
            target,
            reduce=reduce,
            analysis=self.analysis,
            raw_compression=self.stores.compression.raw,
            reduced_compression=self.stores.compression.reduced,
            histograms=bins,
            **source,
        )

    async def _write(self, relpath: str, image: bytes) -> int:
        return await self.stores.files.write_image(paths.resolve(self.stores.data_root, relpath), image)

    def _raw_row(
        self, target: Target, relpath: str | None, n: int, nbytes: int, fetched: Fetched | None
    ) -> dict[str, Any]:
        reason = fetched.no_data_reason if fetched else None
        return rows.raw_row(
            target.name,
            self.observatory,
            relpath,
            num_rows=n,
            nbytes=nbytes,
            url=fetched.url if fetched else None,
            meta={"no_data_reason": reason} if reason else {},
        )

    async def _store_no_data(self, d: Decision, fetched: Fetched) -> None:
        await self._submit_rows(d, self._raw_row(d.target, None, 0, 0, fetched), None)

    # -- lightcurves ---------------------------------------------------------------------------

    async def _write_lightcurves(self, target: Target, result: CpuResult) -> list[dict[str, Any]] | None:
        if not self.products.reduce:
            return None
        lcs = result.lightcurves
        # [] (reduced, nothing survived) differs from None (not reduced): [] still replaces the project's
        # old lightcurve rows, so a source whose data got worse does not keep stale ones.
        if not lcs:
            return []
        if result.reduced_image is None:  # pragma: no cover - the pool builds it for any lightcurve
            raise AssertionError("the pool returned lightcurves without their file")
        relpath = paths.reduced_relpath(self.products.folder, self.observatory, target.name, target.ra_deg)
        nbytes = await self._write(relpath, result.reduced_image)
        # Counted after the file write, so the histograms only ever describe stored lightcurves.
        if self.histograms is not None and self.analysis is not None:
            await self.histograms.add(target, lcs, self.observatory)
        made_with = self.products.stamp(self.observatory)
        return rows.lightcurve_rows(self._product_key(target), relpath, nbytes, lcs, made_with)

    async def _reduce_stored(self, d: Decision, outcome: Outcome) -> SourceResult:
        target = d.target
        raw_path = str(paths.resolve(self.stores.data_root, d.raw_relpath))
        job = self._job(target, True, raw_path=raw_path, raw_key=paths.raw_key(target.name))
        result = await self.cpu.run(job)
        lc_rows = await self._write_lightcurves(target, result)
        await self._submit_rows(d, None, lc_rows, result)
        return self._result(target, outcome, d.reason, len(result.lightcurves))

    # -- relink --------------------------------------------------------------------------------

    async def _relink(self, d: Decision) -> SourceResult:
        """A complete file without its row (e.g. after a crash): give it its row back."""
        target = d.target
        path = paths.resolve(self.stores.data_root, d.raw_relpath)
        n = await self.stores.files.run(h5_nrows, path, paths.raw_key(target.name))
        row = self._raw_row(target, d.raw_relpath, n, path.stat().st_size, None)
        await self._submit_rows(d, row, None)
        # An empty raw table has nothing to reduce.
        if self.products.reduce and n:
            await self._reduce_stored(d, Outcome.RELINKED)
        return self._result(target, Outcome.RELINKED, d.reason)

    # -- rows ----------------------------------------------------------------------------------

    async def _submit_rows(
        self,
        d: Decision,
        raw: dict[str, Any] | None,
        lcs: list[dict[str, Any]] | None,
        result: CpuResult | None = None,
    ) -> None:
        """Rows go to the writer only now, after their files are complete."""
        writer = self.stores.rows
        # The source row first: raw, lightcurve and failure rows refer to it. The row writer applies
        # these in order, so the failures resolved last are only cleared once the success is recorded.
        await writer.put(rows.upsert_sources([source_row(d.target, self.catalog)]))
        if raw is not None:
            await writer.put(rows.upsert_raw([raw]))
        if lcs is not None:
            await writer.put(rows.replace_lightcurves(self._product_key(d.target), lcs))
        if lcs is not None and result is not None and result.properties is not None:
            await self._submit_analysis(d.target, result)
        if d.failed_stages:
            await writer.put(rows.resolve_failures(d.target.name, self.observatory, d.failed_stages))

    def _product_key(self, target: Target) -> dict[str, Any]:
        return rows.product_key(target.name, self.observatory, self.products.project, self.products.cfg_hash)

    async def _submit_analysis(self, target: Target, result: CpuResult) -> None:
        """Detections of each lightcurve, then the properties that mark the source analysed."""
        key = self._product_key(target)
        detections = rows.detection_rows(key, (lc.detections for lc in result.lightcurves))
        await self.stores.rows.put(rows.replace_detections(key, detections))
        made_with = self.products.stamp(self.observatory)
        await self.stores.rows.put(rows.upsert_properties(key, result.properties, made_with))

    async def _fail(self, d: Decision, stage: Stage, exc: BaseException) -> SourceResult:
        reason = _failure_reason(exc)
        # Approximate: a transient error usually got here by spending the budget, a permanent one in one try.
        attempts = self.max_attempts if is_transient(exc) else 1
        log.warning("%s: %s failed at %s: %s", self.observatory, d.target.name, stage, exc)
        # Redacted before it reaches the database; capped, as a parser's or driver's message can be huge.
        error = redact(str(exc))[:2000]
        name = d.target.name
        row = rows.failure_row(name, self.observatory, stage, reason, attempts=attempts, last_error=error)
        await self.stores.rows.put(rows.record_failure(row))
        return self._result(d.target, Outcome.FAILED, reason)


def _failure_reason(exc: BaseException) -> str:
    # Short, stable reasons first: the summary and the failures table group sources by this text.
    if isinstance(exc, FetchError) and exc.reason:
        return exc.reason
    if isinstance(exc, FetchError) and exc.status is not None:
        return f"http_{exc.status}"
    return type(exc).__name__
