"""VizieR's ASU VOTable endpoint (``/viz-bin/votable``), replayed for the fake archive.

- ``-source=J/MNRAS/508/3877/maincat`` answers ``data/gf21_wd_maincat_fixture.vot``: real Gaia
  rows under the white-dwarf catalogue's VizieR column names (see ``data/PROVENANCE.md`` and
  :func:`build_wd_fixture`, which rebuilds it byte for byte from the recorded Gaia answers).
- ``-source=J/ApJ/706/83`` (or ``.../ysos``) answers the recorded VizieR answer
  ``data/kang2010.xml`` unchanged (50 rows at ``-out.max=50``: a result cut at its row limit).
- A numeric ``-out.max`` below the fixture's row count cuts it there and says so in the
  ``-out.max`` INFO, as VizieR does; :attr:`VizierReplay.server_max_rows` imposes such a cap
  whatever the client asked (a server-side limit).
- Anything else gets a 400 page.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import weakref
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import numpy as np

from aretriever.catalogs.index import wdj_names

if TYPE_CHECKING:
    from aiohttp import web

    from aretriever.testing.fake_archive import Answer, FakeArchive

VIZIER_PATH: Final = "/viz-bin/votable"
WD_SOURCE: Final = "J/MNRAS/508/3877/maincat"
WD_FIXTURE: Final = "gf21_wd_maincat_fixture.vot"
KANG_FILE: Final = "kang2010.xml"
KANG_SOURCES: Final = frozenset({"J/ApJ/706/83", "J/ApJ/706/83/ysos"})
GAIA_VOT: Final = "1710099405832VAL-result.vot"
GAIA_JSON: Final = "launch_job.json"

_ROW: Final = re.compile(rb"<TR>.*?</TR>\n", re.DOTALL)
_OUT_MAX: Final = re.compile(rb'(<INFO ID="MaxTuples" name="-out.max" value=")[^"]*(")')


@dataclass
class VizierReplay:
    """The bodies VizieR answers with, and a server-side row cap (None: none)."""

    wd_fixture: bytes
    kang: bytes
    server_max_rows: int | None = None

    @classmethod
    def load(cls, data_dir: Path) -> VizierReplay:
        return cls((data_dir / WD_FIXTURE).read_bytes(), (data_dir / KANG_FILE).read_bytes())

    def answer(self, query: Mapping[str, str]) -> Answer:
        """The answer to one ``/viz-bin/votable`` query."""
        from aretriever.testing.fake_archive import Answer

        source = query.get("-source", "")
        if source in KANG_SOURCES:
            return Answer(200, self.kang, {"Content-Type": "text/xml"})
        if source != WD_SOURCE:
            return error_page(400, "VizieR Error", f"-source={source!r} is not replayed here")
        limit = _row_limit(query.get("-out.max", "50"), self.server_max_rows)
        if limit is None:
            return error_page(400, "VizieR Error", f"-out.max={query.get('-out.max')!r} is not a number")
        return Answer(200, cut_rows(self.wd_fixture, limit), {"Content-Type": "text/xml"})


def error_page(status: int, title: str, text: str) -> Answer:
    """An HTML error page, as archives send them."""
    from aretriever.testing.fake_archive import Answer

    page = (
        f"<!DOCTYPE html>\n<html><head><title>{status} {title}</title></head>\n"
        f"<body><h1>{title}</h1>\n<p>{text}</p>\n</body></html>\n"
    )
    return Answer(status, page.encode(), {"Content-Type": "text/html; charset=utf-8"})


def _row_limit(out_max: str, server_max: int | None) -> int | None:
    if out_max.strip().lower() == "unlimited":
        asked = sys.maxsize
    elif out_max.strip().isdigit():
        asked = int(out_max)
    else:
        return None
    return asked if server_max is None else min(asked, server_max)


def cut_rows(document: bytes, limit: int) -> bytes:
    """The VOTable with at most ``limit`` rows; a cut one names its limit in the -out.max INFO."""
    rows = list(_ROW.finditer(document))
    if len(rows) <= limit:
        return document
    end = rows[limit - 1].end() if limit > 0 else rows[0].start()
    cut = document[:end] + document[rows[-1].end() :]
    return _OUT_MAX.sub(rb"\g<1>" + str(limit).encode() + rb"\g<2>", cut, count=1)


_REPLAYS: weakref.WeakKeyDictionary[FakeArchive, VizierReplay] = weakref.WeakKeyDictionary()


def install(archive: FakeArchive, data_dir: Path | None = None) -> VizierReplay:
    """Serve VizieR from ``archive``; the replay's knobs are reachable with :func:`replay_for`."""
    from aretriever.testing.fake_archive import DATA_DIR

    replay = VizierReplay.load(data_dir or DATA_DIR)
    _REPLAYS[archive] = replay

    async def handler(request: web.Request) -> Answer:
        return replay.answer(request.query)

    archive.add_route(VIZIER_PATH, handler)
    return replay


def replay_for(archive: FakeArchive) -> VizierReplay:
    """The VizieR replay installed on ``archive``."""
    return _REPLAYS[archive]


# -------------------------------------------------------------------------- the WD fixture

_HEAD: Final = """<?xml version="1.0" encoding="UTF-8"?>
<VOTABLE version="1.4" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"
  xmlns="http://www.ivoa.net/xml/VOTable/v1.3"
  xsi:schemaLocation="http://www.ivoa.net/xml/VOTable/v1.3 http://www.ivoa.net/xml/VOTable/v1.3">
 <DESCRIPTION>
   aretriever test fixture, NOT a VizieR answer: real Gaia DR3 rows (recorded Gaia archive
   answers, see PROVENANCE.md) under the VizieR column names of J/MNRAS/508/3877/maincat, in the
   envelope of a VizieR ASU VOTable. WDJname is derived from the positions; Pwd is unknown (null).
   Built by aretriever.testing.vizier_replay.build_wd_fixture.
 </DESCRIPTION>
<INFO ID="MaxTuples" name="-out.max" value="unlimited"/>
<INFO name="queryParameters" value="3">
-source=J/MNRAS/508/3877/maincat
-out=WDJname,GaiaEDR3,RA_ICRS,DE_ICRS,Gmag,Plx,pmRA,pmDE,Pwd
-out.max=unlimited
</INFO>
<RESOURCE ID="yCat_35083877" name="J/MNRAS/508/3877">
  <DESCRIPTION>Catalogue of white dwarfs in Gaia EDR3 (Gentile+, 2021)</DESCRIPTION>
  <COOSYS ID="H_2016.000" system="ICRS" epoch="J2016.0"/>
  <TABLE ID="J_MNRAS_508_3877_maincat" name="J/MNRAS/508/3877/maincat">
    <FIELD name="WDJname" ucd="meta.id;meta.main" datatype="char" arraysize="22"/>
    <FIELD name="GaiaEDR3" ucd="meta.id.cross" datatype="long"/>
    <FIELD name="RA_ICRS" ucd="pos.eq.ra;meta.main" ref="H_2016.000" datatype="double" unit="deg"/>
    <FIELD name="DE_ICRS" ucd="pos.eq.dec;meta.main" ref="H_2016.000" datatype="double" unit="deg"/>
    <FIELD name="Gmag" ucd="phot.mag;em.opt" datatype="double" unit="mag"/>
    <FIELD name="Plx" ucd="pos.parallax.trig" datatype="double" unit="mas"/>
    <FIELD name="pmRA" ucd="pos.pm;pos.eq.ra" datatype="double" unit="mas/yr"/>
    <FIELD name="pmDE" ucd="pos.pm;pos.eq.dec" datatype="double" unit="mas/yr"/>
    <FIELD name="Pwd" ucd="stat.probability" datatype="double"/>
<DATA><TABLEDATA>
"""
_TAIL: Final = """</TABLEDATA></DATA>
</TABLE>
</RESOURCE>
</VOTABLE>
"""


def _cell(value: Any) -> str:
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return "<TD></TD>"
    return f"<TD>{value}</TD>"


def _plain(value: Any) -> Any:
    # a VOTable "float" is float32: its shortest text is what the archive sent, not float64's
    if isinstance(value, np.float32):
        return float(str(value))
    return value.item() if isinstance(value, np.generic) else value


def gaia_rows(catalogs_dir: Path) -> list[dict[str, Any]]:
    """The real Gaia rows of the recorded answers: source_id, ra, dec, parallax, pm, G."""
    # astropy's VOTable reader, not the client's: a bug in the client's parser must not shape the
    # answers it is tested against
    from astropy.io.votable import parse_single_table

    frame = parse_single_table(catalogs_dir / GAIA_VOT).to_table(use_names_over_ids=True).to_pandas()
    keep = ["source_id", "ra", "dec", "parallax", "pmra", "pmdec", "phot_g_mean_mag"]
    rows: list[dict[str, Any]] = [
        {str(k): _plain(v) for k, v in row.items()}
        for row in frame[keep].to_dict("records")
    ]
    document = json.loads((catalogs_dir / GAIA_JSON).read_text())
    names = [column["name"] for column in document["metadata"]]
    rows += [dict(zip(names, values, strict=True)) for values in document["data"]]
    return rows


def build_wd_fixture(catalogs_dir: Path) -> bytes:
    """The WD fixture from the recorded Gaia answers in ``catalogs_dir`` (deterministic)."""
    rows = gaia_rows(catalogs_dir)

    def column(key: str) -> np.ndarray[Any, Any]:
        return np.array([np.nan if r.get(key) is None else float(r[key]) for r in rows])

    names = wdj_names(column("ra"), column("dec"), column("pmra"), column("pmdec"), column("parallax"))
    lines = []
    for name, row in sorted(zip(names, rows, strict=True), key=lambda pair: pair[0]):
        g = row.get("phot_g_mean_mag")
        cells = [
            f"<TD>{name}</TD>",
            f"<TD>{int(row['source_id'])}</TD>",
            *(_cell(row.get(k)) for k in ("ra", "dec")),
            _cell(None if g is None else str(np.float32(g))),  # Gaia stores G as float32
            *(_cell(row.get(k)) for k in ("parallax", "pmra", "pmdec")),
            _cell(None),  # Pwd: not known for these stars
        ]
        lines.append("<TR>" + "".join(cells) + "</TR>\n")
    return (_HEAD + "".join(lines) + _TAIL).encode()


def main(argv: list[str] | None = None) -> int:
    """``python -m aretriever.testing.vizier_replay CATALOGS_DIR``: print the rebuilt fixture."""
    parser = argparse.ArgumentParser(description=build_wd_fixture.__doc__)
    parser.add_argument("catalogs_dir", type=Path, help="folder with the recorded Gaia answers")
    args = parser.parse_args(argv)
    sys.stdout.buffer.write(build_wd_fixture(args.catalogs_dir))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
