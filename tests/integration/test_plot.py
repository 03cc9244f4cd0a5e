"""Plots: a lightcurve on an axis (real ZTF data), and the CLI on a store built by a real backfill."""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd
import pytest
from astropy.stats import mad_std
from matplotlib.collections import PolyCollection
from matplotlib.colors import to_rgba
from matplotlib.container import ErrorbarContainer
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from aretriever.cli.plot import load_source_plot_inputs
from aretriever.cli.plot import main as plot_main
from aretriever.plotting import PlotError, filter_color, mag_band_from_flux, plot_lightcurve, plot_source
from aretriever.store import db

from .test_backfill import query

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _axes() -> Any:
    return Figure(figsize=(8, 4)).add_subplot()


@pytest.fixture
def zg(ztf_csv: Path) -> pd.DataFrame:
    """The g-band rows of the real ZTF lightcurve, with archive-flagged points as ``flagged``."""
    data = pd.read_csv(ztf_csv)
    zg = data[data["filtercode"] == "zg"].sort_values("mjd").reset_index(drop=True)
    zg["flagged"] = zg["catflags"] != 0
    return zg


def test_plot_lightcurve_on_real_ztf_data(zg: pd.DataFrame) -> None:
    mjd, mag = zg["mjd"].to_numpy(), zg["mag"].to_numpy()
    good = ~zg["flagged"].to_numpy()
    assert 0 < (~good).sum() < len(zg)  # the real file has flagged g-band points
    found = {"time_start_mjd": mjd[10], "time_end_mjd": mjd[20], "time_peak_mjd": mjd[15], "snr": 7.5}
    injected = {"time_start_mjd": mjd[300], "time_end_mjd": mjd[310], "time_peak_mjd": mjd[305],
                "peak_mag": 19.0, "simulated": True}  # fmt: skip

    ax = plot_lightcurve(zg, filter="zg", detections=[found, injected], ax=_axes())

    bars = [c for c in ax.containers if isinstance(c, ErrorbarContainer)]
    assert len(bars) == 2  # unflagged points, flagged points
    good_line, flagged_line = bars[0].lines[0], bars[1].lines[0]
    np.testing.assert_array_equal(good_line.get_xdata(), mjd[good])
    np.testing.assert_array_equal(flagged_line.get_ydata(), mag[~good])
    assert to_rgba(good_line.get_color()) == to_rgba("tab:green")
    assert flagged_line.get_markerfacecolor() == "none"
    assert ax.yaxis_inverted()

    spans = [p for p in ax.patches if isinstance(p, Rectangle)]
    assert [(s.get_x(), s.get_x() + s.get_width()) for s in spans] == [
        (mjd[10], mjd[20]),
        (mjd[300], mjd[310]),
    ]
    assert spans[1].get_hatch() == "//" and spans[0].get_hatch() is None
    peaks = {line.get_label(): (line.get_xdata()[0], line.get_ydata()[0]) for line in ax.lines}
    assert peaks["detection"] == (mjd[15], mag[15])  # no peak_mag: the point at the peak
    assert peaks["simulated detection"] == (mjd[305], 19.0)
    assert [t.get_text() for t in ax.texts] == ["S/N 7.5"]

    # the band: median +- 1.4826 MAD of the unflagged points, over the lightcurve's time range
    (band,) = [c for c in ax.collections if isinstance(c, PolyCollection)]
    vertices = band.get_paths()[0].vertices
    median = np.median(mag[good])
    assert vertices[:, 1].min() == pytest.approx(median - mad_std(mag[good]), rel=1e-4)
    assert vertices[:, 1].max() == pytest.approx(median + mad_std(mag[good]), rel=1e-4)
    assert (vertices[:, 0].min(), vertices[:, 0].max()) == (mjd.min(), mjd.max())
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend == ["zg", "flagged", "detection", "simulated detection"]


def test_plot_lightcurve_options_and_repeated_calls(zg: pd.DataFrame) -> None:
    ax = _axes()
    plot_lightcurve(zg.drop(columns="flagged"), filter="zg", robust_mean_mag=20.1, robust_rms_mag=0.2, ax=ax)
    plot_lightcurve(zg.drop(columns=["flagged", "magerr"]), filter="zr", ax=ax)
    assert ax.yaxis_inverted()  # a second lightcurve on the axis does not flip it back
    assert len(ax.containers) == 2  # nothing flagged: one container per lightcurve
    assert ax.containers[1].has_yerr is False
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["zg", "zr"]
    with pytest.raises(PlotError, match=r"no column\(s\) \['mag'\]"):
        plot_lightcurve(zg.drop(columns="mag"), filter="zg", ax=ax)


def test_colors_and_flux_band() -> None:
    assert filter_color("zr") == filter_color("r") == "tab:red"
    assert filter_color("TESS") == "purple"
    assert filter_color("B") == filter_color("B") not in {"tab:green", "tab:red", "#2ca02c", "#d62728"}
    flux = np.array([100.0, 110.0, 90.0, -5.0])
    data = pd.DataFrame({"flux": flux, "mag": 23.9 - 2.5 * np.log10(np.where(flux > 0, flux, np.nan))})
    mean, rms = mag_band_from_flux(data, 100.0, 10.0)  # type: ignore[misc]
    assert mean == pytest.approx(23.9 - 5.0)
    assert rms == pytest.approx(2.5 / np.log(10) * 0.1)
    assert mag_band_from_flux(data.drop(columns="flux"), 100.0, 10.0) is None
    assert mag_band_from_flux(data, None, 10.0) is None


def test_plot_source_one_axis_per_observatory_and_a_dsnr_panel() -> None:
    t = np.linspace(59000.0, 59010.0, 50)
    base = pd.DataFrame({"mjd": t, "mag": 18 + 0.01 * np.sin(t), "magerr": np.full(50, 0.02)})
    scored = base.assign(dsnr=np.sin(t), flagged=t > 59009)
    ztf = [(SimpleNamespace(observatory="ztf", filter=f, series_number=i, robust_mean=None, robust_rms=None), d)
           for i, (f, d) in enumerate([("zg", scored), ("zr", base)], start=1)]  # fmt: skip
    tess = (SimpleNamespace(observatory="tess", filter="tess", series_number=1, robust_mean=None, robust_rms=None),
            base.assign(mjd=t + 100))  # fmt: skip
    detection = {"observatory": "ztf", "series_number": 2, "time_start_mjd": 59001.0,
                 "time_end_mjd": 59002.0, "time_peak_mjd": 59001.5}  # fmt: skip
    fig = plot_source([*ztf, tess], [detection], title="a source")
    mag_ztf, dsnr_ztf, mag_tess = fig.axes
    assert [a.get_title() for a in (mag_ztf, mag_tess)] == [
        "ZTF: 2 lightcurve(s), 100 points",
        "TESS: 1 lightcurve(s), 50 points",
    ]
    assert dsnr_ztf.get_ylabel() == "ΔS/N" and not dsnr_ztf.yaxis_inverted()
    assert len([p for p in mag_ztf.patches if isinstance(p, Rectangle)]) == 1
    assert not [p for p in mag_tess.patches if isinstance(p, Rectangle)]
    assert fig.get_suptitle() == "a source"
    with pytest.raises(PlotError):
        plot_source([])


def _plot_args(tmp_path: Path, db_url: str, *more: str) -> list[str]:
    return ["--data-root", str(tmp_path / "data"), "--db-url", db_url, *more]


def test_cli_plots_a_backfilled_source(run_cli, db_url: str, tmp_path: Path, capsys) -> None:
    assert run_cli(size=3) == 0
    ((name, n),) = query(
        db_url,
        "select source_name, count(*) from lightcurves group by source_name order by count(*) desc limit 1",
    )
    query(
        db_url,
        "insert into detections (source_name, series_number, simulation_number, observatory, project,"
        " cfg_hash, time_start_mjd, time_end_mjd, time_peak_mjd, snr, simulated, quality, rows)"
        " select source_name, series_number, 0, observatory, project, cfg_hash, time_start_mjd,"
        " time_end_mjd, (time_start_mjd + time_end_mjd) / 2, 6.0, false, '{}', '[]'"
        f" from lightcurves where source_name = '{name}' and series_number = 1",
    )
    out = tmp_path / "plots" / "lc.png"
    assert plot_main([name, "--out", str(out), *_plot_args(tmp_path, db_url)]) == 0
    assert capsys.readouterr().out.strip() == str(out)
    body = out.read_bytes()
    assert body.startswith(PNG_SIGNATURE) and len(body) > 10_000
    assert [p.name for p in out.parent.iterdir()] == ["lc.png"]  # no temporary file left

    async def read() -> Any:
        engine = db.create_engine(db_url)
        try:
            return await load_source_plot_inputs(db.session_factory(engine), name, project="default",
                                                 data_root=tmp_path / "data")  # fmt: skip
        finally:
            await engine.dispose()

    inputs = asyncio.run(read())
    assert len(inputs.lightcurves) == n
    assert all(len(data) == lc.num_rows > 0 and "mjd" in data for lc, data in inputs.lightcurves)
    stored = query(db_url, f"select series_number, snr from detections where source_name = '{name}'")
    assert sorted((d["series_number"], d["snr"]) for d in inputs.detections) == sorted(stored)
    assert (1, 6.0) in stored  # the science stage may have found more
    assert inputs.title().startswith(f"{name} (RA ") and inputs.title().endswith("project default")
    fig = plot_source(inputs.lightcurves, inputs.detections, inputs.title())
    assert fig.axes[0].get_title().startswith("ZTF: ")
    assert len([p for p in fig.axes[0].patches if isinstance(p, Rectangle)]) == len(stored)


def test_cli_says_which_source_and_project_have_no_lightcurves(
    run_cli, db_url: str, tmp_path: Path, capsys
) -> None:
    assert run_cli(size=2) == 0
    ((name,),) = query(db_url, "select source_name from lightcurves limit 1")
    out = tmp_path / "lc.png"
    capsys.readouterr()

    assert plot_main(["nowhere", "--out", str(out), *_plot_args(tmp_path, db_url)]) == 1
    err = capsys.readouterr().err
    assert "'nowhere'" in err and "project 'default'" in err and "no source of that name" in err

    assert plot_main([name, "--out", str(out), "--project", "other", *_plot_args(tmp_path, db_url)]) == 1
    err = capsys.readouterr().err
    assert f"source {name!r} in project 'other'" in err and "project(s) 'default'" in err
    assert not out.exists()


def test_cli_without_a_database_or_with_a_bad_config(tmp_path: Path, capsys) -> None:
    missing = f"sqlite+aiosqlite:///{tmp_path}/none/db.sqlite"
    assert plot_main(["x", "--out", str(tmp_path / "a.png"), *_plot_args(tmp_path, missing)]) == 1
    assert "no database at" in capsys.readouterr().err
    assert not (tmp_path / "none").exists()  # the check created nothing
    assert plot_main(["x", "--set", "store.nonsense=1", *_plot_args(tmp_path, missing)]) == 2
    assert "nonsense" in capsys.readouterr().err
