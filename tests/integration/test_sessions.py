"""Synchronous access for notebooks: Session and SmartSession on the engine's database."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa

from aretriever.store import NoOpSession, Session, SmartSession, hdf5, use_database
from aretriever.store.models import Lightcurve, RawPhotometry, Source


@pytest.fixture
def backfilled(run_cli, db_url: str, tmp_path: Path):  # type: ignore[no-untyped-def]
    assert run_cli(size=3) == 0
    use_database(db_url)
    yield tmp_path / "data"
    use_database(None)


def test_session_reads_what_the_engine_wrote(backfilled: Path) -> None:
    with Session(data_root=backfilled) as session:
        sources = session.scalars(sa.select(Source).order_by(Source.name)).all()
        assert [s.name for s in sources] == ["TEST000000", "TEST000001", "TEST000002"]
        raw = session.scalars(sa.select(RawPhotometry).where(RawPhotometry.source_name == "TEST000001")).one()
        lc = session.scalars(sa.select(Lightcurve).where(Lightcurve.source_name == "TEST000001")).first()
    assert lc is not None
    # tables load lazily from the right DATA_ROOT, after the session closed
    assert len(raw.data) == raw.num_rows and "mag" in raw.data
    assert len(lc.data) == lc.num_rows and "dsnr" in lc.data
    # a dataset object works on a file alone
    alone = RawPhotometry(filename=str(backfilled / raw.filename), filekey=raw.filekey)
    pd.testing.assert_frame_equal(alone.load(), raw.data)


def test_delete_data_then_the_row_as_the_seed_readme_shows(backfilled: Path) -> None:
    with Session(data_root=backfilled) as session:
        lc = session.scalars(sa.select(Lightcurve).order_by(Lightcurve.id)).first()
        assert lc is not None
        path, key = lc.get_fullname(), lc.filekey
        assert key in hdf5.h5_keys(path)
        lc.delete_data_from_disk()
        session.delete(lc)
        session.commit()
        assert session.get(Lightcurve, lc.id) is None
    assert not path.exists() or key not in hdf5.h5_keys(path)


def test_smart_session_semantics(backfilled: Path) -> None:
    with SmartSession() as opened:
        assert opened.scalar(sa.select(sa.func.count()).select_from(Source)) == 3
    with Session() as mine, SmartSession(mine) as passed:
        assert passed is mine
        passed.scalar(sa.select(sa.func.count()).select_from(Source))
    assert mine.get_bind() is not None  # passed through, not closed by SmartSession
    with SmartSession(False) as none:
        assert isinstance(none, NoOpSession)
        assert none.scalars(sa.select(Source)).all() == []
        none.add(Source(name="x", ra_deg=0.0, dec_deg=0.0))
        none.commit()
    with SmartSession() as check:
        assert check.scalar(sa.select(sa.func.count()).select_from(Source)) == 3


def test_the_global_switch_turns_database_access_off(monkeypatch: pytest.MonkeyPatch) -> None:
    from aretriever.store import sessions

    monkeypatch.setattr(sessions, "NO_DB_SESSION", True)
    with SmartSession() as none:
        assert isinstance(none, NoOpSession) and none.scalars(sa.select(Source)).first() is None
