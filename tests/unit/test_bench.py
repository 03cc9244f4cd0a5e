"""The benchmark's helpers (``scripts/bench.py``, ``scripts/bench_stages.py``): targets, the summary
over repeats, the disk and payload counts, the stage chain. No figure is checked: speed is not a
test's business."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import h5py
import pytest

from aretriever.store import hdf5

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))

import bench
import bench_stages


@pytest.mark.parametrize(
    ("op", "bound", "value", "met"),
    [
        (">=", 1.5, 1.5, True),
        (">=", 1.5, 1.49, False),
        ("<=", 300, 299.9, True),
        ("<=", 0.05, 0.051, False),
        ("==", 0, 0, True),
        ("==", 0, 1, False),
    ],
)
def test_goal_met(op: str, bound: float, value: float, met: bool) -> None:
    assert bench.Goal(op, bound).met(value) is met


def test_summary_gives_min_median_max_and_judges_the_median(capsys: pytest.CaptureFixture[str]) -> None:
    figures = bench.Figures()
    for value, load in ((2.0, 0.5), (1.0, 3.25), (1.6, 1.0)):
        figures.record("ratio", value, "", load, bench.Goal(">=", 1.5))
    printed = capsys.readouterr().out.splitlines()
    assert len(printed) == 3 and "load 3.25" in printed[1] and "NOT met" in printed[1]
    (line,) = figures.summary()
    assert "1 / 1.6 / 2" in line and "target >= 1.5 met" in line and "load 0.5-3.2" in line


def _touch(path: Path, size: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x" * size)


def test_disk_bytes_counts_raw_and_reduced_files_only(tmp_path: Path) -> None:
    _touch(tmp_path / "ZTF" / "RA001" / "ZTF_photometry_A.h5", 100)
    _touch(tmp_path / "ZTF" / "RA002" / "ZTF_photometry_B.h5", 50)
    _touch(tmp_path / "BENCH_abc" / "RA001" / "ZTF_photometry_A_reduced.h5", 30)
    _touch(tmp_path / "BENCH_abc" / "score_histograms.h5", 1000)  # a project's, not a source's
    _touch(tmp_path / "aretriever.sqlite", 1000)
    _touch(tmp_path / "ZTF" / "RA001" / ".ZTF_photometry_C.h5.tok.1.tmp", 1000)
    assert bench.disk_bytes(tmp_path) == (150, 30)


def test_payload_is_what_the_fake_archive_serves_for_the_test_catalog() -> None:
    from aretriever.testing.fake_archive import DATA_DIR
    from aretriever.testing.ztf_replay import ZtfReplay, recorded_irsa_csv

    one, three = bench.payload_bytes(1), bench.payload_bytes(3)
    recorded = len(recorded_irsa_csv(DATA_DIR))
    # moved positions change only the digits of ra/dec: within a few bytes a row of the recording
    rows = ZtfReplay.load(DATA_DIR).answer(10.0, 40.0, 32768).count(b"\n")
    assert abs(one - recorded) < 8 * rows and 2.5 * one < three < 3.5 * one


def _run(**ztf: Any) -> bench.Run:
    lane = {"requests": 0, "reduced": 4, "fetched": 0, **ztf}
    return bench.Run(1.0, 100.0, 0.5, {"observatories": {"ztf": lane}})


@pytest.mark.parametrize("bad", [{"requests": 1}, {"reduced": 3, "skipped": 1}])
def test_a_reanalysis_with_requests_or_skips_fails_loudly(bad: dict[str, int]) -> None:
    with pytest.raises(SystemExit, match="re-analysis must reduce all 4 sources with 0 requests"):
        bench.reanalysis(bench.Figures(), 4, _run(**bad), bench.Ceilings(0.05, 0.04))


def test_a_clean_reanalysis_is_recorded(capsys: pytest.CaptureFixture[str]) -> None:
    figures = bench.Figures()
    bench.reanalysis(figures, 4, _run(), bench.Ceilings(0.05, 0.04))
    assert figures.figures["re-analysis (4 sources)"].values == [4.0]
    assert "ideal 25.0 on 1 core" in capsys.readouterr().out


def test_every_stage_runs_on_the_replayed_star_and_leaves_readable_files(tmp_path: Path) -> None:
    ctx, sources = bench_stages.make_sources(tmp_path, 2)
    fetch = bench_stages.fetch_costs(ctx, sources)
    assert set(fetch) == {*bench_stages.FETCH_STAGES, "rows"}
    s = sources[0]
    assert s.tables and hdf5.verify_h5(s.raw_file) and hdf5.verify_h5(s.reduced_file)
    with h5py.File(s.reduced_file, "r") as h5:
        assert len(h5.keys()) == len(s.tables)
    assert set(bench_stages.reread_costs(ctx, sources)) == {*bench_stages.REREAD_STAGES, "rows"}
    assert len(s.raw) == len(s.raw_records)  # the re-read table is the one written
