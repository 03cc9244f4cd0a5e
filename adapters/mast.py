"""The MAST Mashup client: request builders, answer parsing, and polling of EXECUTING answers.

Building a request and parsing an answer are pure functions; :func:`mast_query` is the only IO,
through the engine's :class:`HttpPort` (rate limit, retries, timeouts), so paging and polling
are tested without a socket. MAST's Mashup answers JSON with a ``status``: ``EXECUTING`` means
"ask again later" (polled with ``http.sleep`` until ``poll_deadline_s``), ``ERROR`` carries
MAST's message, and long answers come in pages (``paging.pagesFiltered``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from aretriever.errors import ArchiveErrorPage, MalformedResponse, PermanentFetchError, TransientFetchError

# relative: this folder installs as aretriever.adapters, and mypy reads it as ``adapters``
from .base import HttpPort, Request, Target
from .tess_config import TessConfig

INVOKE_PATH: Final = "/api/v0/invoke"
DOWNLOAD_PATH: Final = "/api/v0.1/Download/file"
TIC_CONE: Final = "Mast.Catalogs.Tic.Cone"
TIC_BY_ID: Final = "Mast.Catalogs.Filtered.Tic.Rows"
CAOM_FILTERED: Final = "Mast.Caom.Filtered"
CAOM_PRODUCTS: Final = "Mast.Caom.Products"
PAGE_SIZE: Final = 50_000  # rows per Mashup page (astroquery's default)
EXECUTING: Final = "EXECUTING"
COMPLETE: Final = "COMPLETE"
_QUOTE_CHARS: Final = 200

Row = Mapping[str, Any]

# --------------------------------------------------------------------------------------------
# pure request side


def build_invoke_request(
    cfg: TessConfig, service: str, params: Mapping[str, Any], *, page: int = 1
) -> Request:
    """A Mashup query: ``POST {base}/api/v0/invoke`` with the form field ``request=<JSON>`` (pure).

    Parameters
    ----------
    cfg : TessConfig
        ``base_url`` of MAST.
    service : str
        The Mashup service, e.g. ``"Mast.Caom.Filtered"``.
    params : mapping
        The service's parameters.
    page : int
        Which page of the answer (1-based); :data:`PAGE_SIZE` rows per page.
    """
    payload = {
        "service": service,
        "params": dict(params),
        "format": "json",
        "pagesize": PAGE_SIZE,
        "page": page,
    }
    url = cfg.base_url.rstrip("/") + INVOKE_PATH
    return Request("POST", url, data={"request": json.dumps(payload)}, headers={"Accept": "application/json"})


def tic_cone_params(target: Target, cfg: TessConfig) -> dict[str, float]:
    """``Mast.Catalogs.Tic.Cone`` parameters: position and radius in degrees."""
    return {
        "ra": target.ra_deg % 360.0,
        "dec": target.dec_deg,
        "radius": cfg.cat_query_radius_arcsec / 3600.0,
    }


def tic_id_params(tic: int) -> dict[str, Any]:
    """``Mast.Catalogs.Filtered.Tic.Rows`` parameters: the TIC row with this id."""
    return {"columns": "*", "filters": [{"paramName": "ID", "values": [str(tic)]}]}


def caom_params(tic: int) -> dict[str, Any]:
    """``Mast.Caom.Filtered`` parameters: TESS timeseries observations of one TIC star."""
    criteria = {"obs_collection": "TESS", "dataproduct_type": "timeseries", "target_name": str(tic)}
    filters = [{"paramName": name, "values": [value]} for name, value in criteria.items()]
    return {"columns": "*", "filters": filters}


def products_params(obsids: Sequence[str]) -> dict[str, str]:
    """``Mast.Caom.Products`` parameters: the products of these observations (``obsid``, not ``obs_id``)."""
    return {"obsid": ",".join(obsids)}


def build_download_request(
    cfg: TessConfig, uri: str, path: str | Path, check: Callable[[str], Any] | None = None
) -> Request:
    """``GET {base}/api/v0.1/Download/file?uri=<uri>``, streamed to ``path`` (pure)."""
    url = cfg.base_url.rstrip("/") + DOWNLOAD_PATH
    return Request("GET", url, params=(("uri", uri),), stream_to=str(path), check=check)


# --------------------------------------------------------------------------------------------
# pure parsing of Mashup answers


@dataclass(frozen=True, slots=True)
class MashupAnswer:
    """One Mashup answer: ``COMPLETE`` with a page of rows, or ``EXECUTING`` (ask again)."""

    status: str
    rows: list[dict[str, Any]]
    page: int = 1
    pages: int = 1


def parse_mashup(body: bytes, *, service: str, source: str = "", url: str = "") -> MashupAnswer:
    """Parse a Mashup JSON answer (pure).

    Raises
    ------
    PermanentFetchError
        ``status: ERROR``; the message is MAST's ``msg``.
    ArchiveErrorPage
        An HTML page instead of JSON.
    MalformedResponse
        Not JSON (e.g. cut short), no ``data`` list, or an unknown status (worth asking again).
    """
    try:
        doc = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        if body.lstrip()[:1] == b"<":
            text = " ".join(re.sub(rb"<[^>]*>", b" ", body).decode("utf-8", "replace").split())
            raise ArchiveErrorPage(_message(service, source, url, text[:_QUOTE_CHARS]), url=url) from exc
        raise _malformed(service, source, url, f"not JSON ({exc})") from exc
    status = str(doc.get("status", "")).upper() if isinstance(doc, dict) else ""
    if status == "ERROR":
        msg = str(doc.get("msg") or "(no message)")
        raise PermanentFetchError(_message(service, source, url, f"ERROR: {msg}"), url=url)
    if status == EXECUTING:
        return MashupAnswer(EXECUTING, [])
    if status != COMPLETE or not isinstance(doc.get("data"), list):
        raise _malformed(service, source, url, f"status {status or None!r} and no data list")
    paging = doc.get("paging") if isinstance(doc.get("paging"), dict) else {}
    rows = [row for row in doc["data"] if isinstance(row, dict)]
    return MashupAnswer(COMPLETE, rows, int_or(paging.get("page"), 1), int_or(paging.get("pagesFiltered"), 1))


def _message(service: str, source: str, url: str, text: str) -> str:
    return f"tess: MAST answered {service} for {source} ({url}): {text}"


def _malformed(service: str, source: str, url: str, text: str) -> MalformedResponse:
    return MalformedResponse(_message(service, source, url, text), url=url)


def int_or(value: Any, default: int) -> int:
    """``value`` as an int, or ``default`` when it is none."""
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


# --------------------------------------------------------------------------------------------
# IO through the port


async def mast_query(
    http: HttpPort, cfg: TessConfig, service: str, params: Mapping[str, Any], source: str
) -> list[dict[str, Any]]:
    """Every row of a Mashup query: each page in turn, each polled until it is COMPLETE."""
    rows: list[dict[str, Any]] = []
    page, pages = 1, 1
    while page <= pages:
        answer = await _complete_page(http, cfg, service, params, page, source)
        rows.extend(answer.rows)
        pages = answer.pages
        page += 1
    return rows


async def _complete_page(
    http: HttpPort, cfg: TessConfig, service: str, params: Mapping[str, Any], page: int, source: str
) -> MashupAnswer:
    """Ask for one page until MAST stops answering EXECUTING, waiting ``poll_interval_s`` between
    asks; the deadline counts the waits (the port's clock), not the time spent in requests."""
    request = build_invoke_request(cfg, service, params, page=page)
    waited = 0.0
    while True:
        response = await http.send(request)
        answer = parse_mashup(response.body, service=service, source=source, url=request.display_url())
        if answer.status != EXECUTING:
            return answer
        if waited + cfg.poll_interval_s > cfg.poll_deadline_s:
            raise TransientFetchError(
                _message(service, source, request.display_url(), f"still EXECUTING after {waited:g} s"),
                url=request.display_url(),
            )
        await http.sleep(cfg.poll_interval_s)
        waited += cfg.poll_interval_s
