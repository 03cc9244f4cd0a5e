"""A project's histogram file: several processes add without losing counts; nothing counts twice."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

import anyio
import numpy as np
import pandas as pd
import pytest

from aretriever.adapters.base import Target
from aretriever.engine.histogram_file import HistogramFile, lightcurve_digest
from aretriever.engine.histogram_io import histogram_path, load_histograms, load_with_ledger, save_histograms
from aretriever.engine.pool import ReducedTable
from aretriever.engine.score_bins import bin_scores
from aretriever.engine.stages import save_histograms as save_histograms_every
from aretriever.errors import ConfigError
from aretriever.science.histograms import ScoreHistograms
from aretriever.settings import HistogramConfig

POINTS = 37
DTYPE = [("snr", "f8"), ("dmag", "f8"), ("offset", "f8"), ("flagged", "?"), ("exptime", "f8")]


MAG = 17.3


def points(seed: int, n: int = POINTS) -> np.ndarray:
    rng = np.random.default_rng(seed)
    records = np.zeros(n, dtype=DTYPE)
    records["snr"] = rng.normal(0, 3, n)
    records["dmag"] = rng.normal(0, 0.2, n)
    records["offset"] = rng.normal(0, 1, n)
    records["flagged"] = rng.random(n) < 0.2
    records["exptime"] = rng.choice([30.0, 45.0], n)
    return records


def table(seed: int, filter: str = "zg", start: float = 58000.0) -> ReducedTable:
    """An analysed lightcurve as the pool sends it back: its scores binned by the worker."""
    binned = bin_scores(ScoreHistograms(HistogramConfig()), points(seed), {}, MAG, filter)
    return ReducedTable(POINTS, filter, start, start + 100.0, binned=binned)


def seed_of(name: str, i: int) -> int:
    return hash((name, i)) % 2**32


def source(name: str, n: int = 2) -> tuple[Target, list[ReducedTable]]:
    tables = [table(seed_of(name, i), filter=("zg", "zr")[i % 2], start=58000.0 + i) for i in range(n)]
    return Target(name, 10.0, 20.0, mag=MAG), tables


def add(hf: HistogramFile, target: Target, tables: list[ReducedTable], observatory: str = "ztf") -> None:
    anyio.run(hf.add, target, tables, observatory)


def stored(folder: Path) -> ScoreHistograms:
    return load_histograms(histogram_path(folder))


def _writer(folder: str, prefix: str, sources: int) -> None:
    """One process: every source is added and saved on its own (a read-add-write each)."""
    hf = HistogramFile(Path(folder), HistogramConfig())
    for i in range(sources):
        add(hf, *source(f"{prefix}{i}"))
        anyio.run(hf.save)


def test_two_processes_saving_concurrently_keep_every_count(tmp_path: Path) -> None:
    sources = 40
    context = multiprocessing.get_context("forkserver")
    procs = [context.Process(target=_writer, args=(str(tmp_path), p, sources)) for p in ("A", "B")]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(timeout=300)
        assert proc.exitcode == 0
    histograms, ledger = load_with_ledger(histogram_path(tmp_path))
    assert histograms.n_points() == 2 * sources * 2 * POINTS  # 2 processes x sources x 2 lightcurves
    assert len(ledger) == 2 * sources * 2 and np.all(np.diff(ledger.astype(np.float64)) > 0)


def test_a_source_analysed_again_is_counted_once(tmp_path: Path) -> None:
    target, tables = source("WDJ000006.33+512226.63")
    first = HistogramFile(tmp_path, HistogramConfig(), "abc")
    add(first, target, tables)
    add(first, target, tables)  # twice in one interval
    anyio.run(first.save)
    once = stored(tmp_path)
    assert once.n_points() == 2 * POINTS

    # a later run (its reduced file was deleted, or the database rebuilt): the same lightcurves
    again = HistogramFile(tmp_path, HistogramConfig(), "abc")
    add(again, target, [table(hash((target.name, i)) % 2**32, ("zg", "zr")[i % 2], 58000.0 + i) for i in range(2)])
    anyio.run(again.save)
    assert stored(tmp_path) == once

    # new lightcurves count: another config hash, another observatory, a changed time span
    other = HistogramFile(tmp_path, HistogramConfig(), "def")
    add(other, target, tables[:1])
    add(other, target, tables[:1], observatory="tess")
    anyio.run(other.save)
    assert stored(tmp_path).n_points() == 4 * POINTS


def test_two_runs_holding_the_same_lightcurve_count_it_once(tmp_path: Path) -> None:
    target, tables = source("S1")
    a, b = HistogramFile(tmp_path, HistogramConfig()), HistogramFile(tmp_path, HistogramConfig())
    add(a, target, tables)
    add(b, target, tables)  # analysed by two processes before either saved
    add(b, *source("S2"))
    anyio.run(a.save)
    anyio.run(b.save)
    assert stored(tmp_path).n_points() == 4 * POINTS  # S1 once, S2 once


def test_counts_equal_those_of_add_and_a_file_without_ledger_is_read(tmp_path: Path) -> None:
    target, tables = source("S1", n=3)
    direct = ScoreHistograms()
    for i, t in enumerate(tables):
        records = points(seed_of("S1", i))  # the points the worker binned
        direct.add(
            pd.DataFrame({c: records[c] for c in ("snr", "dmag", "offset", "flagged")}),
            target.mag,
            records["exptime"],
            t.filter,
        )
    save_histograms(histogram_path(tmp_path), direct)  # an older file: counts, no ledger
    hf = HistogramFile(tmp_path, HistogramConfig())
    add(hf, target, tables)
    anyio.run(hf.save)
    assert stored(tmp_path) == direct + direct


def test_a_table_the_worker_did_not_bin_is_not_counted(tmp_path: Path) -> None:
    target, tables = source("S1")
    hf = HistogramFile(tmp_path, HistogramConfig())
    add(hf, target, [ReducedTable(POINTS, "zg", 58000.0, 58100.0), *tables[1:]])  # not analysed
    anyio.run(hf.save)
    assert stored(tmp_path).n_points() == POINTS


def test_digest_separates_hostile_names_and_is_stable() -> None:
    t = table(1)
    names = ["a", "a\x00", "a\udcff", "Ωmega", '"a", 1', "a" * 10_000]
    digests = {lightcurve_digest("ztf", n, 1, 1, t, "") for n in names}
    assert len(digests) == len(names)
    assert lightcurve_digest("ztf", "a", 1, 2, t, "h") == lightcurve_digest("ztf", "a", 1, 2, table(2), "h")
    assert lightcurve_digest("ztf", "a", 1, 2, t, "h") != lightcurve_digest("ztf", "a", 2, 2, t, "h")


def test_other_bins_are_refused(tmp_path: Path) -> None:
    save_histograms(histogram_path(tmp_path), ScoreHistograms(HistogramConfig(snr_bins=[-10, 10, 1])))
    with pytest.raises(ConfigError, match="snr_bins"):
        HistogramFile(tmp_path, HistogramConfig())


def test_the_saver_saves_as_soon_as_max_pending_lightcurves_wait(tmp_path: Path) -> None:
    """Bins wait in memory until saved: a full buffer is saved at once, not after the interval."""
    saved = anyio.Event()

    class Watched(HistogramFile):
        async def save(self) -> None:
            await super().save()
            saved.set()

    hf = Watched(tmp_path, HistogramConfig(), max_pending=4)

    async def run() -> None:
        async with anyio.create_task_group() as tg:
            # an interval no test lasts: only a full buffer can make it save
            tg.start_soon(save_histograms_every, hf, 3600.0)
            await hf.add(*source("A"), "ztf")  # 2 lightcurves: not yet due
            await hf.add(*source("B"), "ztf")  # 4: due
            await saved.wait()
            tg.cancel_scope.cancel()

    anyio.run(run)
    assert load_histograms(histogram_path(tmp_path)).n_points() == 4 * POINTS


def test_a_buffer_below_max_pending_waits_for_the_interval(tmp_path: Path) -> None:
    hf = HistogramFile(tmp_path, HistogramConfig(), max_pending=4)

    async def run() -> bool:
        await hf.add(*source("A"), "ztf")
        with anyio.move_on_after(0) as scope:
            await hf.wait_due(3600.0)
        return scope.cancelled_caught

    assert anyio.run(run)  # still waiting: 2 lightcurves are below the bound
