"""How the process pool starts its workers: from a fork server, without running the user's script.

multiprocessing prepares every child it starts to unpickle objects of the parent's ``__main__``:
it sends the script's path (or its module name, under ``python -m``) and the child runs it again,
as ``__mp_main__``. A seed user's ``run.py`` without an ``if __name__ == "__main__":`` guard would
so run its whole project once more in every worker. The workers need none of it: a job names its
adapter and analysis classes by importable module, and a class of ``__main__`` is refused at config
load (:func:`aretriever.science.plugins.load_class`). So the pool's processes are sent the same
preparation as any other (``sys.path``, working directory, authkey, logging) except the main
module. Every start goes through :class:`WorkerContext`'s ``Process``, so a worker the pool starts
lazily at submit time or in place of one that exited is covered too.
"""

from __future__ import annotations

import io
import os
from multiprocessing import context, forkserver, popen_forkserver, reduction, spawn, util
from typing import Any, Final

# spawn.prepare() runs the parent's main module in the child when it finds either key
MAIN_MODULE_KEYS: Final = frozenset({"init_main_from_path", "init_main_from_name"})


def preparation_data(name: str) -> dict[str, Any]:
    """What a worker named ``name`` is prepared with: multiprocessing's own, minus the main module."""
    data: dict[str, Any] = spawn.get_preparation_data(name)
    return {key: value for key, value in data.items() if key not in MAIN_MODULE_KEYS}


class _WorkerPopen(popen_forkserver.Popen):
    _fds: list[int]  # set by popen_forkserver.Popen.__init__; typeshed leaves it out

    def _launch(self, process_obj: Any) -> None:
        # CPython's popen_forkserver.Popen._launch (the same from 3.8 to 3.13) with only the
        # preparation data changed: there is no hook to change it without copying the method.
        prep_data = preparation_data(process_obj._name)
        buf = io.BytesIO()
        context.set_spawning_popen(self)
        try:
            reduction.dump(prep_data, buf)
            reduction.dump(process_obj, buf)
        finally:
            context.set_spawning_popen(None)
        self.sentinel, w = forkserver.connect_to_new_process(self._fds)
        # the child watches this duplicate of the data pipe's write end to see its parent exit
        parent_w = os.dup(w)
        close_fds = util.close_fds  # type: ignore[attr-defined]  # in util since 3.4, not in typeshed
        self.finalizer = util.Finalize(self, close_fds, (parent_w, self.sentinel))
        with open(w, "wb", closefd=True) as f:
            f.write(buf.getbuffer())
        self.pid = forkserver.read_signed(self.sentinel)


class WorkerProcess(context.ForkServerProcess):
    """A fork-server process that does not import the parent's main module."""

    @staticmethod
    def _Popen(process_obj: Any) -> _WorkerPopen:
        return _WorkerPopen(process_obj)


class WorkerContext(context.ForkServerContext):
    """The ``forkserver`` context with :class:`WorkerProcess`: pass it as a pool's ``mp_context``."""

    Process = WorkerProcess
