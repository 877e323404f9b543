"""Where sweep runs execute: in this process, a local process pool, or a Ray cluster.

Each executor takes a function and a list of arguments and yields ``(argument, result)``
as runs finish, in whatever order they finish. The function (``runner.execute_run``) is
the same everywhere, so every executor produces the same rows. Only the caller writes to
the results store.
"""
from __future__ import annotations

import os
import threading
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from multiprocessing import get_context
from typing import Callable, Iterator, Sequence

EXECUTORS = ("local", "ray")


def _limit_threads(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


def _worker_init(threads: int, parent: int) -> None:
    """Pool worker set-up: a fixed thread count (results do not depend on the pool size), and
    exit when the parent dies, so a killed sweep leaves no orphaned workers behind."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    _limit_threads(threads)

    def watch():
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, daemon=True).start()


class InlineExecutor:
    """Runs everything in this process, one run at a time (``--workers 1``)."""

    def __init__(self, threads: int = 1):
        self.threads = threads

    def map_unordered(self, fn: Callable, args: Sequence[tuple]) -> Iterator[tuple[tuple, object]]:
        _limit_threads(self.threads)
        for a in args:
            yield a, fn(*a)

    def close(self) -> None:
        pass


class LocalExecutor:
    """A pool of ``workers`` processes (spawned, so no state is shared by accident)."""

    def __init__(self, workers: int, threads: int = 1):
        self.pool = ProcessPoolExecutor(
            max_workers=workers, mp_context=get_context("spawn"), initializer=_worker_init, initargs=(threads, os.getpid())
        )

    def map_unordered(self, fn: Callable, args: Sequence[tuple]) -> Iterator[tuple[tuple, object]]:
        futures = {self.pool.submit(fn, *a): a for a in args}
        pending = set(futures)
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for f in done:
                yield futures[f], f.result()

    def close(self) -> None:
        self.pool.shutdown(cancel_futures=True)


class RayExecutor:
    """Runs on a Ray cluster (``address``), or starts a local one with ``workers`` CPUs.

    Needs the optional extra: ``pip install 'lowrank[ray]'``. Every node must have lowrank
    installed and see the same cache directory (or compute its own copy of the cache).
    """

    def __init__(self, workers: int, threads: int = 1, address: str | None = None):
        try:
            import ray
        except ImportError as err:
            raise ValueError("the Ray executor needs Ray: pip install 'lowrank[ray]' (or choose --executor local)") from err
        self.ray = ray
        self.started = not ray.is_initialized()
        if self.started:
            if address:
                ray.init(address=address, log_to_driver=False)
            else:
                ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False)
        self.threads = threads

    def map_unordered(self, fn: Callable, args: Sequence[tuple]) -> Iterator[tuple[tuple, object]]:
        ray = self.ray
        threads = self.threads

        @ray.remote(num_cpus=1)
        def call(*a):
            _limit_threads(threads)
            return fn(*a)

        refs = {call.remote(*a): a for a in args}
        pending = list(refs)
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            for r in done:
                yield refs[r], ray.get(r)

    def close(self) -> None:
        if self.started:
            self.ray.shutdown()


def make_executor(kind: str = "local", workers: int = 1, threads: int = 1, address: str | None = None):
    if kind not in EXECUTORS:
        raise ValueError(f"unknown executor {kind!r}; choose one of {', '.join(EXECUTORS)}")
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    if kind == "ray":
        return RayExecutor(workers, threads, address)
    return InlineExecutor(threads) if workers == 1 else LocalExecutor(workers, threads)
