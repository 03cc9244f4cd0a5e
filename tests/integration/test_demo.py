"""The demo observatory: a whole backfill with no archive at all, deterministic."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from aretriever.adapters.base import Target
from aretriever.adapters.demo import parse_table, reduce_table, simulate
from aretriever.cli.fetch import main as fetch_main
from aretriever.engine.histogram_io import load_histograms
from aretriever.settings import DemoConfig

from .test_backfill import query


def test_simulated_data_is_deterministic_and_as_configured() -> None:
    cfg = DemoConfig(num_points=50, filters=["g", "r", "i"], noise_mag=0.02, seed=3)
    star = Target("demo star", 359.9999, 10.0, mag=16.5)
    first, again = simulate(star, cfg), simulate(star, cfg)
    pd.testing.assert_frame_equal(first, again)
    assert not simulate(Target("other star", 359.9999, 10.0, mag=16.5), cfg).equals(first)
    assert len(first) == 150 and sorted(first["filter"].unique()) == ["g", "i", "r"]
    assert first["mjd"].is_monotonic_increasing
    assert abs(first["mag"].mean() - 16.5) < 0.01 and abs(first["mag"].std() - 0.02) < 0.005
    assert ((first["ra"] > 359.99) | (first["ra"] < 0.01)).all()  # around the star, across RA 0
    parsed = parse_table(first.to_csv(index=False).encode())
    pd.testing.assert_frame_equal(parsed, first, check_dtype=False)
    curves = reduce_table(parsed)
    assert [lc.filter for lc in curves] == ["g", "i", "r"] and all(len(lc.data) == 50 for lc in curves)


def test_demo_backfill_runs_offline_with_every_product(db_url: str, tmp_path: Path) -> None:
    root, summary = tmp_path / "data", tmp_path / "summary.json"
    argv = [
        "--quiet", "--catalog", "test", "--observatory", "demo",
        "--data-root", str(root), "--db-url", db_url,
        "--set", "catalog.test_size=8", "--set", "engine.workers=2",
        "--set", "observatories.demo.base_url=http://127.0.0.1:9",  # nothing listens: never asked
        "--summary-json", str(summary),
    ]  # fmt: skip
    assert fetch_main(argv) == 0
    demo = json.loads(summary.read_text())["observatories"]["demo"]
    assert demo["fetched"] == 8 and demo["requests"] == 0
    assert query(db_url, "select count(*) from lightcurves where observatory = 'demo'") == [(16,)]
    props = query(db_url, "select has_data, num_lightcurves, num_points from properties")
    assert len(props) == 8
    # num_points counts good points: the position cut flags a rare >3.5 MAD scatter point
    assert all(bool(has) and n == 2 and 190 <= points <= 200 for has, n, points in props)
    histograms = load_histograms(root / "DEFAULT" / "score_histograms.h5")
    assert histograms.n_points("all") == 8 * 200
    rows = query(db_url, "select filename, filekey from lightcurves limit 1")
    import h5py

    with h5py.File(root / rows[0][0]) as f:
        table = f[rows[0][1]][:]
    assert np.isfinite(table["dsnr"]).all()
    assert fetch_main(argv) == 0  # again: all skipped
    assert json.loads(summary.read_text())["observatories"]["demo"]["skipped"] == 8
