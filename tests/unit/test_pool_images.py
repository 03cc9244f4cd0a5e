"""The pool builds the files: raw and reduced HDF5 images, and the histogram bins, per source."""

from __future__ import annotations

import pickle

import pytest

from aretriever.adapters.base import Fetched, Target
from aretriever.adapters.ztf import ZtfAdapter
from aretriever.engine.pool import CpuJob, CpuResult, run_job
from aretriever.engine.score_bins import bin_scores
from aretriever.science.histograms import ScoreHistograms
from aretriever.settings import AnalysisConfig, HistogramConfig, ZtfConfig
from aretriever.store import paths
from aretriever.store.hdf5 import COMPRESSIONS, Compression, read_image
from aretriever.testing.fake_archive import FakeArchive, Faults

STAR = Target("WD recorded", 200.0, 30.0, mag=20.3)
ATTRS = {"source_name": STAR.name, "fetched_at": "2026-01-01T00:00:00+00:00", "archive": {"n": 1}}


@pytest.fixture(scope="module")
def fetched() -> Fetched:
    """IRSA's recorded answer for a real star (429 KB), as the fake archive replays it."""
    return Fetched(STAR, FakeArchive(Faults()).ztf.answer(STAR.ra_deg, STAR.dec_deg, 32768), "recorded")


def _job(fetched: Fetched, compression: Compression = "gzip", reduced: Compression = "none") -> CpuJob:
    return CpuJob(
        ZtfAdapter(ZtfConfig()),
        STAR,
        fetched,
        analysis=AnalysisConfig(),
        raw_attrs=ATTRS,
        raw_compression=compression,
        reduced_compression=reduced,
        histograms=HistogramConfig(),
    )


@pytest.fixture(scope="module")
def result(fetched: Fetched) -> CpuResult:
    # through pickle both ways, as to and from a worker process
    return pickle.loads(pickle.dumps(run_job(pickle.loads(pickle.dumps(_job(fetched))))))


def test_the_raw_image_holds_the_parsed_table_and_the_attrs_given(
    fetched: Fetched, result: CpuResult
) -> None:
    assert result.raw_image is not None
    table, meta = read_image(result.raw_image, paths.raw_key(STAR.name))
    assert len(table) == result.num_raw_rows > 1000
    assert meta == ATTRS  # fetched_at is the event loop's, not stamped in the worker


def test_the_reduced_image_holds_every_lightcurve_with_its_scores(result: CpuResult) -> None:
    assert result.reduced_image is not None
    total = len(result.lightcurves)
    histograms = ScoreHistograms(HistogramConfig())
    for number, lc in enumerate(result.lightcurves, start=1):
        table, meta = read_image(result.reduced_image, paths.reduction_key(STAR.name, number, total))
        assert len(table) == lc.num_rows and meta == {**lc.meta, "filter": lc.filter}
        # what the event loop counts is what the file holds
        records = table.to_records(index=False)
        expected = bin_scores(histograms, records, lc.stats, STAR.mag, lc.filter)
        assert lc.binned is not None and expected is not None
        assert lc.binned.slots.keys() == expected.slots.keys()
        for score, slots in expected.slots.items():
            assert (lc.binned.slots[score] == slots).all()


def test_without_histograms_or_reduction_less_comes_back(fetched: Fetched) -> None:
    job = _job(fetched)
    unbinned = run_job(CpuJob(job.adapter, STAR, fetched, analysis=AnalysisConfig(), raw_attrs=ATTRS))
    assert unbinned.lightcurves and all(lc.binned is None for lc in unbinned.lightcurves)
    raw_only = run_job(CpuJob(job.adapter, STAR, fetched, reduce=False, raw_attrs=ATTRS))
    assert raw_only.raw_image is not None and raw_only.reduced_image is None and raw_only.lightcurves == []


def test_a_source_takes_at_most_one_and_a_half_times_its_archive_answer_on_disk(
    fetched: Fetched, result: CpuResult
) -> None:
    assert fetched.body is not None and result.raw_image is not None and result.reduced_image is not None
    on_disk = len(result.raw_image) + len(result.reduced_image)
    assert on_disk <= 1.5 * len(fetched.body), on_disk / len(fetched.body)


@pytest.mark.parametrize("compression", [c for c in COMPRESSIONS if c != "gzip"])
def test_other_compressions_store_the_same_tables(
    fetched: Fetched, result: CpuResult, compression: Compression
) -> None:
    other = run_job(_job(fetched, compression, compression))
    assert other.raw_image is not None and result.raw_image is not None
    key = paths.raw_key(STAR.name)
    a, _ = read_image(other.raw_image, key)
    b, _ = read_image(result.raw_image, key)
    assert a.equals(b)
    if compression == "none":  # what compressing the raw file saves on this star
        assert other.reduced_image is not None and len(other.raw_image) + len(
            other.reduced_image
        ) > 1.5 * len(fetched.body or b"")
