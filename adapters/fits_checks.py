"""Checks that a downloaded FITS file is whole, before astropy reads it.

astropy reads a cut file with a warning and hands back what it found; a download cut under a
complete HTTP answer must instead be fetched again, so the sizes the headers promise are checked
against the file first. Only the cards that size an HDU are read (FITS standard 4.0, eq. 1, 2).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import BinaryIO, Final

from aretriever.errors import MalformedResponse

_BLOCK: Final = 2880  # FITS headers and data come in blocks of 2880 bytes
_CARD: Final = 80
_SIZING: Final = ("BITPIX", "PCOUNT", "GCOUNT", "NEXTEND")


def check_fits_layout(path: Path, source: str = "") -> None:
    """Check that ``path`` holds whole FITS HDUs, at least two, and as many as NEXTEND announces.

    Only the header cards that size an HDU are read (BITPIX, NAXISn, PCOUNT, GCOUNT), block by
    block; the data are skipped over.

    Raises
    ------
    MalformedResponse
        A header or a data unit is cut short, or extensions are missing.
    """
    size = path.stat().st_size
    offset, count, announced = 0, 0, None
    with path.open("rb") as stream:
        while offset < size:
            cards, header_bytes = _read_header(stream, offset)
            if cards is None:
                raise broken_file(path, source, f"the header of HDU {count} is cut short")
            end = offset + header_bytes + _data_bytes(cards)
            if end > size:
                raise broken_file(path, source, f"cut short: {size} of {end} bytes")
            announced = cards.get("NEXTEND") if count == 0 else announced
            offset, count = end, count + 1
    if count == 0:
        raise broken_file(path, source, "empty file")
    if count < 2 or (announced is not None and count < announced + 1):
        raise broken_file(path, source, f"{count - 1} of {announced or 1} extensions present")


def _read_header(stream: BinaryIO, offset: int) -> tuple[dict[str, int] | None, int]:
    """(the sizing cards of the header at ``offset``, its length); None when it has no END."""
    stream.seek(offset)
    cards: dict[str, int] = {}
    length = 0
    while block := stream.read(_BLOCK):
        if len(block) < _BLOCK:
            return None, length
        length += _BLOCK
        for start in range(0, _BLOCK, _CARD):
            card = block[start : start + _CARD]
            keyword = card[:8].rstrip().decode("ascii", "replace")
            if keyword == "END":
                return cards, length
            if card[8:10] == b"= " and (keyword in _SIZING or keyword.startswith("NAXIS")):
                cards[keyword] = _card_int(card)
    return None, length


def _card_int(card: bytes) -> int:
    try:
        return int(card[10:].split(b"/")[0].strip())
    except ValueError:
        return 0  # not an integer: not a sizing value this reader could use


def _data_bytes(cards: Mapping[str, int]) -> int:
    """The padded size of an HDU's data (FITS standard 4.0, eq. 1 and 2)."""
    naxis = cards.get("NAXIS", 0)
    if naxis == 0:
        return 0
    elements = math.prod(cards.get(f"NAXIS{i}", 0) for i in range(1, naxis + 1))
    bits = abs(cards.get("BITPIX", 8)) * cards.get("GCOUNT", 1) * (cards.get("PCOUNT", 0) + elements)
    return -(-(bits // 8) // _BLOCK) * _BLOCK


def broken_file(path: Path, source: str, text: str) -> MalformedResponse:
    """The error for a lightcurve file that is cut short or garbled (worth downloading again)."""
    return MalformedResponse(f"tess: broken lightcurve file {path.name} for {source}: {text}")
