"""Where data files live under DATA_ROOT (pure functions, no IO).

Layout (see the seed README, "Data folders" and "Raw file names and keys")::

    DATA_ROOT/ZTF/RA012/ZTF_photometry_<name>.h5                       raw, key <name>
    DATA_ROOT/<PROJECT>[_<cfg hash>]/RA012/ZTF_photometry_<name>_reduced.h5
                                                 keys <name>_reduction_01_of_03, ...

Every path returned here is POSIX and relative to DATA_ROOT; :func:`resolve` joins it to a root and
refuses anything that would land outside it. Source names become file names and HDF5 keys through
:func:`safe_name`, which leaves ordinary catalog names untouched and makes every other name safe
and still unique.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
from pathlib import Path
from typing import Final

from aretriever.errors import StoreError

# DATA_ROOT itself is resolved once, with the config: aretriever.store.locations.data_root_of
DATA_ROOT_ENV = "RETRIEVER_DATA"
DEFAULT_DATA_ROOT = "data"
MAX_NAME_CHARS = 100
_HASH_CHARS = 8
_UNSAFE = re.compile(r"[^A-Za-z0-9+\-._]")

def safe_name(name: str) -> str:
    """Turn a source (or project) name into a file-name and HDF5-key safe string.

    Names made only of ``[A-Za-z0-9+-._]``, not starting with a dot and at most 100 characters
    long come back unchanged (``WDJ000006.33+512226.63``). Anything else has its other characters
    replaced by ``_``, leading dots stripped, is cut to 100 characters and gets
    ``-<first 8 hex of sha1(name)>`` appended, so two different names never share a file.

    Parameters
    ----------
    name
        Any string, including empty, unicode or control characters.

    Returns
    -------
    str
        A non-empty string of ``[A-Za-z0-9+-._]``, not starting with ``.``, at most 109 chars.
    """
    cleaned = _UNSAFE.sub("_", name).lstrip(".")
    if cleaned == name and 0 < len(name) <= MAX_NAME_CHARS:
        return name
    digest = hashlib.sha1(name.encode("utf-8", "surrogatepass")).hexdigest()[:_HASH_CHARS]
    return f"{cleaned[:MAX_NAME_CHARS] or '_'}-{digest}"


def ra_folder(ra_deg: float) -> str:
    """Return the RA bin folder of a position: ``RA012`` for 12.7 deg (wraps to [0, 360)).

    Raises
    ------
    StoreError
        If ``ra_deg`` is NaN or infinite.
    """
    if not math.isfinite(ra_deg):
        raise StoreError(f"store: cannot place a source with RA {ra_deg!r} in an RA folder")
    # the extra modulo catches float rounding: (-1e-20) % 360 == 360.0
    return f"RA{math.floor(ra_deg % 360.0) % 360:03d}"


def _file_stem(observatory: str, name: str, data_type: str) -> str:
    return f"{safe_name(observatory.upper())}_{safe_name(data_type)}_{safe_name(name)}"


def raw_relpath(observatory: str, name: str, ra_deg: float, data_type: str = "photometry") -> str:
    """Return the raw file of a source, relative to DATA_ROOT.

    Example: ``ZTF/RA012/ZTF_photometry_J012.5+33.1.h5``.
    """
    obs = safe_name(observatory.upper())
    return f"{obs}/{ra_folder(ra_deg)}/{_file_stem(observatory, name, data_type)}.h5"


def product_folder(project: str, cfg_hash: str | None) -> str:
    """Return a project's product folder: ``PROJECT``, or ``PROJECT_<cfg_hash>`` when versioned."""
    folder = safe_name(project.upper())
    return f"{folder}_{safe_name(cfg_hash)}" if cfg_hash else folder


def reduced_relpath(
    product_folder: str,
    observatory: str,
    name: str,
    ra_deg: float,
    data_type: str = "photometry",
) -> str:
    """Return the reduced file of a source, relative to DATA_ROOT.

    Example: ``MYPROJ/RA012/ZTF_photometry_J012.5+33.1_reduced.h5``.
    """
    stem = _file_stem(observatory, name, data_type)
    return f"{product_folder}/{ra_folder(ra_deg)}/{stem}_reduced.h5"


def raw_key(name: str) -> str:
    """Return the HDF5 key of a source's raw table (its safe name)."""
    return safe_name(name)


def reduction_key(name: str, number: int, total: int) -> str:
    """Return the key of the ``number``-th of ``total`` reductions: ``<name>_reduction_01_of_03``.

    Both numbers are zero-padded to the same width, at least 2 digits, so keys sort in order.
    """
    if not 1 <= number <= total:
        raise StoreError(f"store: reduction number {number} is not in 1..{total} for {name!r}")
    width = max(2, len(str(total)))
    return f"{safe_name(name)}_reduction_{number:0{width}d}_of_{total:0{width}d}"


SCRATCH: Final = ".scratch"


def scratch_dir(root: Path, lane: str, owner: str | None = None) -> Path:
    """A lane's folder of half-downloaded files: ``DATA_ROOT/.scratch/<lane>`` (never a product).

    With ``owner`` (an owner token, :func:`aretriever.store.owners.owner_token`), that process's
    own folder in it, ``DATA_ROOT/.scratch/<lane>/<owner>``: processes sharing DATA_ROOT never
    touch each other's downloads.
    """
    folder = root / SCRATCH / safe_name(lane)
    return folder if owner is None else folder / safe_name(owner)


def resolve(root: Path, relpath: str) -> Path:
    """Join ``relpath`` to ``root``, refusing any result that is not inside ``root``.

    The check is lexical (``..`` and absolute paths are caught); symbolic links inside DATA_ROOT
    are allowed, as a shared DATA_ROOT may link an observatory folder to another disk.

    Raises
    ------
    StoreError
        If the joined path is ``root`` itself or lies outside it.
    """
    base = Path(os.path.normpath(Path(root).absolute()))
    full = Path(os.path.normpath(base / relpath))
    if full == base or not full.is_relative_to(base):
        raise StoreError(f"store: path {relpath!r} points outside DATA_ROOT {base}")
    return full
