"""What an unversioned project goes by: the products hash, its record on rows, the skip decision."""

from __future__ import annotations

import pytest

from aretriever.config import load_config
from aretriever.config_output import products_hash
from aretriever.engine.resources import products_for
from aretriever.engine.skipcheck import Action, FileState, Products, StoredRaw, decide
from aretriever.settings import Config
from aretriever.store import rows

OK = StoredRaw("ok", "ZTF/RA001/x.h5", 100)
ON_DISK = FileState(100)


def _cfg(**overrides: object) -> Config:
    return load_config(False, project="flat", overrides=overrides or None)


def test_the_products_hash_follows_what_shapes_a_sources_products() -> None:
    base = products_hash(_cfg(), "ztf")
    assert products_hash(_cfg(), "ztf") == base
    assert products_hash(_cfg(analysis_kwargs={"finder_kwargs": {"snr_threshold": 4.5}}), "ztf") != base
    assert products_hash(_cfg(ZTF={"reducer": {"gap_days": 10.0}}), "ztf") != base
    # which sources, how fast, another observatory's settings: the same products
    assert products_hash(_cfg(catalog_kwargs={"test_size": 7}), "ztf") == base
    assert products_hash(_cfg(description="another"), "ztf") == base
    assert products_hash(_cfg(ZTF={"rate_per_s": 3.0}), "ztf") == base
    assert products_hash(_cfg(TESS={"reducer": {"zero_point_mag": 20.0}}), "ztf") == base


@pytest.mark.parametrize(("version_control", "required"), [(False, True), (True, False)])
def test_only_an_unversioned_project_requires_a_matching_record(
    version_control: bool, required: bool
) -> None:
    products = products_for(_cfg(version_control=version_control), reduce=True, analyze=True)
    stamp = products.stamp("ztf")
    assert stamp == products_hash(_cfg(), "ztf")
    # with version control the folder and key are the version: rows are recorded, never compared
    assert products.required_stamp("ztf") == (stamp if required else None)
    assert Products("flat", "", "FLAT", reduce=False, made_with={"ztf": "h"}).required_stamp("ztf") is None


def test_product_rows_record_their_hash_beside_their_meta() -> None:
    key = rows.product_key("WD 1", "ztf", "flat", "")
    props = rows.properties_row(key, {"num_lightcurves": 1, "meta": {"injections": []}}, "h1")
    assert props["meta"] == {"injections": [], rows.MADE_WITH: "h1"} and props["cfg_hash"] == ""
    assert rows.properties_row(key, None, "h1")["meta"] == {rows.MADE_WITH: "h1"}
    assert rows.properties_row(key, {"num_lightcurves": 0}) == {**key, "num_lightcurves": 0}


@pytest.mark.parametrize(
    ("row", "kwargs", "expected"),
    [
        (OK, {"analysed": 3}, (Action.REDUCE, "config changed since its products were made")),
        (OK, {"analysed": 0}, (Action.REDUCE, "config changed since its products were made")),
        (OK, {"analysed": 3, "stale": True}, (Action.REFETCH, "raw data older than the refresh age")),
        (StoredRaw("no_data", None, None), {}, (Action.SKIP, "stored")),
        (
            OK,
            {"analysed": 3, "backing_off": True},
            (Action.SKIP, "failed recently: reduce waits for the back-off"),
        ),
    ],
)
def test_a_changed_config_reduces_stored_raw_data_again(row, kwargs, expected) -> None:
    raw_file = ON_DISK if row is OK else FileState(None)
    lcs = ON_DISK if kwargs.get("analysed") else None
    got = decide(row, raw_file, lcs, needs_reduction=True, needs_analysis=True, config_changed=True, **kwargs)
    assert got == expected
