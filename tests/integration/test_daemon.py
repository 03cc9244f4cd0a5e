"""The daemon as a process: /healthz, /metrics moving with the work, SIGHUP reload, SIGTERM exit."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import yaml

from .test_backfill import query

ZTF = "/cgi-bin/ZTF/nph_light_curves"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except OSError:
        return 0, ""


def _metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.split(" ")[0] == name:
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def _wait(condition, timeout_s: float = 60.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.2)
    raise AssertionError("timed out waiting")


def _write_config(path: Path, url: str, root: Path, db_url: str, port: int, size: int) -> None:
    cfg = {
        "store": {"data_root": str(root), "db_url": db_url},
        "observatories": {"ztf": {"base_url": url, "rate_per_s": 1000}},
        "catalog": {"default": "test", "test_size": size},
        "engine": {"workers": 2},
        "daemon": {"port": port, "interval_s": 0.5, "log_format": "json"},
    }
    path.write_text(yaml.safe_dump(cfg))


def test_daemon_serves_health_and_metrics_reloads_and_exits_cleanly(archive, db_url, tmp_path) -> None:
    port, config, root = _free_port(), tmp_path / "daemon.yaml", tmp_path / "data"
    _write_config(config, archive.url, root, db_url, port, size=4)
    log_file = tmp_path / "daemon.log"
    stderr = (tmp_path / "stderr.txt").open("wb")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "aretriever.daemon",
            "--config",
            str(config),
            "--set",
            f"daemon.log_file={log_file}",
        ],
        cwd=tmp_path,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        stderr=stderr,
    )
    try:
        _wait(lambda: _get(port, "/healthz")[0] == 200)
        _, body = _get(port, "/healthz")
        assert json.loads(body) == {"status": "ok", "database": "ok"}

        fetched = 'aretriever_sources_total{observatory="ztf",outcome="fetched"}'
        _wait(lambda: _metric(_get(port, "/metrics")[1], fetched) == 4)
        metrics = _get(port, "/metrics")[1]
        assert _metric(metrics, 'aretriever_requests_total{observatory="ztf"}') == 4
        assert _metric(metrics, 'aretriever_lane_rate_limit{observatory="ztf"}') == 1000
        assert "aretriever_writer_lag_seconds" in metrics and "aretriever_queue_depth" in metrics
        # later passes find everything done: skipped, no new request
        _wait(lambda: _metric(_get(port, "/metrics")[1], "aretriever_passes_total") >= 3)
        assert archive.archive.count(ZTF) == 4

        # a bigger catalog in the file, then SIGHUP: the new rows are fetched
        _write_config(config, archive.url, root, db_url, port, size=7)
        proc.send_signal(signal.SIGHUP)
        _wait(lambda: _metric(_get(port, "/metrics")[1], fetched) == 7)  # counters go on
        assert archive.archive.count(ZTF) == 7

        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        stderr.close()
    assert query(db_url, "select count(*) from raw_photometry where status = 'ok'") == [(7,)]
    assert not list(root.rglob(".*tmp*"))
    events = [json.loads(line) for line in log_file.read_text().splitlines()]
    done = [e for e in events if e.get("outcome") == "fetched"]
    assert len(done) == 7 and all(e["observatory"] == "ztf" and e["source"].startswith("TEST") for e in done)
    assert any(e["message"] == "config reloaded" for e in events)
    assert events[-1]["message"] == "daemon stopped"


def test_daemon_refuses_a_bad_config(tmp_path) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text("daemon: {port: 99999}\n")
    done = subprocess.run(
        [sys.executable, "-m", "aretriever.daemon", "--config", str(config)], capture_output=True, text=True
    )
    assert done.returncode == 2 and "daemon.port" in done.stderr
