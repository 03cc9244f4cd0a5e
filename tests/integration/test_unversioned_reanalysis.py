"""Without version control, a changed setting re-analyses the project's products in place.

The products stay in ``DATA_ROOT/<PROJECT>`` under ``cfg_hash`` '', but every product row records
the products hash it was made with (``meta.made_with``): a run whose hash differs re-reduces and
re-analyses each source from its raw file, asks the archive nothing, and replaces the products;
a run stopped half-way leaves the rest to the next one.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest

from .conftest import ArchiveThread, RunCli
from .test_backfill import query

SIZE = 6
PROJECT = ("--project", "flat")
LOWER = ("--set", "analysis.finder.snr_threshold=3")  # the default is 5


def _lane(run_cli: RunCli, tmp_path: Path, *args: str) -> dict[str, Any]:
    summary = tmp_path / "summary.json"
    assert run_cli(*PROJECT, *args, "--summary-json", str(summary), size=SIZE) == 0
    lane: dict[str, Any] = json.loads(summary.read_text())["observatories"]["ztf"]
    return lane


def _stamps(db_url: str) -> list[tuple[str, str]]:
    rows = query(db_url, "select cfg_hash, meta from properties order by source_name")
    return [(h, (json.loads(m) if isinstance(m, str) else m).get("made_with")) for h, m in rows]


def _detections(db_url: str) -> int:
    return int(query(db_url, "select count(*) from detections where simulated = false")[0][0])


@pytest.fixture
def configs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ARETRIEVER_CONFIGS", str(tmp_path))  # no configs/flat.yaml from the repo


def _weak_detections(db_url: str) -> int:
    """Detections a threshold of 5 would not have made."""
    return int(query(db_url, "select count(*) from detections where abs(snr) < 5")[0][0])


def test_a_changed_analysis_setting_reanalyses_in_place_without_a_request(
    run_cli: RunCli,
    archive: ArchiveThread,
    db_url: str,
    tmp_path: Path,
    configs: None,
    caplog: pytest.LogCaptureFixture,
) -> None:
    assert _lane(run_cli, tmp_path)["fetched"] == SIZE
    ((_, first),) = set(_stamps(db_url))
    detections = _detections(db_url)
    assert first and _weak_detections(db_url) == 0
    archive.archive.reset_counts()

    with caplog.at_level(logging.WARNING, logger="aretriever.engine.skipcheck"):
        lane = _lane(run_cli, tmp_path, *LOWER)
    assert (lane["requests"], lane["reduced"], lane["skipped"]) == (0, SIZE, 0)
    assert archive.archive.count() == 0
    assert f"config changed since its ztf products were made (hash {first[:12]} -> " in caplog.text
    assert f"re-analysing {SIZE} sources" in caplog.text
    # replaced, not added beside: one row per source, still unversioned, made with the new setting
    ((key, second),) = set(_stamps(db_url))
    assert key == "" and second != first and len(_stamps(db_url)) == SIZE
    assert _detections(db_url) > detections and _weak_detections(db_url) > 0
    stamps = query(db_url, "select distinct cfg_hash from lightcurves")
    assert stamps == [("",)]
    root = tmp_path / "data"
    assert sorted(p.name for p in root.glob("FLAT*")) == ["FLAT"]
    assert "snr_threshold: 3.0" in (root / "FLAT" / "config.yaml").read_text()

    again = _lane(run_cli, tmp_path, *LOWER)
    assert (again["requests"], again["reduced"], again["skipped"]) == (0, 0, SIZE)
    # operational settings and the project's description do not shape a source's products
    other = (
        "--set",
        "engine.workers=1",
        "--set",
        "observatories.ztf.rate_per_s=7",
        "--set",
        "project.description=x",
    )
    unchanged = _lane(run_cli, tmp_path, *LOWER, *other)
    assert (unchanged["requests"], unchanged["reduced"], unchanged["skipped"]) == (0, 0, SIZE)
    assert set(_stamps(db_url)) == {("", second)}


def test_a_reanalysis_stopped_half_way_is_finished_by_the_next_run(
    run_cli: RunCli, archive: ArchiveThread, db_url: str, tmp_path: Path, configs: None
) -> None:
    assert _lane(run_cli, tmp_path)["fetched"] == SIZE
    ((_, first),) = set(_stamps(db_url))
    # A run that ends after three sources leaves the rows a stop or crash there leaves: each
    # source's record is written with its products, so the next run knows which are done.
    half = _lane(run_cli, tmp_path, *LOWER, "--stop", "3")
    assert (half["requests"], half["reduced"]) == (0, 3)
    assert sorted(h for _, h in _stamps(db_url)).count(first) == SIZE - 3

    rest = _lane(run_cli, tmp_path, *LOWER)
    assert (rest["requests"], rest["reduced"], rest["skipped"]) == (0, SIZE - 3, 3)
    ((_, second),) = set(_stamps(db_url))
    assert second != first
