"""A seed user's custom analysis class, run by a project in pool workers (demo observatory, offline)."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from aretriever.project import Project

from .test_backfill import query

KERNELS = """
from __future__ import annotations

from pydantic import Field

from aretriever.science.analysis import Analysis
from aretriever.settings import Part


class KernelParameters(Part):
    num_kernels: int = Field(10, ge=1, description="number of kernels")


class NewAnalysis(Analysis):
    parameters = KernelParameters

    def analyze_photometry(self, target, lightcurves):  # the seed's name: called as analyze
        result = super().analyze(target, lightcurves)
        result.properties["meta"]["num_kernels"] = self.cfg.num_kernels
        return result
"""


@pytest.fixture
def kernels(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    folder = tmp_path / "extensions"
    folder.mkdir()
    (folder / "t12_kernels.py").write_text(KERNELS)
    monkeypatch.syspath_prepend(str(folder))  # spawned pool workers get the parent's sys.path
    yield "t12_kernels"
    sys.modules.pop("t12_kernels", None)


def _project(db_url: str, tmp_path: Path, **kwargs: Any) -> Project:
    return Project(
        "kernels",
        obs_names=["demo"],
        catalog_kwargs={"default": "test", "test_size": 3},
        store={"data_root": str(tmp_path / "data"), "db_url": db_url},
        engine={"workers": 2},
        DEMO={"base_url": "http://127.0.0.1:9"},  # nothing listens: the demo never asks
        version_control=True,
        **kwargs,
    )


def _stored_kernels(db_url: str, cfg_hash: str) -> list[Any]:
    rows = query(db_url, f"select meta from properties where cfg_hash = '{cfg_hash}'")
    return [(json.loads(meta) if isinstance(meta, str) else meta).get("num_kernels") for (meta,) in rows]


def test_declared_parameters_reach_the_workers_from_kwargs_and_file(
    kernels: str, db_url: str, tmp_path: Path
) -> None:
    given = _project(
        db_url,
        tmp_path,
        cfg_file=False,
        analysis_kwargs={"num_kernels": 20},
        analysis_module=kernels,
        analysis_class="NewAnalysis",
    )
    given.run()
    assert _stored_kernels(db_url, given.cfg_hash) == [20, 20, 20]

    configs = tmp_path / "configs"
    configs.mkdir()
    (configs / "kernels.yaml").write_text(
        f"project:\n  analysis_module: {kernels}\n  analysis_class: NewAnalysis\nanalysis:\n  num_kernels: 7\n"
    )
    from_file = _project(db_url, tmp_path, cfg_file=configs / "kernels.yaml")
    assert from_file.cfg_hash != given.cfg_hash  # the parameter shapes the results
    from_file.run()
    assert _stored_kernels(db_url, from_file.cfg_hash) == [7, 7, 7]
    assert "num_kernels: 7" in (from_file.output_folder / "config.yaml").read_text()
