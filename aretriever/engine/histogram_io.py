"""Score histograms on disk: ``<product folder>/score_histograms.h5``.

The counting is pure science (:class:`aretriever.science.histograms.ScoreHistograms`); this module
writes and reads its arrays. Each score is one gzip-compressed dataset, the binning is in the
file's attributes, and an optional ``counted`` dataset is the ledger of the lightcurves counted
(see :mod:`aretriever.engine.histogram_file`), kept in the same file so the two never disagree.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Final

import h5py
import numpy as np

from aretriever.errors import StoreError
from aretriever.science.histograms import FORMAT_NAME, FORMAT_VERSION, SCORES, HistogramError, ScoreHistograms
from aretriever.store.hdf5 import atomic_path

HISTOGRAM_FILENAME: Final = "score_histograms.h5"
LEDGER: Final = "counted"  # optional dataset: sorted uint64 digests of the lightcurves counted

Array = np.ndarray[Any, Any]


def histogram_path(project_dir: Path) -> Path:
    """The histogram file of a project folder (``<project_dir>/score_histograms.h5``)."""
    return Path(project_dir) / HISTOGRAM_FILENAME


def save_histograms(path: Path, histograms: ScoreHistograms, ledger: Array | None = None) -> None:
    """Write ``histograms`` (and the ledger) to ``path`` atomically: a temporary file, then rename.

    Raises
    ------
    WriteError
        If the file cannot be written; an older file under ``path`` is kept.
    """
    attrs, data = histograms.to_arrays()
    with atomic_path(Path(path), "histograms") as tmp, h5py.File(tmp, "w") as h5:
        h5.attrs.update(attrs)
        for name, values in data.items():
            compress = {"compression": "gzip", "shuffle": True} if name in SCORES else {}
            h5.create_dataset(name, data=values, **compress)
        if ledger is not None:
            h5.create_dataset(LEDGER, data=np.asarray(ledger, dtype=np.uint64))


def load_histograms(path: Path) -> ScoreHistograms:
    """Read a file written by :func:`save_histograms`.

    Raises
    ------
    StoreError
        If the file is missing, unreadable, or not a score-histogram file of this version.
    """
    return load_with_ledger(path)[0]


def load_with_ledger(path: Path) -> tuple[ScoreHistograms, Array]:
    """:func:`load_histograms`, and the ledger saved with the counts (empty for a file without one)."""
    try:
        with h5py.File(path, "r") as h5:
            attrs = dict(h5.attrs)
            if not ScoreHistograms.is_format(attrs):
                raise StoreError(f"histograms: {path} is not an {FORMAT_NAME} v{FORMAT_VERSION} file")
            ledger = np.asarray(h5[LEDGER][()] if LEDGER in h5 else [], dtype=np.uint64)
            data = {name: h5[name][()] for name in ("filters", "exptimes_s", *SCORES)}
            return ScoreHistograms.from_arrays(attrs, data), ledger
    except HistogramError as exc:
        raise StoreError(f"histograms: {path}: {exc}") from exc
    except (OSError, KeyError, ValueError) as exc:
        raise StoreError(f"histograms: cannot read {path}: {exc}") from exc
