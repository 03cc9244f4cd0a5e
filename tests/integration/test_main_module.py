"""A seed user's script without ``if __name__ == "__main__":`` runs once, not once per pool worker."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pytest

from aretriever.engine.pool import default_executor
from aretriever.engine.workers import MAIN_MODULE_KEYS, WorkerContext, preparation_data
from aretriever.errors import ConfigError
from aretriever.project import Project

from .test_backfill import query

# every run of the script's body adds a line to ran.txt; no main guard, as the seed's users write
PROJECT_SCRIPT = textwrap.dedent(
    """
    import json, os
    from aretriever.project import Project

    with open("ran.txt", "a") as f:
        f.write(f"{os.getpid()} {__name__}\\n")
    proj = Project(name="wd", obs_names=["demo"], catalog_kwargs={"default": "test", "test_size": 5})
    proj.cfg.engine.workers = 2  # more than one worker, each one started by the pool
    lane = proj.run().lane("demo")
    print(json.dumps({"outcomes": dict(lane.outcomes), "requests": lane.requests}))
    """
)

# the pool's every way of starting a worker: lazily at submit, and in place of a retired one
REPLACEMENT_SCRIPT = textwrap.dedent(
    """
    import os
    from concurrent.futures import ProcessPoolExecutor
    from aretriever.engine.workers import WorkerContext

    with open("ran.txt", "a") as f:
        f.write(f"{os.getpid()} {__name__}\\n")
    with ProcessPoolExecutor(1, mp_context=WorkerContext(), max_tasks_per_child=1) as pool:
        pids = {pool.submit(os.getpid).result() for _ in range(3)}
    print(len(pids))
    """
)


def run_script(tmp_path: Path, text: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    script = tmp_path / "run.py"
    script.write_text(text)
    return subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
        env=env,
    )


@pytest.fixture
def script_env(db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    monkeypatch.setenv("RETRIEVER_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("ARETRIEVER_DB_URL", db_url)
    monkeypatch.setenv("ARETRIEVER_CONFIGS", str(tmp_path / "configs"))
    return dict(os.environ)


def test_a_script_without_main_guard_runs_its_project_once(
    script_env: dict[str, str], db_url: str, tmp_path: Path
) -> None:
    done = run_script(tmp_path, PROJECT_SCRIPT, script_env)
    assert done.returncode == 0, done.stderr[-3000:]
    runs = (tmp_path / "ran.txt").read_text().splitlines()
    assert len(runs) == 1 and runs[0].endswith(" __main__"), runs
    assert json.loads(done.stdout.splitlines()[-1]) == {"outcomes": {"fetched": 5}, "requests": 0}
    assert query(db_url, "select count(*) from failures") == [(0,)]
    assert query(db_url, "select count(*) from raw_photometry where observatory = 'demo'") == [(5,)]


def test_replacement_workers_do_not_run_the_script(tmp_path: Path) -> None:
    done = run_script(tmp_path, REPLACEMENT_SCRIPT, dict(os.environ))
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split() == ["3"]  # three workers, one after the other
    assert len((tmp_path / "ran.txt").read_text().splitlines()) == 1


def worker_main_module() -> tuple[str, str | None]:
    """The name and file of a pool worker's main module (run in the worker)."""
    main = sys.modules["__main__"]
    return main.__name__, getattr(main, "__file__", None)


def test_workers_are_prepared_as_usual_but_for_the_main_module() -> None:
    from multiprocessing import spawn

    usual = spawn.get_preparation_data("x")
    assert MAIN_MODULE_KEYS & usual.keys()  # pytest's own main module, by name
    assert preparation_data("x") == {k: v for k, v in usual.items() if k not in MAIN_MODULE_KEYS}
    with default_executor(1) as pool:
        # the fork server's main module (its ``-c`` command): nothing of the parent's
        assert pool.submit(worker_main_module).result() == ("__main__", None)


def test_a_pool_of_the_worker_context_runs_jobs() -> None:
    with ProcessPoolExecutor(2, mp_context=WorkerContext()) as pool:
        assert list(pool.map(abs, [-1, -2, 3])) == [1, 2, 3]


def test_an_analysis_class_of_the_script_is_refused_at_load(db_url: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"class 'MyAnalysis' is in the script being run.*importable module"):
        Project(
            name="wd",
            obs_names=["demo"],
            analysis_module="__main__",
            analysis_class="MyAnalysis",
            store={"data_root": str(tmp_path / "data"), "db_url": db_url},
        )
