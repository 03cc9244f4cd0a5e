"""The AstroRetriever README's notebook examples, run against a local fake archive.

    .venv/bin/python docs/examples/seed_readme.py [--data-root DIR] [--db-url URL]

Each block below is the seed's example with its import path changed; the only other changes point
the observatories at the fake archive (``base_url``) instead of IRSA and MAST. The test suite runs
this script (tests/integration/test_seed_examples.py).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import threading
from pathlib import Path

import sqlalchemy as sa

from aretriever.catalogs.core import GeneratedCatalog
from aretriever.testing.fake_archive import FakeArchive, Faults


def start_fake_archive() -> str:
    """The fake archive on a thread of its own; returns its base URL."""
    loop = asyncio.new_event_loop()
    archive = FakeArchive(Faults())
    threading.Thread(target=loop.run_forever, daemon=True).start()
    return asyncio.run_coroutine_threadsafe(archive.start(), loop).result(timeout=30)


def quick_start(url: str) -> None:
    from aretriever.observatories import VirtualTESS

    obs = VirtualTESS(base_url=url, rate_per_s=1000, poll_interval_s=0.01)
    source = obs.download_by_tic(261136679)  # pi Men
    print("download_by_tic:", source.name, len(source.lightcurves), "lightcurve(s)")

    obs.catalog = GeneratedCatalog(3)  # the seed's obs.catalog; here a small generated one
    cat_row = obs.catalog.get_row(0, "number", "dict")
    source = obs.fetch_source(cat_row, save=True, reduce=True)
    print("fetch_source:", source.name, len(source.raw_photometry), "raw dataset(s)")
    summary = obs.fetch_all_sources(start=0, stop=None, save=True, reduce=True)
    print("fetch_all_sources:", dict(summary.lane("tess").outcomes))


def downloading_data(url: str) -> None:
    from aretriever.project import Project

    proj = Project(
        name="default_test",
        obs_names=["ZTF"],
        catalog_kwargs={"default": "test", "test_size": 5},
        ZTF={"base_url": url, "rate_per_s": 1000},
    )
    obs = proj.observatories["ZTF"]  # can also use proj.observatories[0] or proj.ztf
    obs.pars.num_threads_download = 0  # can use higher values for multi-threading
    obs.fetch_all_sources(0, 1000, save=True)
    print("sources:", len(obs.sources), "raw data:", len(obs.raw_data))


def reducing_and_using_the_data(url: str) -> None:
    from aretriever.observatories import VirtualZTF
    from aretriever.store import Session, SmartSession
    from aretriever.store.models import RawPhotometry, Source

    obs = VirtualZTF(name="ZTF", base_url=url, rate_per_s=1000, reducer={"gap": 60})
    cat_row = {"name": "J123.1+32.13", "ra": 123.1, "dec": 32.13}  # any dict with name, ra, dec
    stored = obs.fetch_source(cat_row, save=True, reduce=False)

    data = RawPhotometry(filename=str(stored.raw_photometry[0].get_fullname()))
    data.load()
    obs.pars.reducer = {"gap": 60}
    lcs = obs.reduce(data, data_type="photometry")
    print("reduce:", len(lcs), "lightcurve(s)")

    with Session() as session:
        source = session.scalars(sa.select(Source).where(Source.name == stored.name)).first()
        data = source.raw_photometry[0]
        mag_array = data.data["mag"]
        print("raw data:", data.filename, data.filekey, len(mag_array), "epochs")
        lcs = obs.reduce(data, data_type="photometry")
        for lc in lcs:
            lc.save()
            session.add(lc)
        session.commit()
    with SmartSession() as session:
        print(
            "lightcurves stored:",
            session.scalar(sa.select(sa.func.count()).select_from(sa.text("lightcurves"))),
        )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data-root", default=tempfile.mkdtemp(prefix="aretriever-seed-"))
    p.add_argument("--db-url", default=None)
    args = p.parse_args()
    os.environ["RETRIEVER_DATA"] = args.data_root
    if args.db_url:
        os.environ["ARETRIEVER_DB_URL"] = args.db_url
    url = start_fake_archive()
    quick_start(url)
    downloading_data(url)
    reducing_and_using_the_data(url)
    print("all examples ran; data in", Path(args.data_root))


if __name__ == "__main__":
    main()
