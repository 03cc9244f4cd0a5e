"""Recorded IRSA ZTF lightcurve rows, moved onto any requested position, fast.

The recording (``data/ZTF_lightcurve.csv``, see ``data/PROVENANCE.md``) is IRSA's
``nph_light_curves`` CSV as AstroRetriever saved it: a leading pandas index column and four
columns it computed (``snr, peak_mag, flux, fluxerr``) were added. Dropping those five columns
gives back IRSA's own CSV; that is done here, as text, so every other value keeps IRSA's bytes.

An answer moves the rows so that their median position lands on the requested (ra, dec) and
every row keeps its true angular offset from it, so a reducer keeps the same oids there as at
the star's real position (RA ~0/360, Dec +51.39). Only ``ra`` and ``dec`` change, so the rows
are laid out once per ``BAD_CATFLAGS_MASK`` with a gap where those two fields go; a request
formats 2 x 1,852 numbers with numpy and writes them into the gaps.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import numpy as np

ZTF_PATH: Final = "/cgi-bin/ZTF/nph_light_curves"
RECORDED_FILE: Final = "ZTF_lightcurve.csv"
ADDED_COLUMNS: Final = ("snr", "peak_mag", "flux", "fluxerr")  # by AstroRetriever, not IRSA

Array = np.ndarray[Any, Any]

_UNITS: Final = 10**7  # IRSA writes ra/dec with 7 decimals
_FULL_CIRCLE: Final = 360 * _UNITS
# digit look-up tables: _WHOLE[n][i] is the last n digits of i (zero-padded), _LOW[i] is "%04d" % i
_WHOLE: Final = {
    n: np.array([f"{i:03d}"[3 - n :].encode() for i in range(1000)], dtype=f"S{n}") for n in (1, 2, 3)
}
_LOW: Final = np.array([f"{i:04d}".encode() for i in range(10000)], dtype="S4")
_MAX_LAYOUTS: Final = 64


def irsa_rows(recording: str, name: str = RECORDED_FILE) -> list[list[str]]:
    """IRSA's header and rows (as text fields) from AstroRetriever's saved CSV."""
    lines = [line.split(",") for line in recording.splitlines() if line]
    header = lines[0]
    if header[0] != "" or tuple(header[-len(ADDED_COLUMNS) :]) != ADDED_COLUMNS:
        raise ValueError(f"{name}: expected an index column first and {ADDED_COLUMNS} last")
    keep = slice(1, len(header) - len(ADDED_COLUMNS))
    return [fields[keep] for fields in lines]


def recorded_irsa_csv(data_dir: Path) -> bytes:
    """The recorded answer as IRSA sent it (derived, not moved)."""
    rows = irsa_rows((data_dir / RECORDED_FILE).read_text("ascii"))
    return "".join(",".join(fields) + "\n" for fields in rows).encode("ascii")


@dataclass(slots=True)
class _Layout:
    """The rows that survive one BAD_CATFLAGS_MASK, split around their ra/dec fields."""

    pieces: list[bytes]  # header, then per row: text up to ra, <ra>, <dec>, text after dec
    east_deg: Array  # offset from the median position along RA, on the sky
    north_deg: Array
    _frames: dict[int, tuple[Array, Array]] = field(default_factory=dict)

    def frame(self, width: int) -> tuple[Array, Array]:
        """A reusable buffer holding the fixed text with ``width`` bytes left for "ra,dec" in each
        row, and the buffer positions of those bytes, row after row."""
        if width not in self._frames:
            pieces = self.pieces.copy()
            pieces[2::4] = [b"\0" * width] * len(self.east_deg)
            before = np.array([len(text) for text in self.pieces[1::4]])
            row_length = before + width + np.array([len(text) for text in self.pieces[4::4]])
            starts = len(pieces[0]) + np.concatenate(([0], np.cumsum(row_length)[:-1])) + before
            buffer = np.frombuffer(b"".join(pieces), dtype=np.uint8).copy()
            self._frames[width] = (buffer, (starts[:, None] + np.arange(width)).ravel())
        return self._frames[width]


class ZtfReplay:
    """The recorded rows, ready to be answered at any position.

    Answers reuse one buffer per row width, so one instance serves one thread (an event loop).
    """

    def __init__(self, rows: list[list[str]]) -> None:
        self.header = rows[0]
        self.rows = rows[1:]
        column = {name: i for i, name in enumerate(self.header)}
        self._ra_at, self._dec_at = column["ra"], column["dec"]
        self.catflags = np.array([int(r[column["catflags"]]) for r in self.rows], dtype=np.int64)
        ra = np.array([float(r[self._ra_at]) for r in self.rows])
        dec = np.array([float(r[self._dec_at]) for r in self.rows])
        self.median_ra, self.median_dec = median_position(ra, dec)
        wrapped = (ra - self.median_ra + 180.0) % 360.0 - 180.0
        self._east = wrapped * math.cos(math.radians(self.median_dec))
        self._north = dec - self.median_dec
        self._layouts: dict[int, _Layout] = {}

    @classmethod
    def load(cls, data_dir: Path) -> ZtfReplay:
        """Read the recording in ``data_dir``."""
        return cls(irsa_rows((data_dir / RECORDED_FILE).read_text("ascii")))

    def answer(self, ra_deg: float, dec_deg: float, bad_catflags_mask: int = 0) -> bytes:
        """IRSA's CSV with the rows moved onto (ra, dec), without rows whose catflags hit the mask.

        IRSA leaves out an epoch when ``catflags & BAD_CATFLAGS_MASK`` is not zero.
        """
        layout = self._layout(bad_catflags_mask)
        cos_dec = max(math.cos(math.radians(dec_deg)), 1e-6)
        ra = np.rint((ra_deg + layout.east_deg / cos_dec) * _UNITS).astype(np.int64) % _FULL_CIRCLE
        dec = np.clip(dec_deg + layout.north_deg, -90.0, 90.0)
        dec_units = np.rint(np.abs(dec) * _UNITS).astype(np.int64)
        dec_negative = (dec < 0) & (dec_units > 0)
        ra_groups = _groups(ra, np.zeros(ra.size, dtype=bool))
        dec_groups = _groups(dec_units, dec_negative)
        if len(ra_groups) == 1 and len(dec_groups) == 1:
            # every row has the same ra/dec width (nearly always): write into the fixed frame
            ra_text = _fixed(ra, *ra_groups[0][:2], b",")
            dec_text = _fixed(dec_units, *dec_groups[0][:2], b"")
            split = ra_text.itemsize
            text = np.empty((ra.size, split + dec_text.itemsize), dtype=np.uint8)
            text[:, :split] = ra_text.view(np.uint8).reshape(ra.size, -1)
            text[:, split:] = dec_text.view(np.uint8).reshape(ra.size, -1)
            buffer, positions = layout.frame(text.shape[1])
            buffer[positions] = text.ravel()
            return buffer.tobytes()
        pieces = layout.pieces.copy()
        pieces[2::4] = decimals(ra, np.zeros(ra.size, dtype=bool), b",")
        pieces[3::4] = decimals(dec_units, dec_negative, b"")
        return b"".join(pieces)

    def _layout(self, mask: int) -> _Layout:
        layout = self._layouts.get(mask)
        if layout is None:
            if len(self._layouts) >= _MAX_LAYOUTS:
                self._layouts.clear()
            layout = self._layouts[mask] = self._split(np.flatnonzero(self.catflags & mask == 0))
        return layout

    def _split(self, keep: Array) -> _Layout:
        ra_at, dec_at = self._ra_at, self._dec_at
        pieces = [(",".join(self.header) + "\n").encode("ascii")]
        for i in keep.tolist():
            fields = self.rows[i]
            before = ",".join(fields[:ra_at]) + ","
            after = "," + ",".join(fields[dec_at + 1 :]) + "\n"
            pieces += [before.encode("ascii"), b"", b"", after.encode("ascii")]
        return _Layout(pieces, self._east[keep], self._north[keep])


def median_position(ra: Array, dec: Array) -> tuple[float, float]:
    """Median (ra, dec) in degrees, with RA unwrapped around the first row (wrap-safe)."""
    offset = float(np.median((ra - ra[0] + 180.0) % 360.0 - 180.0))
    return (float(ra[0]) + offset) % 360.0, float(np.median(dec))


def _groups(units: Array, negative: Array) -> list[tuple[int, int, Array | slice]]:
    """(sign, integer digits, rows) of each set of rows written with the same width."""
    whole = units // _UNITS
    key = negative * 4 + 1 + (whole >= 10).astype(np.int64) + (whole >= 100)
    low, high = int(key.min()), int(key.max())
    if low == high:
        return [(*divmod(low, 4), slice(None))]
    return [(*divmod(k, 4), np.flatnonzero(key == k)) for k in range(low, high + 1) if (key == k).any()]


@functools.cache
def _record(sign: int, ndig: int, trailer: bytes) -> np.dtype[Any]:
    """A record type laying out ``[-]d.ddddddd<trailer>`` as byte-string fields."""
    parts = [("sign", 1)] if sign else []
    parts += [("whole", ndig), ("point", 1), ("high", 3), ("low", 4)]
    if trailer:
        parts.append(("trailer", len(trailer)))
    sizes = [size for _, size in parts]
    return np.dtype(
        {
            "names": [name for name, _ in parts],
            "formats": [f"S{size}" for size in sizes],
            "offsets": [sum(sizes[:i]) for i in range(len(sizes))],
            "itemsize": sum(sizes),
        }
    )


def _fixed(units: Array, sign: int, ndig: int, trailer: bytes) -> Array:
    """``[-]d.ddddddd`` + trailer for each value (1e-7 units, all of one width), as ``S<n>``."""
    whole, fraction = np.divmod(units, _UNITS)
    high, low = np.divmod(fraction, 10**4)
    record = np.empty(units.size, dtype=_record(sign, ndig, trailer))
    if sign:
        record["sign"] = b"-"
    record["whole"] = np.take(_WHOLE[ndig], whole)
    record["point"] = b"."
    record["high"] = np.take(_WHOLE[3], high)
    record["low"] = np.take(_LOW, low)
    if trailer:
        record["trailer"] = trailer
    return record.view(f"S{record.dtype.itemsize}")


def decimals(units: Array, negative: Array, trailer: bytes) -> list[bytes]:
    """Each value (1e-7 units, below 1000) as ``f"{x:.7f}"`` would write it, plus trailer."""
    text = np.empty(units.size, dtype=object)
    for sign, ndig, rows in _groups(units, negative):
        text[rows] = _fixed(units[rows], sign, ndig, trailer).astype(object)
    items: list[bytes] = text.tolist()
    return items
