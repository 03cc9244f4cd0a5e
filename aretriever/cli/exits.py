"""One mapping from what went wrong to what a command prints and the exit code scripts see.

- 0: every source done or skipped; 1: some failed (or an unexpected error, with its traceback);
  2: bad usage, configuration, catalog or storage; 130: interrupted.

Errors raised inside a task group arrive wrapped in an exception group: the cause is unwrapped,
so a missing catalog column reads as one line with exit 2, not as a traceback. Everything printed
passes through :func:`aretriever.redact.redact`, so no password leaves in an error either.
"""

from __future__ import annotations

import gc
import sys
import traceback
from collections.abc import Callable
from typing import Final, NoReturn

from aretriever.errors import AretrieverError, CatalogError, ConfigError, StorageFault, cause
from aretriever.redact import redact

EXIT_OK: Final = 0
EXIT_FAILED: Final = 1
EXIT_USAGE: Final = 2
EXIT_INTERRUPTED: Final = 130

_USAGE = (ConfigError, CatalogError, StorageFault)


def exit_code(body: Callable[[], int]) -> int:
    """Run a command's body; an error becomes one printed line (or a traceback) and its exit code."""
    try:
        return body()
    except BaseException as error:
        if isinstance(error, SystemExit):
            raise
        return report(cause(error))


def report(error: BaseException) -> int:
    """Print ``error`` for a person (secrets masked) and return its exit code."""
    if isinstance(error, KeyboardInterrupt):
        return EXIT_INTERRUPTED
    if isinstance(error, AretrieverError):
        print(f"error: {redact(str(error))}", file=sys.stderr)
        return EXIT_USAGE if isinstance(error, _USAGE) else EXIT_FAILED
    if isinstance(error, SystemExit):
        raise error
    text = "".join(traceback.format_exception(error))
    print(redact(text), end="", file=sys.stderr)
    print(f"error: unexpected {type(error).__name__}: {redact(str(error))}", file=sys.stderr)
    return EXIT_FAILED


def leave(code: int) -> NoReturn:
    """End this process with ``code``: only for ``__main__``, once the command has returned.

    At exit the interpreter runs full garbage collections over every object the imports made
    (pandas, SQLAlchemy, h5py: ~0.3 s on a loaded machine), none of which is garbage; frozen
    objects are skipped. Everything a command must leave behind is written before it returns;
    atexit handlers and the flushes of logs and streams still run. A caller that goes on (tests
    calling ``main``) must not freeze: its later garbage would never be collected.
    """
    gc.freeze()
    raise SystemExit(code)
