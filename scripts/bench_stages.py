"""The single-core cost of each stage of one source, each stage measured alone on the same data.

Each stage is one small function that takes what the stages before it left on a :class:`Source`
and adds its own output, so when the code under a stage changes (the pool building HDF5 file
images, the science returning structured arrays) one function here changes with it.

- a fetched source: parse, raw records, reduce, analyze, bin scores (for the project's score
  histograms), raw image, reduced image, write bytes, rows (source, raw and lightcurve rows);
- a re-analysis from disk: read raw, reduce, analyze, bin scores, reduced image, write reduced
  bytes, lightcurve rows.

The HDF5 images are built as the pool builds them (``store.hdf5.build_h5_image``, with the
default compression) and written as the file writer writes them (``store.hdf5.write_image``);
``write_h5`` (image and disk in one call) is measured beside them as a check, outside the sums.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aretriever.adapters.base import Adapter, Fetched, Target, raw_table_kind
from aretriever.science.analysis import Analysis
from aretriever.settings_runtime import StoreConfig
from aretriever.store import hdf5, paths

Tables = Mapping[str, tuple[Any, Mapping[str, Any]]]
STORE = StoreConfig()  # each file compressed as a run with the default settings compresses it
FIRST_VERSION = "first"  # the cfg hash of the fetch's rows; any other is a re-analysis


@dataclass(frozen=True)
class Table:
    """A reduced lightcurve as the pool stores it: the processed table and its file metadata."""

    records: Any
    meta: Mapping[str, Any]
    filter: str
    time_start_mjd: float
    time_end_mjd: float


@dataclass
class Source:
    """One source's data as it moves through the stages (each stage fills its own field)."""

    target: Target
    fetched: Fetched
    raw_file: Path
    reduced_file: Path
    raw: Any = None  # the parsed (or re-read) raw table
    raw_records: Any = None  # the raw table as the writer takes it
    lightcurves: list[Any] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    raw_image: bytes = b""
    reduced_image: bytes = b""


@dataclass(frozen=True)
class Context:
    adapter: Adapter
    analysis: Analysis
    root: Path


Stage = Callable[[Context, Source], None]


def build_image(tables: Tables, compression: hdf5.Compression) -> bytes:
    """An HDF5 file's bytes, built in memory as the pool builds them."""
    return hdf5.build_h5_image(tables, compression)


def write_image(path: Path, image: bytes) -> None:
    """Put ``image`` on disk as the engine's file writer does: atomically, with fsync."""
    hdf5.write_image(path, image)


def raw_tables(s: Source) -> Tables:
    return {paths.raw_key(s.target.name): (s.raw_records, {"bench": 1})}


def reduced_tables(s: Source) -> Tables:
    total = len(s.tables)
    return {
        paths.reduction_key(s.target.name, k + 1, total): (t.records, {**t.meta, "filter": t.filter})
        for k, t in enumerate(s.tables)
    }


def parse(ctx: Context, s: Source) -> None:
    s.raw = ctx.adapter.parse(s.fetched)


def raw_records(ctx: Context, s: Source) -> None:
    s.raw_records = hdf5.as_records(s.raw)


def read_raw(ctx: Context, s: Source) -> None:
    # as the pool's re-analysis reads it: the stored array, a DataFrame only for adapters wanting one
    records = hdf5.read_records(s.raw_file, paths.raw_key(s.target.name))
    s.raw = records if raw_table_kind(ctx.adapter) == "records" else hdf5.records_to_frame(records)


def reduce(ctx: Context, s: Source) -> None:
    s.lightcurves = ctx.adapter.reduce(s.raw, s.target)


def analyze(ctx: Context, s: Source) -> None:
    # as the pool job does: the processed tables, as structured arrays, are what gets written
    result = ctx.analysis.analyze(s.target, s.lightcurves)
    s.tables = [
        Table(hdf5.as_records(a.processed), dict(lc.meta), lc.filter, lc.time_start_mjd, lc.time_end_mjd)
        for lc, a in zip(s.lightcurves, result.lightcurves, strict=True)
    ]


def bin_scores(ctx: Context, s: Source) -> None:
    # as the pool does for the project's score histograms, with the default bins
    from aretriever.engine.score_bins import bin_scores as bin_table
    from aretriever.science.histograms import ScoreHistograms
    from aretriever.settings import HistogramConfig

    histograms = ScoreHistograms(HistogramConfig())
    for t in s.tables:
        bin_table(histograms, t.records, {}, s.target.mag, t.filter)


def raw_image(ctx: Context, s: Source) -> None:
    s.raw_image = build_image(raw_tables(s), STORE.raw_compression)


def reduced_image(ctx: Context, s: Source) -> None:
    s.reduced_image = build_image(reduced_tables(s), STORE.reduced_compression)


def write_bytes(ctx: Context, s: Source) -> None:
    write_image(s.raw_file, s.raw_image)
    write_image(s.reduced_file, s.reduced_image)


def write_reduced_bytes(ctx: Context, s: Source) -> None:
    write_image(s.reduced_file, s.reduced_image)


def write_h5_both(ctx: Context, s: Source) -> None:
    """Today's writer path (image and disk in one call), for comparison with the two above."""
    raw, reduced = s.raw_file.with_suffix(".w.h5"), s.reduced_file.with_suffix(".w.h5")
    hdf5.write_h5(raw, raw_tables(s), compression=STORE.raw_compression)
    hdf5.write_h5(reduced, reduced_tables(s), compression=STORE.reduced_compression)


FETCH_STAGES: dict[str, Stage] = {
    "parse": parse,
    "raw records": raw_records,
    "reduce": reduce,
    "analyze": analyze,
    "bin scores": bin_scores,
    "raw image": raw_image,
    "reduced image": reduced_image,
    "write bytes": write_bytes,
}
REREAD_STAGES: dict[str, Stage] = {
    "read raw": read_raw,
    "reduce": reduce,
    "analyze": analyze,
    "bin scores": bin_scores,
    "reduced image": reduced_image,
    "write bytes": write_reduced_bytes,
}


def timed(ctx: Context, stage: Stage, sources: list[Source]) -> float:
    """Seconds per source of ``stage`` over every source, in order."""
    t0 = time.perf_counter()
    for s in sources:
        stage(ctx, s)
    return (time.perf_counter() - t0) / len(sources)


def make_sources(root: Path, n: int) -> tuple[Context, list[Source]]:
    from aretriever.adapters.ztf import ZtfAdapter
    from aretriever.science.analysis import analysis_for
    from aretriever.settings import AnalysisConfig, ZtfConfig
    from aretriever.testing.fake_archive import DATA_DIR
    from aretriever.testing.ztf_replay import ZtfReplay

    replay, adapter = ZtfReplay.load(DATA_DIR), ZtfAdapter(ZtfConfig())
    targets = [Target(f"S{i:05d}", (i * 7.3) % 360, 40.0 + i % 10) for i in range(n)]
    sources = [
        Source(
            t,
            Fetched(t, replay.answer(t.ra_deg, t.dec_deg, 32768), "u"),
            root / "raw" / f"{t.name}.h5",
            root / "reduced" / f"{t.name}_reduced.h5",
        )
        for t in targets
    ]
    return Context(adapter, analysis_for(AnalysisConfig()), root), sources


def fetch_costs(ctx: Context, sources: list[Source]) -> dict[str, float]:
    """Seconds per source of each stage of a fetched source, rows included."""
    costs = {name: timed(ctx, stage, sources) for name, stage in FETCH_STAGES.items()}
    costs["rows"] = asyncio.run(row_cost(ctx.root, sources, cfg_hash=FIRST_VERSION))
    return costs


def writer_check_cost(ctx: Context, sources: list[Source]) -> float:
    """Seconds per source of today's ``write_h5`` of both files: image + write bytes should match it."""
    return timed(ctx, write_h5_both, sources)


def reread_costs(ctx: Context, sources: list[Source]) -> dict[str, float]:
    """Seconds per source of each stage of a re-analysis (needs the files ``fetch_costs`` wrote)."""
    costs = {name: timed(ctx, stage, sources) for name, stage in REREAD_STAGES.items()}
    costs["rows"] = asyncio.run(row_cost(ctx.root, sources, cfg_hash="second"))
    return costs


async def row_cost(root: Path, sources: list[Source], *, cfg_hash: str) -> float:
    """Seconds per source to write its rows through the row writer (SQLite).

    The first version also writes the source and raw rows; another ``cfg_hash`` (a re-analysis)
    writes only its lightcurve rows, beside the first version's, as the engine does.
    """
    from aretriever.store.db import create_engine, session_factory
    from aretriever.store.schema import migrate
    from aretriever.store.writers import RowWriter

    engine = create_engine(f"sqlite+aiosqlite:///{root}/rows.sqlite")
    await migrate(engine)
    t0 = time.perf_counter()
    async with RowWriter(session_factory(engine)) as writer:
        for s in sources:
            for op in row_ops(s, cfg_hash):
                await writer.put(op)
        await writer.flush()
    elapsed = (time.perf_counter() - t0) / len(sources)
    await engine.dispose()
    return elapsed


def row_ops(s: Source, cfg_hash: str) -> list[Any]:
    from aretriever.store import rows

    t = s.target
    ops = []
    if cfg_hash == FIRST_VERSION:
        ops.append(rows.upsert_sources([rows.source_row(t, "bench")]))
        ops.append(rows.upsert_raw([rows.raw_row(t.name, "ztf", "x", num_rows=1, nbytes=1)]))
    lc_rows = [
        {
            **rows.product_key(t.name, "ztf", "P", cfg_hash),
            "series_number": k + 1,
            "series_total": len(s.tables),
            "simulation_number": 0,
            "filename": "y",
            "filekey": "k",
            "num_rows": len(table.records),
            "nbytes": 1,
            "filter": table.filter,
            "time_start_mjd": table.time_start_mjd,
            "time_end_mjd": table.time_end_mjd,
        }
        for k, table in enumerate(s.tables)
    ]
    ops.append(rows.upsert_lightcurves(lc_rows))
    return ops
