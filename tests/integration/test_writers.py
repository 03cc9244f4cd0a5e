"""The writer tasks: files on disk in the documented layout, serialized HDF5 writes, row batching."""

from __future__ import annotations

import asyncio
import itertools
import random
import threading
import time
from pathlib import Path
from typing import Any

import h5py
import pandas as pd
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from aretriever.errors import StoreError, WriteError
from aretriever.store import hdf5, paths
from aretriever.store.models import Failure, Lightcurve, RawPhotometry, Source
from aretriever.store.ops import Step, commutes, plan
from aretriever.store.writers import Delete, FileWriter, Op, Replace, RowWriter, Upsert

Sessions = async_sessionmaker[AsyncSession]
NAME = "WDJ000006.33+512226.63"
RA_DEG = 0.0264


@pytest.fixture
def ztf(ztf_csv: Path) -> pd.DataFrame:
    return pd.read_csv(ztf_csv)


def _names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


# ------------------------------------------------------------------------------------- layout


async def test_raw_and_reduced_files_follow_the_layout(data_root: Path, ztf: pd.DataFrame) -> None:
    raw_rel = paths.raw_relpath("ztf", NAME, RA_DEG)
    folder = paths.product_folder("test_project", None)
    reduced_rel = paths.reduced_relpath(folder, "ztf", NAME, RA_DEG)
    by_filter = [ztf[ztf["filtercode"] == band] for band in ("zg", "zr")]
    reduced = {
        paths.reduction_key(NAME, n, 2): (lc.reset_index(drop=True), {"filter": lc["filtercode"].iloc[0]})
        for n, lc in enumerate(by_filter, start=1)
    }
    async with FileWriter() as files:
        raw_bytes = await files.write(data_root / raw_rel, {paths.raw_key(NAME): (ztf, {"url": "u"})})
        reduced_bytes = await files.write(data_root / reduced_rel, reduced)
    assert raw_rel == f"ZTF/RA000/ZTF_photometry_{NAME}.h5"
    assert reduced_rel == f"TEST_PROJECT/RA000/ZTF_photometry_{NAME}_reduced.h5"
    assert files.written == 2 and files.bytes_written == raw_bytes + reduced_bytes
    with h5py.File(data_root / raw_rel, "r") as h5:
        assert list(h5) == [NAME]
        raw = pd.DataFrame(h5[NAME][:])
    assert len(raw) == len(ztf) and list(raw.columns) == list(ztf.columns)
    assert (raw["mag"].to_numpy() == ztf["mag"].to_numpy()).all()
    with h5py.File(data_root / reduced_rel, "r") as h5:
        assert list(h5) == [f"{NAME}_reduction_01_of_02", f"{NAME}_reduction_02_of_02"]
        first = pd.DataFrame(h5[f"{NAME}_reduction_01_of_02"][:])
        assert h5[f"{NAME}_reduction_02_of_02"].attrs["filter"] == "zr"
    assert set(first["filtercode"]) == {b"zg"}
    assert _names(data_root / "ZTF" / "RA000") == [Path(raw_rel).name]


# ---------------------------------------------------------------------------------- file writer


async def test_file_writer_serializes_jobs_in_one_thread(tmp_path: Path, ztf: pd.DataFrame) -> None:
    spans: list[tuple[float, float, int]] = []

    def job(n: int) -> int:
        start = time.perf_counter()
        hdf5.write_h5(tmp_path / f"{n}.h5", {"k": (ztf.iloc[: 100 * (n + 1)], {"n": n})})
        spans.append((start, time.perf_counter(), threading.get_ident()))
        return n

    async with FileWriter(queue_size=4) as files:
        results = await asyncio.gather(*(files.run(job, n) for n in range(12)))
        writes = await asyncio.gather(
            *(files.write(tmp_path / f"w{n}.h5", {"k": (ztf.iloc[:50], {})}) for n in range(4))
        )
    assert results == list(range(12))
    assert len(set(writes)) == 1 and files.written == 4
    assert len({ident for _, _, ident in spans}) == 1
    assert threading.get_ident() not in {ident for _, _, ident in spans}
    ordered = sorted(spans)
    assert all(prev[1] <= nxt[0] for prev, nxt in itertools.pairwise(ordered))
    assert files.pending == 0


async def test_file_writer_survives_a_failed_job(tmp_path: Path, ztf: pd.DataFrame) -> None:
    bad = pd.DataFrame({"t": pd.to_datetime(["2020-01-01"])})
    async with FileWriter() as files:
        with pytest.raises(WriteError, match=r"bad\.h5"):
            await files.write(tmp_path / "bad.h5", {"k": (bad, {})})
        assert await files.write(tmp_path / "good.h5", {"k": (ztf, {})}) > 0
        assert await files.run(hdf5.verify_h5, tmp_path / "good.h5") is True
    assert _names(tmp_path) == ["good.h5"]
    assert files.written == 1


async def test_file_writer_writes_images_as_they_are_and_compresses_as_configured(
    tmp_path: Path, ztf: pd.DataFrame
) -> None:
    image = hdf5.build_h5_image({"k": (ztf, {"n": 1})}, "lzf")
    async with FileWriter(compression="none") as files:
        assert await files.write_image(tmp_path / "a" / "image.h5", image) == len(image)
        await files.write(tmp_path / "built.h5", {"k": (ztf, {})})
        with pytest.raises(WriteError, match=r"blocked\.h5"):
            (tmp_path / "blocked.h5").mkdir()  # a folder where the file should go
            await files.write_image(tmp_path / "blocked.h5", image)
    assert (tmp_path / "a" / "image.h5").read_bytes() == image
    assert files.written == 2 and files.bytes_written == len(image) + (tmp_path / "built.h5").stat().st_size
    with h5py.File(tmp_path / "built.h5") as h5:
        assert h5["k"].compression is None
    assert _names(tmp_path) == ["a", "blocked.h5", "built.h5"]  # no temporary left behind


async def test_file_writer_drains_on_exit_and_refuses_later_writes(tmp_path: Path, ztf: pd.DataFrame) -> None:
    async with FileWriter() as files:
        pending = [
            asyncio.ensure_future(files.write(tmp_path / f"{n}.h5", {"k": (ztf, {})})) for n in range(5)
        ]
        await asyncio.sleep(0)  # the writes are queued, not done
        assert files.pending == 5
    assert all(p.done() and p.result() > 0 for p in pending)
    assert len(_names(tmp_path)) == 5
    with pytest.raises(StoreError, match="closed"):
        await files.write(tmp_path / "late.h5", {"k": (ztf, {})})


async def test_a_dead_file_writer_fails_pending_and_later_writes(tmp_path: Path, ztf: pd.DataFrame) -> None:
    release = threading.Event()
    files = FileWriter()
    async with files:
        blocker = asyncio.ensure_future(files.run(release.wait, 5))
        queued = asyncio.ensure_future(files.write(tmp_path / "q.h5", {"k": (ztf, {})}))
        await asyncio.sleep(0.001)
        files.task.cancel()
        with pytest.raises(StoreError, match="cancelled"):
            await queued
        with pytest.raises(StoreError):
            await blocker
        with pytest.raises(StoreError, match="closed or has stopped"):
            await files.write(tmp_path / "later.h5", {"k": (ztf, {})})
        release.set()
    assert not (tmp_path / "q.h5").exists()


# ------------------------------------------------------------------------------ batch planning


def _src(i: int, **extra: Any) -> dict[str, Any]:
    return {"name": f"S{i}", "ra_deg": float(i), "dec_deg": 1.0, **extra}


def _raw(i: int, **extra: Any) -> dict[str, Any]:
    return {"source_name": f"S{i}", "observatory": "ztf", "status": "ok", **extra}


def _lcs(i: int, total: int, **extra: Any) -> list[dict[str, Any]]:
    return [
        {"source_name": f"S{i}", "observatory": "ztf", "project": "p", "cfg_hash": "", "series_number": n,
         "series_total": total, **extra}
        for n in range(1, total + 1)
    ]  # fmt: skip


LC_WHERE = ("source_name", "observatory", "project", "cfg_hash")
LC_KEYS = (*LC_WHERE, "series_number", "simulation_number")


def _replace_lcs(i: int, total: int, **extra: Any) -> Replace:
    where = {"source_name": f"S{i}", "observatory": "ztf", "project": "p", "cfg_hash": ""}
    return Replace(Lightcurve, where, _lcs(i, total, **extra))


def _failure(i: int) -> dict[str, Any]:
    return {"source_name": f"S{i}", "observatory": "", "stage": "fetch", "reason": "503", "attempts": 1}


def _summary(steps: list[Step]) -> list[tuple[str, str, int]]:
    return [(s.kind, s.table.name, len(s.rows)) for s in steps]


def test_plan_merges_interleaved_ops_into_few_statements() -> None:
    ops: list[Op] = []
    for i in range(5):
        ops += [
            Upsert(Source, [_src(i)], keys=("name",)),
            Upsert(RawPhotometry, [_raw(i)], keys=("source_name", "observatory")),
            _replace_lcs(i, 3),
            Upsert(Failure, [_failure(i)], keys=("source_name", "observatory", "stage")),
        ]
    assert _summary(plan(ops)) == [
        ("upsert", "sources", 5),
        ("upsert", "raw_photometry", 5),
        ("delete", "lightcurves", 5),
        ("insert", "lightcurves", 15),
        ("upsert", "failures", 5),
    ]


def test_plan_keeps_the_order_that_matters() -> None:
    ops: list[Op] = [
        Upsert(RawPhotometry, [_raw(0)], keys=("source_name", "observatory")),
        Upsert(Source, [_src(1)], keys=("name",)),
        Upsert(RawPhotometry, [_raw(1)], keys=("source_name", "observatory")),  # needs S1 first
        _replace_lcs(2, 2),
        _replace_lcs(2, 1),  # its delete hits the rows just inserted
        Upsert(Source, [_src(3)], keys=("name",)),
        Delete(Source, {"name": "S3"}),
        Upsert(Source, [_src(3)], keys=("name",)),  # must not join the first upsert of S3
    ]
    assert _summary(plan(ops)) == [
        ("upsert", "raw_photometry", 1),
        ("upsert", "sources", 2),
        ("upsert", "raw_photometry", 1),
        ("delete", "lightcurves", 1),
        ("insert", "lightcurves", 2),
        ("delete", "lightcurves", 1),
        ("insert", "lightcurves", 1),
        ("delete", "sources", 1),
        ("upsert", "sources", 1),
    ]


def test_commutes_follows_foreign_keys() -> None:
    source = plan([Upsert(Source, [_src(1)], keys=("name",))])[0]
    raw = plan([Upsert(RawPhotometry, [_raw(1)], keys=("source_name", "observatory"))])[0]
    delete_source = plan([Delete(Source, {"name": "S1"})])[0]
    delete_raw = plan([Delete(RawPhotometry, {"source_name": "S1"})])[0]
    failure = plan([Upsert(Failure, [{"source_name": "S1"}], keys=("source_name",))])[0]
    assert commutes(raw, source)  # a parent row may be written earlier
    assert not commutes(source, raw)  # a child row may not
    assert not commutes(delete_source, raw)  # the delete would have cascaded to it
    assert not commutes(raw, delete_source)
    assert commutes(delete_raw, source) and commutes(delete_source, delete_raw)
    assert commutes(source, failure) and commutes(delete_source, failure)


# ------------------------------------------------------------------------------------ row writer


def _random_ops(seed: int) -> list[Op]:
    rng = random.Random(seed)
    ops: list[Op] = []
    for _ in range(300):
        i = rng.randrange(12)
        kind = rng.random()
        if kind < 0.3:
            ops.append(Upsert(Source, [_src(i, mag=rng.random())], keys=("name",)))
        elif kind < 0.45:
            raw = _raw(i, num_rows=rng.randrange(99))
            ops += [_ensure_source(i), Upsert(RawPhotometry, [raw], keys=("source_name", "observatory"))]
        elif kind < 0.7:
            ops += [_ensure_source(i), _replace_lcs(i, rng.randrange(1, 5), mag_mean=rng.random())]
        elif kind < 0.8:
            ops.append(Delete(Source, {"name": f"S{i}"}))
        elif kind < 0.9:
            ops.append(Delete(Lightcurve, {"source_name": f"S{i}", "series_number": 1}))
        else:
            keys = ("source_name", "observatory", "stage")
            ops.append(Upsert(Failure, [_failure(i)], keys=keys, add=("attempts",)))
    return ops


def _ensure_source(i: int) -> Upsert:
    return Upsert(Source, [_src(i)], keys=("name",), update=())


async def _state(sessions: Sessions) -> dict[str, list[tuple[Any, ...]]]:
    skip = {"id", "raw_id", "created_at", "updated_at", "fetched_at", "first_at", "last_at"}
    state = {}
    async with sessions() as session:
        for model in (Source, RawPhotometry, Lightcurve, Failure):
            table = model.__table__
            columns = [c for c in table.columns if c.name not in skip]
            rows = (await session.execute(sa.select(*columns))).all()
            state[table.name] = sorted(tuple(r) for r in rows)
    return state


async def _clear(sessions: Sessions) -> None:
    async with sessions() as session, session.begin():
        await session.execute(sa.delete(Source))
        await session.execute(sa.delete(Failure))


async def test_batched_reordered_writes_equal_one_by_one_writes(sessions: Sessions) -> None:
    ops = _random_ops(seed=7)
    async with RowWriter(sessions, batch_rows=1) as writer:  # one op per transaction: no merging
        for op in ops:
            await writer.put(op)
        await writer.flush()
    assert writer.failed_ops == 0
    expected = await _state(sessions)
    assert sum(map(len, expected.values())) > 30
    await _clear(sessions)
    async with RowWriter(sessions, batch_rows=10_000, batch_ms=10_000) as writer:
        futures = [writer.submit(op) for op in ops]
        await writer.flush()
        await asyncio.gather(*futures)
    assert writer.batches == 1 and writer.failed_ops == 0
    assert await _state(sessions) == expected


async def test_flush_cuts_the_batch_wait_and_counters_track_progress(sessions: Sessions) -> None:
    async with RowWriter(sessions, batch_rows=1000, batch_ms=60_000) as writer:
        future = writer.submit(Upsert(Source, [_src(1)], keys=("name",)))
        await asyncio.sleep(0.005)
        assert not future.done()  # waiting for more ops to fill the batch
        assert writer.pending == 1 and writer.lag_s >= 0.004
        started = time.perf_counter()
        await writer.flush()
        assert time.perf_counter() - started < 5
        assert future.done() and future.result() is None
        assert (writer.pending, writer.lag_s, writer.committed_rows, writer.batches) == (0, 0.0, 1, 1)


async def test_submit_refuses_when_full_and_put_waits(sessions: Sessions) -> None:
    async with RowWriter(sessions, queue_size=2, batch_ms=1) as writer:
        first = writer.submit(Upsert(Source, [_src(1)], keys=("name",)))
        second = writer.submit(Upsert(Source, [_src(2)], keys=("name",)))
        with pytest.raises(StoreError, match="full"):
            writer.submit(Upsert(Source, [_src(3)], keys=("name",)))
        third = await writer.put(Upsert(Source, [_src(3)], keys=("name",)))
        await asyncio.gather(first, second, third)
    with pytest.raises(StoreError, match="closed"):
        writer.submit(Upsert(Source, [_src(4)], keys=("name",)))


def test_ops_refuse_to_touch_every_row() -> None:
    with pytest.raises(ValueError, match="every row"):
        Delete(Source, {})
    with pytest.raises(ValueError, match="every row"):
        Replace(Lightcurve, {}, [])
    with pytest.raises(ValueError, match="keys"):
        Upsert(Source, [], keys=())
