"""Projects end to end: version control, backfill of every stage, deleting products (both backends)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest

from aretriever.engine.histogram_io import histogram_path
from aretriever.project import Project
from aretriever.store import paths

from .test_backfill import query

SIZE = 5


def _project(archive, db_url: str, tmp_path: Path, **kwargs: Any) -> Project:
    analysis = {"num_injections": 2, **kwargs.pop("analysis_kwargs", {})}
    return Project(
        "wd_trial",
        cfg_file=False,
        obs_names=["ZTF"],
        catalog_kwargs={"default": "test", "test_size": SIZE},
        analysis_kwargs=analysis,
        store={"data_root": str(tmp_path / "data"), "db_url": db_url},
        engine={"workers": 2},
        ZTF={
            "base_url": archive.url,
            "rate_per_s": 1000,
            "credentials": {"username": "guy", "password": "not-in-any-file"},
        },
        **kwargs,
    )


def _count(db_url: str, table: str, cfg_hash: str | None = None) -> int:
    where = f" where cfg_hash = '{cfg_hash}'" if cfg_hash is not None else ""
    return int(query(db_url, f"select count(*) from {table}{where}")[0][0])


def test_version_control_backfills_each_stage_once(archive, db_url: str, tmp_path: Path) -> None:
    first = _project(archive, db_url, tmp_path, version_control=True)
    assert first.output_folder == tmp_path / "data" / f"WD_TRIAL_{first.cfg_hash}"
    summary = first.run()
    assert summary.lane("ztf").outcomes["fetched"] == SIZE
    assert archive.archive.count() == SIZE
    config = (first.output_folder / "config.yaml").read_text()
    assert first.cfg_hash in config and "num_injections: 2" in config
    assert "not-in-any-file" not in config
    assert _count(db_url, "properties", first.cfg_hash) == SIZE
    histograms = histogram_path(first.output_folder)
    stamp = histograms.stat().st_mtime_ns

    # the same config: same folder, nothing to do
    again = _project(archive, db_url, tmp_path, version_control=True)
    assert again.output_folder == first.output_folder
    archive.archive.reset_counts()
    summary = again.run()
    assert archive.archive.count() == 0
    assert summary.lane("ztf").outcomes["skipped"] == SIZE and summary.lane("ztf").outcomes["reduced"] == 0
    assert _count(db_url, "properties", first.cfg_hash) == SIZE
    assert histograms.stat().st_mtime_ns == stamp  # nothing analysed, nothing counted

    # a changed analysis parameter: a new folder, raw data reused without any request
    changed = _project(
        archive,
        db_url,
        tmp_path,
        version_control=True,
        analysis_kwargs={"finder_kwargs": {"snr_threshold": 7.5}},
    )
    assert changed.cfg_hash != first.cfg_hash and changed.output_folder != first.output_folder
    summary = changed.run()
    assert archive.archive.count() == 0
    assert summary.lane("ztf").outcomes["reduced"] == SIZE
    assert _count(db_url, "properties", changed.cfg_hash) == SIZE
    assert _count(db_url, "properties", first.cfg_hash) == SIZE
    assert "snr_threshold: 7.5" in (changed.output_folder / "config.yaml").read_text()

    # deleting the new version's products leaves raw data and the first version alone
    deleted = changed.delete_products()
    assert deleted["properties"] == SIZE and deleted["lightcurves"] > 0
    assert not changed.output_folder.exists() and first.output_folder.exists()
    assert _count(db_url, "lightcurves", changed.cfg_hash) == 0
    assert _count(db_url, "detections", changed.cfg_hash) == 0
    assert _count(db_url, "properties", first.cfg_hash) == SIZE
    assert _count(db_url, "raw_photometry") == SIZE
    assert len(list((tmp_path / "data" / "ZTF").rglob("*.h5"))) == SIZE


def test_products_and_histograms_of_an_analysed_run(archive, db_url: str, tmp_path: Path) -> None:
    project = _project(archive, db_url, tmp_path)
    assert project.output_folder == tmp_path / "data" / "WD_TRIAL"  # no version control
    project.run()
    root = tmp_path / "data"
    rows = query(
        db_url,
        "select filename, filekey, num_rows, num_good, snr, robust_rms, dsnr_max, exptime_s from lightcurves",
    )
    assert rows
    total_points = 0
    for filename, key, num_rows, num_good, snr, robust_rms, dsnr_max, exptime_s in rows:
        with h5py.File(root / filename) as f:
            table = f[key][:]
        names = set(table.dtype.names)
        assert {"flux", "fluxerr", "snr", "dsnr", "dmag", "offset", "flagged"} <= names
        good = ~table["flagged"] & np.isfinite(table["flux"])
        assert num_good == int(good.sum()) and num_rows == len(table)
        assert robust_rms > 0 and snr is not None and exptime_s == 30.0  # the recorded ZTF epochs
        assert dsnr_max == pytest.approx(float(np.max(table["dsnr"][good])))
        total_points += len(table)

    # every point counted once, flagged ones only under "all"
    histograms = project.histograms()
    assert histograms is not None
    assert histograms.n_points("all") == total_points
    assert histograms.n_points("good") == sum(r[3] for r in rows)

    detections = query(db_url, "select simulated, sim_pars, series_number, rows from detections")
    assert all(series >= 1 and rows for _, _, series, rows in detections)
    assert all(sim == (pars is not None) for sim, pars, _, _ in detections)
    props = query(db_url, "select observatory, has_data, num_lightcurves, num_points, meta from properties")
    assert len(props) == SIZE
    for observatory, has_data, num_lcs, num_points, meta in props:
        assert observatory == "ztf" and has_data and num_lcs > 0 and num_points > 0
        injections = (json.loads(meta) if isinstance(meta, str) else meta)["injections"]
        assert len(injections) == 2 * num_lcs
    assert sum(p[2] for p in props) == len(rows)
    table = project.efficiency(bins=2)
    assert int(table["injected"].sum()) == 2 * len(rows)  # num_injections per lightcurve


def test_the_cli_runs_a_project_from_its_config_file(
    run_cli, archive, db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    configs = tmp_path / "configs"
    configs.mkdir()
    (configs / "flares.yaml").write_text(
        "project: {name: flares, version_control: true}\nanalysis: {finder: {snr_threshold: 6.0}}\n"
    )
    args = ("--project", "flares", "--set", "store.data_root=" + str(tmp_path / "data"))
    monkeypatch.setenv("ARETRIEVER_CONFIGS", str(configs))
    assert run_cli(*args, size=3) == 0
    (folder,) = [p for p in (tmp_path / "data").iterdir() if p.name.startswith("FLARES_")]
    assert "snr_threshold: 6.0" in (folder / "config.yaml").read_text()
    assert _count(db_url, "properties", folder.name.removeprefix("FLARES_")) == 3
    assert paths.product_folder("flares", folder.name.removeprefix("FLARES_")) == folder.name
