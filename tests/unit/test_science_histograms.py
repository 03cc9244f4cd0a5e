"""Score histograms: merging two halves gives the whole, good vs all, slots, files, speed."""

from __future__ import annotations

import pickle
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from aretriever.engine.histogram_io import histogram_path, load_histograms, save_histograms
from aretriever.errors import ConfigError, StoreError, WriteError
from aretriever.science.binning import slot_of as _slots
from aretriever.science.histograms import (
    KINDS,
    SCORES,
    HistogramError,
    ScoreHistograms,
    make_edges,
)
from aretriever.settings import HistogramConfig

ZP = 23.9
OFFSET_THRESHOLD = 3.5
CATALOG_MAG = {"zg": 20.1, "zr": 20.3, "zi": None}  # zi: a source without a catalog mag


def _scaled_mad(x: np.ndarray) -> float:
    return float(1.4826 * np.nanmedian(np.abs(x - np.nanmedian(x))))


def _scores(lc: pd.DataFrame) -> pd.DataFrame:
    """snr, dmag, offset and flagged of one single-filter lightcurve, with plain numpy."""
    mag = lc["mag"].to_numpy(dtype=float)
    flux = 10 ** (-0.4 * (mag - ZP))
    fluxerr = flux * lc["magerr"].to_numpy(dtype=float) * np.log(10) / 2.5
    snr = flux / np.maximum(fluxerr, _scaled_mad(flux))
    dec = lc["dec"].to_numpy(dtype=float)
    dra = ((lc["ra"].to_numpy(dtype=float) - np.median(lc["ra"]) + 180) % 360 - 180) * np.cos(np.radians(dec))
    ddec = dec - np.median(dec)
    offset = np.hypot(dra / _scaled_mad(dra), ddec / _scaled_mad(ddec))
    flagged = (lc["catflags"].to_numpy() != 0) | (np.abs(offset) > OFFSET_THRESHOLD)
    return pd.DataFrame({"snr": snr, "dmag": mag - np.median(mag), "offset": offset, "flagged": flagged})


@pytest.fixture
def ztf(ztf_csv: Path) -> pd.DataFrame:
    """The real ZTF lightcurve with each filter's scores (computed over that whole filter)."""
    raw = pd.read_csv(ztf_csv).drop(columns=["snr"])  # the recorded file carries the seed's own snr
    parts = [
        _scores(raw[raw["filtercode"] == code]).set_index(raw.index[raw["filtercode"] == code])
        for code in sorted(raw["filtercode"].unique())
    ]
    return raw.join(pd.concat(parts))


def _fill(hist: ScoreHistograms, rows: pd.DataFrame) -> ScoreHistograms:
    for code, part in rows.groupby("filtercode"):
        hist.add(
            part[["snr", "dmag", "offset"]],
            CATALOG_MAG[str(code)],
            part["exptime"].to_numpy(),
            str(code),
            good=~part["flagged"].to_numpy(),
        )
    return hist


def test_two_halves_merge_to_the_whole(ztf: pd.DataFrame) -> None:
    half = len(ztf) // 2
    first, second = ztf.iloc[:half], ztf.iloc[half:]
    assert set(first["filtercode"]) != set(second["filtercode"])  # the halves' categories differ
    whole = _fill(ScoreHistograms(), ztf)
    merged = _fill(ScoreHistograms(), first) + _fill(ScoreHistograms(), second)

    assert merged == whole
    assert merged.filters == whole.filters == ["zg", "zi", "zr"]
    assert merged.exptimes_s == whole.exptimes_s == [30.0, 120.0, 180.0, 300.0]
    for score in SCORES:
        for kind in KINDS:
            np.testing.assert_array_equal(merged.counts(score, kind), whole.counts(score, kind))
    assert whole.n_points("all") == len(ztf) == 1852
    assert whole.n_points("good") == int((~ztf["flagged"]).sum())


def test_good_is_the_unflagged_subset(ztf: pd.DataFrame) -> None:
    hist = _fill(ScoreHistograms(), ztf)
    n_flagged = int(ztf["flagged"].sum())
    assert n_flagged >= 51  # the real file has 51 points with catflags != 0
    assert hist.n_points("good") == len(ztf) - n_flagged
    assert not np.array_equal(hist.counts("snr", "all"), hist.counts("snr", "good"))
    assert np.all(hist.counts("dmag", "good") <= hist.counts("dmag", "all"))
    # exactly the flagged points make the difference
    flagged_only = _fill(ScoreHistograms(), ztf.assign(flagged=~ztf["flagged"]))
    np.testing.assert_array_equal(
        hist.counts("snr", "all") - hist.counts("snr", "good"), flagged_only.counts("snr", "good")
    )


def test_good_defaults_to_the_flagged_column_then_to_every_point(ztf: pd.DataFrame) -> None:
    zr = ztf[ztf["filtercode"] == "zr"]
    from_column, every = ScoreHistograms(), ScoreHistograms()
    from_column.add(zr, 20.3, zr["exptime"], "zr")  # a whole processed frame; exptime as a Series
    every.add(zr[["snr", "dmag", "offset"]], 20.3, zr["exptime"].to_list(), "zr")
    assert from_column.n_points("good") == int((~zr["flagged"]).sum()) < len(zr)
    assert every.n_points("good") == every.n_points("all") == len(zr)
    np.testing.assert_array_equal(from_column.counts("snr", "all"), every.counts("snr", "all"))


def test_a_single_cell_holds_the_scores_of_one_lightcurve(ztf: pd.DataFrame) -> None:
    zg = ztf[(ztf["filtercode"] == "zg") & (ztf["exptime"] == 30)]
    hist = ScoreHistograms()
    hist.add(zg, 20.1, 30.0, "zg", good=~zg["flagged"].to_numpy())
    counts = hist.counts("dmag")
    assert counts.shape == (1, 1, 12 + 3, 60 + 3)
    mag_slot = 2 + 10  # 20.1 is in [20.0, 20.5), the 11th bin of [15, 21, 0.5]
    assert counts.sum() == counts[0, 0, mag_slot].sum() == len(zg)
    expected, _ = np.histogram(zg["dmag"], bins=make_edges([-3.0, 3.0, 0.1], "dmag_bins"))
    np.testing.assert_array_equal(counts[0, 0, mag_slot, 2:-1], expected)  # nothing at ±3 exactly


def test_overflow_underflow_and_nan_are_counted() -> None:
    cfg = HistogramConfig(
        snr_bins=[-1, 1, 0.5], dmag_bins=[0, 1, 1], offset_bins=[0, 2, 1], mag_bins=[15, 21, 0.5]
    )
    scores = pd.DataFrame(
        {
            "snr": [-5.0, -1.0, -0.6, 0.0, 0.99, 1.0, 7.0, np.inf, -np.inf, np.nan],
            "dmag": [0.5] * 9 + [np.nan],
            "offset": [np.nan] * 10,
        }
    )
    hist = ScoreHistograms(cfg)
    hist.add(scores, None, 30.04, "zg")
    # slots: nan, underflow, [-1,-0.5), [-0.5,0), [0,0.5), [0.5,1), overflow
    np.testing.assert_array_equal(hist.score_counts("snr"), [1, 2, 2, 0, 1, 1, 3])
    np.testing.assert_array_equal(hist.score_counts("dmag"), [1, 0, 9, 0])
    np.testing.assert_array_equal(hist.score_counts("offset"), [10, 0, 0, 0, 0])
    assert hist.counts("snr")[0, 0, 0].sum() == 10  # unknown source mag: slot 0
    assert hist.exptimes_s == [30.0]

    frame = hist.to_frame("snr")
    assert frame["count"].sum() == 10
    over = frame[frame["score_high"] == np.inf]
    assert over["count"].tolist() == [3] and over["score_low"].tolist() == [1.0]
    assert int(frame.loc[frame["score_low"].isna(), "count"].sum()) == 1


def test_source_mag_out_of_range_and_exptime_categories() -> None:
    scores = pd.DataFrame({"snr": [1.0, 2.0], "dmag": [0.0, 0.1], "offset": [0.0, 0.0]})
    hist = ScoreHistograms()
    hist.add(scores, 12.0, None, "zr")  # brighter than 15: mag underflow
    hist.add(scores, 25.0, 29.96, "zr")  # fainter than 21: mag overflow; 29.96 s -> 30.0
    hist.add(scores, float("nan"), 30.0, "zr")
    hist.add(scores, 15.0, [30.0, np.nan], "zr")  # per-row exposure times
    counts = hist.counts("snr").sum(axis=(0, 3))  # (exptime, mag slot)
    assert hist.exptimes_s[0] == 30.0 and np.isnan(hist.exptimes_s[1])
    assert counts[1, 1] == 2 and counts[0, -1] == 2 and counts[0, 0] == 2
    assert counts[0, 2] == 1 and counts[1, 2] == 1  # 15.0: first regular bin
    assert hist.n_points() == 8


def test_merge_keeps_operands_and_sum_works(ztf: pd.DataFrame) -> None:
    parts = [_fill(ScoreHistograms(), ztf[ztf["filtercode"] == code]) for code in ("zg", "zr", "zi")]
    before = [p.counts("snr").copy() for p in parts]
    total = sum(parts)
    assert isinstance(total, ScoreHistograms)
    assert total == _fill(ScoreHistograms(), ztf)
    assert total == parts[0].merge(parts[1]).merge(parts[2])
    for part, counts in zip(parts, before, strict=True):
        np.testing.assert_array_equal(part.counts("snr"), counts)
        assert len(part.filters) == 1


def test_merging_different_binning_fails() -> None:
    a = ScoreHistograms()
    b = ScoreHistograms(HistogramConfig(snr_bins=[-10.0, 10.0, 0.1]))
    with pytest.raises(
        HistogramError, match=r"different binning: snr_bins \[-20.0, 20.0, 0.1\] vs \[-10.0, 10.0, 0.1\]"
    ):
        a + b
    with pytest.raises(HistogramError, match="cannot merge with int"):
        a.merge(3)  # type: ignore[arg-type]


def test_save_load_round_trip(tmp_path: Path, ztf: pd.DataFrame) -> None:
    hist = _fill(ScoreHistograms(), ztf)
    hist.add(ztf[["snr", "dmag", "offset"]].iloc[:5], None, None, "tess")
    path = histogram_path(tmp_path / "PROJECT")
    save_histograms(path, hist)
    assert sorted(p.name for p in path.parent.iterdir()) == ["score_histograms.h5"]  # no temp file left
    back = load_histograms(path)
    assert back == hist
    assert back.filters == ["tess", "zg", "zi", "zr"] and np.isnan(back.exptimes_s[-1])
    with h5py.File(path) as h5:  # plain h5py can read it
        assert h5["snr"].shape == (2, 4, 5, 15, 403)
        assert list(h5.attrs["snr_bins"]) == [-20.0, 20.0, 0.1]
    # merging a loaded file with new data: the run's histogram grows across runs
    assert (back + hist).n_points() == 2 * hist.n_points()


def test_save_failure_is_a_write_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(WriteError, match="histograms: cannot write"):
        save_histograms(blocker / "h.h5", ScoreHistograms())


def test_load_refuses_other_files(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="cannot read"):
        load_histograms(tmp_path / "missing.h5")
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as h5:
        h5["x"] = [1]
    with pytest.raises(StoreError, match=r"is not an aretriever\.score_histograms v1 file"):
        load_histograms(other)


def test_pickle_round_trip(ztf: pd.DataFrame) -> None:
    hist = _fill(ScoreHistograms(), ztf)
    assert pickle.loads(pickle.dumps(hist)) == hist


def test_add_does_not_touch_its_input(ztf: pd.DataFrame) -> None:
    scores = ztf[["snr", "dmag", "offset", "flagged"]].copy()
    copy = scores.copy()
    ScoreHistograms().add(scores, 20.0, 30.0, "zg")
    pd.testing.assert_frame_equal(scores, copy)


def test_bad_input_is_refused() -> None:
    hist = ScoreHistograms()
    frame = pd.DataFrame({"snr": [1.0], "dmag": [0.0]})
    with pytest.raises(HistogramError, match=r"lack columns \['offset'\]"):
        hist.add(frame, None, None, "zg")
    frame["offset"] = np.nan
    with pytest.raises(HistogramError, match=r"good has shape \(2,\)"):
        hist.add(frame, None, None, "zg", good=np.array([True, False]))
    with pytest.raises(HistogramError, match=r"exptime_s has shape \(3,\)"):
        hist.add(frame, None, [1.0, 2.0, 3.0], "zg")
    with pytest.raises(HistogramError, match="unknown score 'chi2'"):
        hist.counts("chi2")
    with pytest.raises(HistogramError, match="unknown kind 'bad'"):
        hist.counts("snr", "bad")  # type: ignore[arg-type]


def test_bins_that_are_not_a_whole_number_of_steps_are_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"config: analysis.histograms.snr_bins: "):
        ScoreHistograms(HistogramConfig(snr_bins=[0.0, 1.0, 0.3]))


@pytest.mark.parametrize("bins", [[1.0, 0.0, 0.1], [0.0, 1.0, 0.0], [0.0, 1.0]])
def test_bad_binning_is_refused_by_the_config(bins: list[float]) -> None:
    with pytest.raises(ValidationError, match=r"expected \[low, high, step\]"):
        HistogramConfig(snr_bins=bins)


def test_fast_slots_match_searchsorted() -> None:
    rng = np.random.default_rng(5)
    for bins in ([-20, 20, 0.1], [-3, 3, 0.1], [15, 21, 0.5], [0.1, 0.7, 0.2]):
        edges = make_edges(bins, "x")
        values = np.concatenate(
            [
                rng.uniform(bins[0] - 3, bins[1] + 3, 50_000),
                edges,
                np.nextafter(edges, -np.inf),
                np.nextafter(edges, np.inf),
                [np.nan, np.inf, -np.inf, 1e308, -1e308],
            ]
        )
        expected = np.searchsorted(edges, values, side="right") + 1
        expected[np.isnan(values)] = 0
        np.testing.assert_array_equal(_slots(values, edges), expected)


def test_a_20k_point_lightcurve_adds_every_point() -> None:
    rng = np.random.default_rng(0)
    n = 20_000
    scores = pd.DataFrame(
        {"snr": rng.normal(0, 5, n), "dmag": rng.normal(0, 0.3, n), "offset": np.full(n, np.nan)}
    )
    good = rng.random(n) > 0.05
    hist = ScoreHistograms()
    for _ in range(6):
        hist.add(scores, 18.0, 120.0, "tess", good)
    assert hist.n_points() == 6 * n
