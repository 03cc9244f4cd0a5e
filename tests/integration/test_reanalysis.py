"""Re-analysis from disk through the CLI, as ``scripts/bench`` runs it: a changed analysis config
(new cfg hash) re-reduces every source from its raw file, rewrites every reduced file in the new
product folder, and asks the archive nothing."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import pytest

from .conftest import ArchiveThread, RunCli
from .test_backfill import query

SIZE = 6
VERSIONED = ("--project", "bench", "--set", "project.version_control=true")


def _reduced_keys(folder: Path) -> dict[str, list[str]]:
    files = sorted(folder.glob("RA*/*_reduced.h5"))
    out = {}
    for path in files:
        with h5py.File(path, "r") as h5:
            out[path.name] = sorted(h5.keys())
    return out


def test_a_new_analysis_config_rewrites_every_reduced_file_without_a_request(
    run_cli: RunCli,
    archive: ArchiveThread,
    db_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ARETRIEVER_CONFIGS", str(tmp_path))  # no configs/bench.yaml from the repo
    root = tmp_path / "data"
    assert run_cli(*VERSIONED, size=SIZE) == 0
    (first,) = root.glob("BENCH_*")
    raw_stamps = {p: p.stat().st_mtime_ns for p in (root / "ZTF").rglob("*.h5")}
    assert len(raw_stamps) == SIZE
    archive.archive.reset_counts()

    summary_path = tmp_path / "reanalysis.json"
    changed = ("--set", "analysis.finder.snr_threshold=4.5", "--summary-json", str(summary_path))
    assert run_cli(*VERSIONED, *changed, size=SIZE) == 0

    assert archive.archive.count() == 0
    lane = json.loads(summary_path.read_text())["observatories"]["ztf"]
    assert lane["requests"] == 0 and lane["reduced"] == SIZE and lane["fetched"] == 0
    (second,) = set(root.glob("BENCH_*")) - {first}
    # every source's reduced file, with every lightcurve, written again under the new version
    assert _reduced_keys(second) == _reduced_keys(first) and len(_reduced_keys(second)) == SIZE
    assert "snr_threshold: 4.5" in (second / "config.yaml").read_text()
    new_hash = second.name.removeprefix("BENCH_")
    assert query(db_url, f"select count(*) from properties where cfg_hash = '{new_hash}'") == [(SIZE,)]
    # raw data is shared by every version: read, never rewritten
    assert {p: p.stat().st_mtime_ns for p in (root / "ZTF").rglob("*.h5")} == raw_stamps
