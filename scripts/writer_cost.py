"""What writing one ZTF source costs the event-loop process: built images vs building in the writer.

Usage: ``.venv/bin/python scripts/writer_cost.py [--fsync] [--rounds N]``. Prints milliseconds per
source (raw + reduced file) of the file writer's thread: CPU time (what competes with the event
loop for its core and GIL) and wall time (with ``--fsync``, mostly the disk). A measurement, not
a test: the numbers depend on the machine.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from aretriever.adapters.base import Fetched, Target
from aretriever.adapters.ztf import ZtfAdapter
from aretriever.engine.pool import CpuJob, run_job
from aretriever.settings import AnalysisConfig, HistogramConfig, ZtfConfig
from aretriever.store import hdf5, paths
from aretriever.store.writers import FileWriter
from aretriever.testing.fake_archive import FakeArchive, Faults

STAR = Target("S1", 10.0, 40.0)  # no magnitude: the replayed star passes the magnitude check


def _timed(fn: Callable[..., object], *args: object) -> tuple[float, float]:
    t0, c0 = time.perf_counter(), time.thread_time()
    fn(*args)
    return time.thread_time() - c0, time.perf_counter() - t0


async def _measure(
    images: list[tuple[Path, bytes]], tables: list[tuple[Path, hdf5.Tables]], fsync: bool
) -> None:
    async with FileWriter(fsync=fsync) as files:
        for label, jobs in (("images (write_image)", images), ("tables (build + write)", tables)):
            call = functools.partial(
                hdf5.write_image if label.startswith("images") else hdf5.write_h5, fsync=fsync
            )
            spans = [await files.run(_timed, call, path, what) for path, what in jobs]
            # one source = its raw file then its reduced file
            pairs = list(zip(spans[0::2], spans[1::2], strict=True))
            cpu = sorted(a[0] + b[0] for a, b in pairs)
            wall = sorted(a[1] + b[1] for a, b in pairs)
            print(
                f"{label:24s} per source: writer CPU median {1e3 * cpu[len(cpu) // 2]:6.2f} ms"
                f" (min {1e3 * cpu[0]:5.2f}), wall median {1e3 * wall[len(wall) // 2]:6.2f} ms  fsync={fsync}"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--fsync", action="store_true")
    parser.add_argument("--rounds", type=int, default=30)
    args = parser.parse_args()
    body = FakeArchive(Faults()).ztf.answer(STAR.ra_deg, STAR.dec_deg, 32768)
    job = CpuJob(
        ZtfAdapter(ZtfConfig()),
        STAR,
        Fetched(STAR, body, "recorded"),
        analysis=AnalysisConfig(),
        raw_attrs={"source_name": STAR.name},
        histograms=HistogramConfig(),
    )
    result = run_job(job)
    assert result.raw_image is not None and result.reduced_image is not None
    raw = hdf5.read_image(result.raw_image, paths.raw_key(STAR.name))[0]
    total = len(result.lightcurves)
    keys = [paths.reduction_key(STAR.name, n, total) for n in range(1, total + 1)]
    reduced = {k: hdf5.read_image(result.reduced_image, k) for k in keys}
    print(
        f"archive answer {len(body)} B; raw image {len(result.raw_image)} B;"
        f" reduced image {len(result.reduced_image)} B;"
        f" disk/answer {(len(result.raw_image) + len(result.reduced_image)) / len(body):.3f};"
        f" pool build_s {1e3 * result.build_s:.1f} ms"
    )
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        images, tables = [], []
        for i in range(args.rounds):
            images += [(root / f"i{i}.h5", result.raw_image), (root / f"i{i}_r.h5", result.reduced_image)]
            tables += [
                (
                    root / f"t{i}.h5",
                    {paths.raw_key(STAR.name): (hdf5.frame_to_records(raw), {"source_name": STAR.name})},
                ),
                (root / f"t{i}_r.h5", {k: (hdf5.frame_to_records(f), m) for k, (f, m) in reduced.items()}),
            ]
        asyncio.run(_measure(images, tables, args.fsync))


if __name__ == "__main__":
    main()
