"""Secrets never leave the process: passwords in text are masked wherever text goes out.

A database URL (``postgresql+asyncpg://user:password@host/db``) travels in the config, in error
messages of drivers and in our own messages. Rather than trust every producer, the boundaries mask
it: the config's dumps (``config show``, ``config.yaml``, ``Project.config()``), log handlers,
summaries, the CLIs' error lines and tracebacks, and the daemon's answers.
"""

from __future__ import annotations

import logging
import re
from typing import Final

MASK: Final = "***"

# scheme://user:password@ ; the password runs up to the last '@' before the host (a password may
# hold a raw '@' or '/' that the user did not percent-encode)
_URL_PASSWORD = re.compile(r"(?P<head>\b[A-Za-z][A-Za-z0-9+.\-]*://[^\s:/@]*:)(?P<secret>\S*)@")
# password=..., token=... in query strings and DSNs
_KEY_VALUE = re.compile(
    r"(?P<head>\b(?:password|passwd|pwd|secret|token|api_key)=)(?P<secret>[^\s&;'\"]+)", re.IGNORECASE
)


def redact(text: str) -> str:
    """``text`` with every URL password and ``password=`` value replaced by ``***``."""
    text = _URL_PASSWORD.sub(lambda m: f"{m['head']}{MASK}@", text)
    return _KEY_VALUE.sub(lambda m: f"{m['head']}{MASK}", text)


class RedactingFilter(logging.Filter):
    """A handler filter that masks secrets in the message and the formatted traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = redact(message)
        if clean != message:
            record.msg, record.args = clean, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        return True


def redacting(handler: logging.Handler) -> logging.Handler:
    """``handler``, masking secrets in everything it emits (filters on a handler see every record)."""
    if not any(isinstance(f, RedactingFilter) for f in handler.filters):
        handler.addFilter(RedactingFilter())
    return handler
