"""The analysis of a source (quality, scores, statistics, events, injections) and custom code."""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from aretriever.adapters.base import Fetched, ReducedLightcurve, Target
from aretriever.adapters.tess_fits import read_raw_table
from aretriever.adapters.tess_reduce import reduce_lightcurves
from aretriever.adapters.ztf import ZtfAdapter
from aretriever.engine.pool import CpuJob, run_job
from aretriever.errors import ConfigError
from aretriever.science.analysis import Analysis, analysis_for, efficiency_table
from aretriever.science.plugins import load_class
from aretriever.science.stats import scores
from aretriever.settings import AnalysisConfig, SimulatorConfig, TessReducerConfig, ZtfConfig
from aretriever.store import paths
from aretriever.store.hdf5 import frame_to_records, read_image, records_to_frame
from aretriever.store.models import Lightcurve
from aretriever.testing.fake_archive import DATA_DIR, FakeArchive, Faults

EXAMPLES = Path(__file__).parents[2] / "docs" / "examples"
ALERT = DATA_DIR / "tess" / "hlsp_tess-data-alerts_tess_phot_00055652896-s01_tess_v1_lc.fits"
STAR = Target("WD recorded", 200.0, 30.0, mag=20.3)


@pytest.fixture(scope="module")
def ztf_body() -> bytes:
    """IRSA's recorded answer, as the fake archive serves it at STAR's position."""
    return FakeArchive(Faults()).ztf.answer(STAR.ra_deg, STAR.dec_deg, 32768)


@pytest.fixture(scope="module")
def tess_lightcurve() -> ReducedLightcurve:
    raw = read_raw_table([str(ALERT)], "PDCSAP_FLUX", source="TIC 55652896")
    (lc,) = reduce_lightcurves(raw, STAR, TessReducerConfig())
    return lc


def test_a_job_analyses_every_lightcurve_it_reduces(ztf_body: bytes) -> None:
    adapter = ZtfAdapter(ZtfConfig())
    fetched = Fetched(STAR, ztf_body, "recorded")
    plain = run_job(CpuJob(adapter, STAR, fetched))
    result = run_job(CpuJob(adapter, STAR, fetched, analysis=AnalysisConfig()))
    assert plain.properties is None and result.properties is not None
    assert len(result.lightcurves) == len(plain.lightcurves) > 1
    total = len(result.lightcurves)
    for number, after in enumerate(result.lightcurves, start=1):
        key = paths.reduction_key(STAR.name, number, total)
        assert plain.reduced_image is not None and result.reduced_image is not None
        raw, _ = read_image(plain.reduced_image, key)  # the files the pool built
        table, meta = read_image(result.reduced_image, key)
        assert meta["filter"] == after.filter and after.num_rows == len(table)
        assert len(table) == len(raw)
        np.testing.assert_array_equal(table["mjd"], raw["mjd"])  # same points, scores added
        flagged = table["flagged"].to_numpy()
        # the independent expectations: catflags flag a point; flux from AB mag in µJy
        assert (flagged >= (raw["catflags"].to_numpy() != 0)).all()
        np.testing.assert_allclose(table["flux"], 10 ** (-0.4 * (raw["mag"] - 23.9)), rtol=1e-12)
        assert after.stats["num_good"] == int((~flagged & np.isfinite(table["flux"])).sum())
        assert after.stats["exptime_s"] == 30.0
    props = result.properties
    assert props["num_lightcurves"] == len(result.lightcurves)
    assert props["num_points"] == sum(lc.stats["num_good"] for lc in result.lightcurves)
    best = max(abs(v) for lc in result.lightcurves for v in (lc.stats["dsnr_max"], lc.stats["dsnr_min"]))
    assert props["best_snr"] == pytest.approx(best)
    assert props["meta"]["num_detections"] == sum(len(lc.detections) for lc in result.lightcurves)


def test_injected_events_are_found_and_reported(tess_lightcurve) -> None:
    # strong, wide brightenings: the finder must recover nearly all of them
    cfg = AnalysisConfig(
        num_injections=10,
        simulator=SimulatorConfig(
            shape="box",
            min_width_days=0.2,
            max_width_days=0.4,
            min_amplitude_mag=-1.0,
            max_amplitude_mag=-0.5,
        ),
    )
    result = Analysis(cfg).analyze(STAR, [tess_lightcurve])
    (lc,) = result.lightcurves
    assert len(lc.injections) == 10
    assert sum(i["recovered"] for i in lc.injections) >= 8
    simulated = [d for d in lc.detections if d["simulated"]]
    assert simulated and all(d["sim_pars"]["amplitude_mag"] < 0 for d in simulated)
    table = efficiency_table(lc.injections, bins=1)
    assert int(table["injected"].sum()) == 10 and table["efficiency"].iloc[0] >= 0.8
    # the same source and config draw the same injections (reproducible runs)
    again = Analysis(cfg).analyze(STAR, [tess_lightcurve])
    assert again.lightcurves[0].injections == lc.injections


def test_zero_lightcurves_give_properties_without_data() -> None:
    result = Analysis(AnalysisConfig()).analyze(STAR, [])
    assert result.properties["has_data"] is False
    assert result.properties["num_lightcurves"] == 0 and result.properties["best_snr"] is None


def test_custom_classes_load_by_module_path(monkeypatch: pytest.MonkeyPatch, tess_lightcurve) -> None:
    monkeypatch.syspath_prepend(str(EXAMPLES))
    cfg = AnalysisConfig(
        analysis_module="my_analysis",
        analysis_class="NewAnalysis",
        finder_module="my_analysis",
        finder_class="BrighteningsOnly",
    )
    analysis = analysis_for(cfg)
    assert type(analysis).__name__ == "NewAnalysis" and type(analysis.finder).__name__ == "BrighteningsOnly"
    (lc,) = analysis.analyze(STAR, [tess_lightcurve]).lightcurves
    assert "mag_running_median" in lc.processed.dtype.names
    default = Analysis(AnalysisConfig()).analyze(STAR, [tess_lightcurve]).lightcurves[0]
    assert any(d["snr"] < 0 for d in default.detections)  # the real transit of TIC 55652896
    assert all(d["snr"] > 0 for d in lc.detections)
    sys.modules.pop("my_analysis", None)


def test_custom_code_errors_name_the_setting() -> None:
    with pytest.raises(ConfigError, match=r"analysis\.finder_class: cannot import module 'no_such_module'"):
        load_class("no_such_module", "Finder", object, "analysis.finder_class")
    with pytest.raises(ConfigError, match=r"has no class 'Nope' \(it has \[.*'Finder'"):
        load_class("aretriever.science.finder", "Nope", object, "analysis.finder_class")
    with pytest.raises(
        ConfigError, match=r"aretriever\.science\.finder\.Finder is not a subclass of .*Analysis"
    ):
        load_class("aretriever.science.finder", "Finder", Analysis, "analysis.analysis_class")


@pytest.mark.parametrize("module", ["__main__", "__mp_main__"])
def test_a_class_of_the_script_being_run_is_refused(module: str) -> None:
    # the pool's workers do not run the script: its classes would be missing there
    with pytest.raises(ConfigError, match=r"class 'MyAnalysis' is in the script being run.*importable module"):
        load_class(module, "MyAnalysis", Analysis, "analysis.analysis_class")


def test_a_lightcurve_row_plots_its_data(tess_lightcurve) -> None:
    import matplotlib

    matplotlib.use("Agg")
    row = Lightcurve(observatory="tess", filter="tess", series_number=1, robust_mean=None, robust_rms=None)
    row.data = tess_lightcurve.data
    ax = row.plot(detections=[{"time_start_mjd": 58330.69, "time_end_mjd": 58330.87, "snr": -8.7}])
    assert ax.yaxis_inverted() and ax.containers
    import matplotlib.pyplot as plt

    plt.close("all")


def test_the_processed_table_is_the_pandas_one_built_once(ztf_body: bytes, tess_lightcurve) -> None:
    adapter = ZtfAdapter(ZtfConfig())
    curves = adapter.reduce(adapter.parse(Fetched(STAR, ztf_body, "recorded")), STAR)
    analysis = Analysis(AnalysisConfig())
    for lc in [*curves, tess_lightcurve]:
        frame = lc.data if isinstance(lc.data, pd.DataFrame) else records_to_frame(lc.data)
        zero_point = analysis.zero_point_mag(lc)
        # independently: the steps on a DataFrame, one column at a time, converted by the writer
        checked = analysis.quality.check(frame)
        expected = frame_to_records(scores(checked, zero_point, good=~checked["flagged"].to_numpy()))
        result = analysis.analyze_lightcurve(STAR, lc, 1)
        assert isinstance(result.processed, np.ndarray)
        assert result.processed.dtype == expected.dtype
        assert result.processed.tobytes() == expected.tobytes()
        # the lightcurve given as a DataFrame analyses to the same table, statistics and events
        again = analysis.analyze_lightcurve(STAR, replace(lc, data=frame), 1)
        assert again.processed.tobytes() == result.processed.tobytes()
        assert again.stats == result.stats and again.detections == result.detections
