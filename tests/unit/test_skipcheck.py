"""The skip check's decision for one source (pure), every branch."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from aretriever.engine.skipcheck import Action, FileState, Freshness, StoredRaw, decide

OK = StoredRaw("ok", "ZTF/RA001/x.h5", 100)
ON_DISK = FileState(100)
MISSING = FileState(None)


@pytest.mark.parametrize(
    ("row", "raw_file", "lightcurves", "kwargs", "expected"),
    [
        (None, MISSING, None, {}, (Action.FETCH, "new")),
        (None, ON_DISK, None, {}, (Action.RELINK, "file on disk without a row")),
        (OK, MISSING, None, {}, (Action.REFETCH, "raw file missing")),
        (OK, FileState(99), None, {}, (Action.REFETCH, "raw file is 99 bytes, the row says 100")),
        (OK, FileState(100, readable=False), None, {}, (Action.REFETCH, "raw file unreadable")),
        (StoredRaw("no_data", None, None), MISSING, None, {}, (Action.SKIP, "stored")),
        (OK, ON_DISK, None, {"needs_reduction": False}, (Action.SKIP, "stored")),
        (OK, ON_DISK, None, {}, (Action.REDUCE, "no lightcurves for this project")),
        (OK, ON_DISK, MISSING, {}, (Action.REDUCE, "reduced file missing or unreadable")),
        (OK, ON_DISK, ON_DISK, {}, (Action.SKIP, "stored")),
        # with analysis: a source is done once analysed for this project and config hash
        (OK, ON_DISK, ON_DISK, {"needs_analysis": True}, (Action.REDUCE, "not analysed for this project")),
        (OK, ON_DISK, ON_DISK, {"needs_analysis": True, "analysed": 3}, (Action.SKIP, "stored")),
        (
            OK,
            ON_DISK,
            None,
            {"needs_analysis": True, "analysed": 0},
            (Action.SKIP, "analysed: no lightcurves"),
        ),
        (
            OK,
            ON_DISK,
            None,
            {"needs_analysis": True, "analysed": 2},
            (Action.REDUCE, "no lightcurves for this project"),
        ),
        (
            OK,
            ON_DISK,
            MISSING,
            {"needs_analysis": True, "analysed": 2},
            (Action.REDUCE, "reduced file missing or unreadable"),
        ),
        (OK, MISSING, ON_DISK, {"needs_analysis": True, "analysed": 2}, (Action.REFETCH, "raw file missing")),
    ],
)
def test_decide(row, raw_file, lightcurves, kwargs, expected) -> None:
    assert decide(row, raw_file, lightcurves, **{"needs_reduction": True, **kwargs}) == expected


@pytest.mark.parametrize(
    ("row", "lightcurves", "kwargs", "expected"),
    [
        (OK, ON_DISK, {"stale": True}, (Action.REFETCH, "raw data older than the refresh age")),
        (
            StoredRaw("no_data", None, None),
            None,
            {"stale": True},
            (Action.REFETCH, "raw data older than the refresh age"),
        ),
        (None, None, {"backing_off": True}, (Action.SKIP, "failed recently: fetch waits for the back-off")),
        (OK, None, {"backing_off": True}, (Action.SKIP, "failed recently: reduce waits for the back-off")),
        (OK, ON_DISK, {"backing_off": True}, (Action.SKIP, "stored")),
    ],
)
def test_refresh_and_back_off(row, lightcurves, kwargs, expected) -> None:
    raw_file = ON_DISK if row is OK else MISSING
    assert decide(row, raw_file, lightcurves, needs_reduction=True, **kwargs) == expected


def test_freshness_limits_move_with_the_clock() -> None:
    now = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)
    fresh = Freshness.of(2.0, 60.0, now)
    assert fresh.refetch_before == datetime(2026, 12, 2, 12, 0, tzinfo=UTC)
    assert fresh.failed_retry_before == datetime(2026, 12, 4, 11, 59, tzinfo=UTC)
    assert Freshness.of(None, None, now) == Freshness()
