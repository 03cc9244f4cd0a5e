"""Pure parsers for catalog answers: VOTable (VizieR ASU, TAP results), TAP JSON and CSV, UWS jobs.

Nothing here does IO beyond reading a file it is handed; every function runs on recorded answers
in the unit tests. Row limits are read from the answer itself: VizieR's ``-out.max`` INFO, TAP's
``QUERY_STATUS=OVERFLOW`` INFO, or a row count equal to the limit that was asked for.
"""

from __future__ import annotations

import io
import json
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import numpy as np
import pandas as pd

from aretriever.catalogs.names import csv_text_options
from aretriever.errors import CatalogError

_TAIL_BYTES: Final = 256
UWS_NS: Final = "{http://www.ivoa.net/xml/UWS/v1.0}"
FINAL_PHASES: Final = frozenset({"COMPLETED", "ERROR", "ABORTED"})


@dataclass(frozen=True, slots=True)
class ParsedTable:
    """A table read from an archive answer, with the answer's INFO elements."""

    frame: pd.DataFrame
    infos: tuple[tuple[str, str], ...] = ()
    table_name: str = ""
    epoch: str | None = None  # COOSYS epoch, e.g. "J2016.0"

    def info(self, name: str) -> list[str]:
        """The values of every INFO element called ``name``, in document order."""
        return [value for key, value in self.infos if key == name]


@dataclass(frozen=True, slots=True)
class UwsJob:
    """What a UWS job document says about an asynchronous TAP job."""

    job_id: str
    phase: str
    error: str | None = None
    parameters: dict[str, str] = field(default_factory=dict)


# -------------------------------------------------------------------------- VOTable


def votable_is_complete(path: Path) -> bool:
    """Cheap check before parsing: the document ends with ``</VOTABLE>``."""
    size = path.stat().st_size
    with path.open("rb") as f:
        f.seek(max(0, size - _TAIL_BYTES))
        return f.read().rstrip().endswith(b"</VOTABLE>")


def read_votable(source: Path | bytes, what: str) -> ParsedTable:
    """The first table of a VOTable document, as a frame, with its INFOs and COOSYS epoch.

    Raises
    ------
    CatalogError
        If the document is not a complete VOTable or holds no table.
    """
    from astropy.io.votable import parse

    stream = io.BytesIO(source) if isinstance(source, bytes) else source
    try:
        document = parse(stream, verify="ignore")
        table = document.get_first_table()
    except (ValueError, IndexError, OSError) as exc:  # astropy reports XML errors as ValueError
        raise CatalogError(f"catalog: {what}: not a complete VOTable ({exc})") from exc
    epochs = [c.epoch for c in document.iter_coosys() if c.epoch]
    return ParsedTable(
        frame=_astropy_to_frame(table.to_table(use_names_over_ids=True)),
        infos=tuple((str(i.name), str(i.value)) for i in document.iter_info()),
        table_name=str(table.name or table.ID or ""),
        epoch=str(epochs[0]) if epochs else None,
    )


def _astropy_to_frame(table: Any) -> pd.DataFrame:
    """Masked cells become NaN (floats), <NA> (integers: 64-bit ids stay exact) or "" (text)."""
    data: dict[str, Any] = {}
    for name in table.colnames:
        column = table[name]
        values = np.ma.masked_array(column)
        if values.dtype.kind in "SUO":
            data[name] = [_text(v) for v in np.ma.filled(values, "")]
        elif values.dtype.kind in "iu" and np.ma.is_masked(values):
            data[name] = pd.arrays.IntegerArray(np.ma.getdata(values), np.ma.getmaskarray(values))
        elif values.dtype.kind in "fc":
            data[name] = np.ma.filled(values, np.nan)
        else:
            data[name] = np.ma.getdata(values)
    return pd.DataFrame(data)


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def query_status_error(parsed: ParsedTable) -> str | None:
    """The archive's error message when the answer says ``QUERY_STATUS=ERROR``."""
    return "QUERY_STATUS=ERROR" if "ERROR" in parsed.info("QUERY_STATUS") else None


def row_limit_reason(parsed: ParsedTable, asked_max_rows: int | None) -> str | None:
    """Why the table may be cut at a row limit (None when nothing says it is).

    Signals, in order: TAP's ``QUERY_STATUS=OVERFLOW``; VizieR's ``-out.max`` INFO with a number
    the row count reaches; a row count reaching ``asked_max_rows`` (the ``MAXREC`` we sent, or the
    one the job document says the archive applied).
    """
    rows = len(parsed.frame)
    if "OVERFLOW" in parsed.info("QUERY_STATUS"):
        limit = f"MAXREC={asked_max_rows}" if asked_max_rows is not None else "the archive's own limit"
        return f"the archive says QUERY_STATUS=OVERFLOW: the result was cut at {rows} rows ({limit})"
    for value in parsed.info("-out.max"):
        if value.strip().isdigit() and rows >= int(value):
            return f"VizieR stopped at its row limit: -out.max={value} and {rows} rows came back"
    if asked_max_rows is not None and rows >= asked_max_rows:
        return f"{rows} rows came back, as many as the row limit (MAXREC={asked_max_rows})"
    return None


# -------------------------------------------------------------------------- TAP JSON and CSV


def read_tap_json(body: bytes, what: str) -> pd.DataFrame:
    """A TAP ``FORMAT=json`` answer (``metadata`` + ``data``) as a frame; 64-bit ids stay exact.

    Integer columns are int64, or nullable Int64 when a cell is null (never float: Gaia ids).
    """
    try:
        document = json.loads(body)
        names = [column["name"] for column in document["metadata"]]
        rows = document["data"]
    except (ValueError, KeyError, TypeError) as exc:
        raise CatalogError(f"catalog: {what}: not a TAP JSON result ({exc!r})") from exc
    frame = pd.DataFrame(rows, columns=names, dtype=object)  # object: no int -> float on the way
    for column in document["metadata"]:
        values = frame[column["name"]]
        if column.get("datatype") in {"long", "int", "short"}:
            frame[column["name"]] = values.astype("int64" if values.notna().all() else "Int64")
        else:
            frame[column["name"]] = values.infer_objects()
    return frame


def read_csv_table(body: bytes, what: str) -> pd.DataFrame:
    """A TAP ``FORMAT=csv`` answer as a frame: names as text, integers exact (Int64 with nulls)."""
    try:
        header = pd.read_csv(io.BytesIO(body), nrows=0).columns
        options = csv_text_options(header, ("name", "designation"))
        return pd.read_csv(io.BytesIO(body), dtype_backend="numpy_nullable", **options)  # type: ignore[no-any-return]
    except (ValueError, pd.errors.ParserError) as exc:
        raise CatalogError(f"catalog: {what}: not a CSV table ({exc})") from exc


# -------------------------------------------------------------------------- UWS


def parse_uws_job(body: bytes, what: str) -> UwsJob:
    """The job id, phase, parameters and error message of a UWS job document."""
    try:
        root = ET.fromstring(body)
    except ET.ParseError as exc:
        raise CatalogError(f"catalog: {what}: not a UWS job document ({exc})") from exc
    job_id = root.findtext(f"{UWS_NS}jobId", default="").strip()
    phase = root.findtext(f"{UWS_NS}phase", default="").strip().upper()
    if not job_id or not phase:
        raise CatalogError(f"catalog: {what}: UWS job document without jobId or phase")
    parameters = {
        str(p.get("id", "")).lower(): (p.text or "").strip() for p in root.iter(f"{UWS_NS}parameter")
    }
    message = root.findtext(f"{UWS_NS}errorSummary/{UWS_NS}message")
    return UwsJob(job_id, phase, message.strip() if message else None, parameters)


def parse_phase(body: bytes) -> str:
    """A UWS ``/phase`` answer (plain text such as ``EXECUTING``)."""
    return body.decode("utf-8", "replace").strip().upper()
