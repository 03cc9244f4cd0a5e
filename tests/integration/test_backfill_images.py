"""End to end: the pool builds the files, the writer writes their bytes, compressed as configured."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import h5py
import pandas as pd
import pytest

from aretriever.catalogs.core import GeneratedCatalog
from aretriever.engine.histogram_io import histogram_path, load_histograms
from aretriever.store import paths
from aretriever.store.hdf5 import read_attrs


@pytest.mark.parametrize(
    ("compression", "reduced_compression"), [("gzip", "none"), ("lzf", "none"), ("gzip", "gzip")]
)
def test_a_run_writes_compressed_files_within_one_and_a_half_times_the_answers(
    run_cli, archive, tmp_path: Path, compression: str, reduced_compression: str
) -> None:
    before = datetime.now().astimezone()
    settings = ("--set", f"store.raw_compression={compression}")
    settings += ("--set", f"store.reduced_compression={reduced_compression}")
    assert run_cli(*settings, size=2) == 0
    root = tmp_path / "data"
    catalog = pd.concat(list(GeneratedCatalog(2).iter_chunks()))
    answers = on_disk = 0
    for _, row in catalog.iterrows():
        raw = root / paths.raw_relpath("ztf", row["name"], row["ra"])
        (reduced,) = root.glob(f"*/RA*/{raw.stem}_reduced.h5")
        with h5py.File(raw) as h5:
            dataset = h5[paths.raw_key(row["name"])]
            assert dataset.compression == compression and len(pd.DataFrame(dataset[:])) > 0
            attrs = read_attrs(dataset)
        # stamped by the event loop when the answer came, before the pool built the file
        assert before <= datetime.fromisoformat(attrs["fetched_at"]) <= datetime.now().astimezone()
        assert attrs["source_name"] == row["name"] and attrs["observatory"] == "ztf"
        with h5py.File(reduced) as h5:
            expected = None if reduced_compression == "none" else reduced_compression
            assert all(h5[key].compression == expected for key in h5)
            assert all({"snr", "dmag", "flagged"} <= set(h5[key].dtype.names) for key in h5)
        answers += len(archive.archive.ztf.answer(row["ra"], row["dec"], 32768))
        on_disk += raw.stat().st_size + reduced.stat().st_size
    assert on_disk <= 1.5 * answers, on_disk / answers
    # the scores the workers binned reached the project histograms
    (project,) = {p.parent.parent for p in root.glob("*/RA*/*_reduced.h5")}
    assert load_histograms(histogram_path(project)).n_points() > 0
