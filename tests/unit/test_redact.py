"""Secrets never leave the process: URL passwords and password= values are masked."""

from __future__ import annotations

import io
import json
import logging

import pytest

from aretriever.config import load_config, public_dict, to_yaml
from aretriever.engine.core import write_version_config
from aretriever.engine.summary import Outcome, RunSummary
from aretriever.redact import redact, redacting
from aretriever.service.logs import JsonFormatter

SECRET = "hunter2-Zq"
URL = f"postgresql+asyncpg://astro:{SECRET}@db.example:5432/wd"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (URL, "postgresql+asyncpg://astro:***@db.example:5432/wd"),
        (f"cannot reach {URL} now", "cannot reach postgresql+asyncpg://astro:***@db.example:5432/wd now"),
        ("postgresql://:only-pw@h/d", "postgresql://:***@h/d"),
        ("postgresql://u:p@ss/w@h/d", "postgresql://u:***@h/d"),  # an unencoded '@' in the password
        ("host=h password=pw1 user=u", "host=h password=*** user=u"),
        ("https://x.org/q?token=abc&ra=1", "https://x.org/q?token=***&ra=1"),
        ("postgresql://astro@h/d", "postgresql://astro@h/d"),  # no password: unchanged
        ("sqlite+aiosqlite:////data/aretriever.sqlite", "sqlite+aiosqlite:////data/aretriever.sqlite"),
        ("http://irsa/nph?POS=CIRCLE 1 2 3", "http://irsa/nph?POS=CIRCLE 1 2 3"),
    ],
)
def test_redact(text: str, expected: str) -> None:
    assert redact(text) == expected


def _log_through(formatter: logging.Formatter) -> str:
    stream = io.StringIO()
    handler = redacting(logging.StreamHandler(stream))
    handler.setFormatter(formatter)
    logger = logging.getLogger("aretriever.test_redact")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning("opening %s", URL)
        try:
            raise ConnectionError(f"refused: {URL}")
        except ConnectionError:
            logger.exception("failed")
    finally:
        logger.removeHandler(handler)
    return stream.getvalue()


def test_log_handlers_mask_messages_and_tracebacks() -> None:
    text = _log_through(logging.Formatter("%(message)s"))
    assert SECRET not in text and text.count("astro:***@") == 2 and "Traceback" in text
    lines = _log_through(JsonFormatter()).splitlines()
    assert SECRET not in "".join(lines)
    assert "astro:***@" in json.loads(lines[1])["exception"]


def test_config_dumps_never_hold_the_password(tmp_path) -> None:
    cfg = load_config(False, sets=[f"store.db_url={URL}", "project.name=p"])
    assert cfg.store.db_url == URL  # the process itself still connects with it
    assert public_dict(cfg)["store"]["db_url"] == "postgresql+asyncpg://astro:***@db.example:5432/wd"
    assert SECRET not in to_yaml(cfg)
    written = write_version_config(cfg, tmp_path, "abc")
    assert SECRET not in written.read_text() and "astro:***@" in written.read_text()


def test_summaries_mask_failure_reasons() -> None:
    summary = RunSummary()
    summary.lane("ztf").add(Outcome.FAILED, f"StoreError: lost {URL}")
    shown = summary.format_table() + json.dumps(summary.as_dict())
    assert SECRET not in shown and "astro:***@" in shown
