"""The seed README's notebook examples, against the fake archive (both backends).

Adapted only where the seed's code would reach the real archives: base URLs and rate limits are
given as observatory parameters, DATA_ROOT and the database through the environment.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa

from aretriever.catalogs.core import GeneratedCatalog
from aretriever.errors import ConfigError
from aretriever.observatories import VirtualDemoObs, VirtualTESS, VirtualZTF, observatory
from aretriever.project import Project
from aretriever.store import Session, SmartSession
from aretriever.store.models import Lightcurve, RawPhotometry, Source
from aretriever.testing.mast_replay import PI_MEN

from .test_backfill import query


@pytest.fixture
def env(archive, db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    monkeypatch.setenv("RETRIEVER_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("ARETRIEVER_DB_URL", db_url)
    monkeypatch.setenv("ARETRIEVER_CONFIGS", str(tmp_path / "configs"))
    return archive


def test_quick_start_tess(env, db_url: str) -> None:
    obs = VirtualTESS(base_url=env.url, rate_per_s=1000, poll_interval_s=0.01)
    source = obs.download_by_tic(PI_MEN.tic)
    assert source.name == f"TIC {PI_MEN.tic}" and len(source.lightcurves) == 1

    obs.catalog = GeneratedCatalog(3)
    cat_row = obs.catalog.get_row(0, "number", "dict")
    source = obs.fetch_source(cat_row, save=True, reduce=True)
    assert source.name == cat_row["name"] and source.raw_photometry[0].observatory == "tess"
    again = obs.fetch_source(cat_row, save=True, reduce=True)  # not downloaded twice
    assert again.name == source.name
    summary = obs.fetch_all_sources(start=0, stop=None, save=True, reduce=True)
    assert summary.lane("tess").outcomes["fetched"] == 2 and summary.lane("tess").outcomes["skipped"] == 1
    assert query(db_url, "select count(*) from raw_photometry where observatory = 'tess'") == [(4,)]


def test_downloading_data_with_a_project(env, db_url: str) -> None:
    proj = Project(
        name="default_test",
        obs_names=["ZTF"],
        catalog_kwargs={"default": "test", "test_size": 5},
        ZTF={"base_url": env.url, "rate_per_s": 1000},
    )
    obs = proj.observatories["ZTF"]  # can also use proj.observatories[0] or proj.ztf
    assert obs is proj.observatories[0] is proj.ztf
    obs.pars.num_threads_download = 0  # can use higher values for multi-threading
    assert obs.pars.max_concurrency == 1
    obs.fetch_all_sources(0, 1000, save=True)
    assert len(obs.sources) == 5 and len(obs.raw_data) == 5

    # use save=False to only download the data and not save it (for debugging)
    peek = proj.observatories["ZTF"]
    before = env.archive.count()
    summary = peek.fetch_all_sources(0, 2, save=False)
    assert summary.lane("ztf").outcomes["fetched"] == 2 and env.archive.count() == before + 2  # not skipped
    unsaved = peek.sources[-1]
    assert len(unsaved.raw_photometry[0].data) == unsaved.raw_photometry[0].num_rows > 0
    assert unsaved.lightcurves and all(len(lc.data) > 0 for lc in unsaved.lightcurves)
    assert query(db_url, "select count(*) from raw_photometry") == [(5,)]  # nothing new stored
    assert {s.name for s in obs.sources} == {r.source_name for r in obs.raw_data}


def test_reducing_lightcurves_then_using_the_data(env, db_url: str, tmp_path: Path) -> None:
    fetcher = VirtualZTF(base_url=env.url, rate_per_s=1000)
    fetcher.catalog = GeneratedCatalog(2)
    stored = fetcher.fetch_source(fetcher.catalog.get_row(1, "number", "dict"), save=True, reduce=False)
    raw_file = stored.raw_photometry[0].get_fullname()

    obs = VirtualZTF(name="ZTF", credentials={"username": "guy", "password": "12345"}, reducer={"gap": 60})
    data = RawPhotometry(filename=str(raw_file))
    data.load()
    obs.pars.reducer = {"gap": 60}
    lcs = obs.reduce(data, data_type="photometry")
    assert lcs and obs.pars.reducer.gap_days == 60
    assert all(isinstance(lc, Lightcurve) and len(lc.data) == lc.num_rows > 0 for lc in lcs)
    assert all(isinstance(lc.data, pd.DataFrame) for lc in lcs)  # notebooks get frames from any reducer

    import matplotlib

    matplotlib.use("Agg")
    with Session() as session:
        source = session.scalars(sa.select(Source).where(Source.name == stored.name)).first()
        data = session.scalars(sa.select(RawPhotometry).where(RawPhotometry.source_id == source.id)).first()
        assert data.filename.startswith("ZTF/RA") and data.filekey == data.source_name
        assert data.get_fullname() == raw_file
        mag_array = data.data["mag"]
        ax = data.plot()
        assert len(ax.containers) >= 1 and ax.yaxis_inverted()
        data.save()  # rewrites the same table in place
        assert len(data.load()["mag"]) == len(mag_array)

    session = Session()
    sources = session.scalars(sa.select(Source)).all()
    assert {s.name for s in sources} == {stored.name}
    mag_array = session.scalars(sa.select(RawPhotometry)).first().data["mag"]
    assert len(mag_array) == stored.raw_photometry[0].num_rows
    session.close()

    with Session() as session:
        source = session.scalars(sa.select(Source).where(Source.name == stored.name)).first()
        assert source is not None
        data = source.raw_photometry[0]  # lazily loaded, as in the seed's notebook
        assert len(obs.reduce(source, data_type="photometry")) == len(
            obs.reduce(data, data_type="photometry")
        )
        lcs = obs.reduce(data, data_type="photometry")
        for lc in lcs:
            lc.save()
            session.add(lc)
        session.commit()
    with SmartSession() as session:
        saved = session.scalars(sa.select(Lightcurve).where(Lightcurve.source_name == stored.name)).all()
        assert len(saved) == len(lcs)
        assert all(len(lc.data) == lc.num_rows for lc in saved)  # written, and read back lazily
        lc = saved[0]
        lc.delete_data_from_disk()
        session.delete(lc)
        session.commit()
    assert query(db_url, f"select count(*) from lightcurves where source_name = '{stored.name}'") == [
        (len(lcs) - 1,)
    ]


def test_demo_observatory_and_the_factory(env, db_url: str) -> None:
    obs = observatory("demo", num_points=20)
    assert isinstance(obs, VirtualDemoObs)
    source = obs.fetch_source({"name": "a simulated star", "ra": 10.0, "dec": 20.0}, save=True, reduce=True)
    assert len(source.lightcurves) == 2 and all(lc.num_rows == 20 for lc in source.lightcurves)
    peek = obs.fetch_source({"name": "only looked at", "ra": 11.0, "dec": 21.0}, save=False)
    assert [len(lc.data) for lc in peek.lightcurves] == [20, 20]
    assert query(db_url, "select count(*) from sources where name = 'only looked at'") == [(0,)]
    with pytest.raises(ConfigError, match="not 'TESS'"):
        VirtualZTF(name="TESS")
    with pytest.raises(ConfigError, match="unknown observatory"):
        observatory("hubble")


def test_the_example_script_runs(db_url: str, tmp_path: Path) -> None:
    import subprocess
    import sys

    script = Path(__file__).parents[2] / "docs" / "examples" / "seed_readme.py"
    done = subprocess.run(
        [sys.executable, str(script), "--data-root", str(tmp_path / "data"), "--db-url", db_url],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    assert "download_by_tic: TIC 261136679 1 lightcurve(s)" in out
    assert "sources: 5 raw data: 5" in out
    assert "all examples ran" in out
    # TESS: TIC 261136679 and 3 catalog rows; ZTF: 5 project rows and J123.1+32.13
    assert query(db_url, "select observatory, count(*) from raw_photometry group by 1 order by 1") == [
        ("tess", 4),
        ("ztf", 6),
    ]
