"""The skip check's decision for one source (pure), every branch."""

from __future__ import annotations

import pytest

from aretriever.skipcheck import Action, FileState, StoredRaw, decide

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
