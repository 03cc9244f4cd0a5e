"""``migrate`` on a database already at head: one look at ``alembic_version``, Alembic never loaded."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from alembic.script import ScriptDirectory

from aretriever.store import db, schema


def test_the_head_read_from_the_files_is_alembics() -> None:
    assert schema.script_head() == ScriptDirectory.from_config(schema.alembic_config()).get_current_head()


def test_a_chain_the_reader_does_not_understand_is_left_to_alembic(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    versions = tmp_path / "versions"
    versions.mkdir()
    (versions / "a.py").write_text('revision = "a"\ndown_revision = None\n')
    (versions / "b.py").write_text('revision = "b"\ndown_revision = ("a", "c")\n')  # a merge
    monkeypatch.setattr(schema, "MIGRATIONS_DIR", tmp_path)
    schema.script_head.cache_clear()
    try:
        assert schema.script_head() is None
    finally:
        schema.script_head.cache_clear()


async def test_at_head_only_when_the_database_is_at_the_head(db_url: str) -> None:
    engine = db.create_engine(db_url)
    try:
        assert not await schema.at_head(engine)  # fresh: no alembic_version table
        await schema.migrate(engine)
        assert await schema.at_head(engine)
        await schema.downgrade(engine, "0002")
        assert not await schema.at_head(engine)
        await schema.migrate(engine)  # the short cut must not skip a real upgrade
        assert await schema.current_revision(engine) == schema.script_head()
    finally:
        await engine.dispose()


MIGRATE = textwrap.dedent(
    """
    import asyncio, sys
    from aretriever.store import db, schema

    async def main() -> None:
        engine = db.create_engine(sys.argv[1])
        await schema.migrate(engine)
        await engine.dispose()

    asyncio.run(main())
    print("alembic" in sys.modules)
    """
)


def _migrate_in_a_new_process(url: str) -> bool:
    """Migrate ``url`` in a fresh interpreter; whether that imported Alembic."""
    out = subprocess.run([sys.executable, "-c", MIGRATE, url], capture_output=True, text=True, check=True)
    return out.stdout.strip() == "True"


async def test_a_database_at_head_is_opened_without_importing_alembic(db_url: str) -> None:
    assert _migrate_in_a_new_process(db_url)  # fresh: Alembic builds the schema
    assert not _migrate_in_a_new_process(db_url)
