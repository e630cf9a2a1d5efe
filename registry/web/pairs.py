"""Word-pair search keys encoded in a worker process, so that an encoding is not starved by the request threads.

Encoding a pair is Python-heavy (drafting two banks, tokenizing, many small torch calls). In the server's own
process it competes for the GIL with every request thread: under the load bench (``bench/web_load.py``) 1 pair
search in 197 got through, the others finding the one slot taken by a starved encoding (issue #23). One spawned
process does it instead. It starts on the first uncached pair, keeps its registry and text encoder across calls,
and ends with the app, or by itself when the server process is gone (``kill -9``). A call that takes longer than
``timeout_s`` kills it. The server's cache (:class:`~registry.web.deps.PairKeyCache`) and its one "pair" slot
stay in front of it.
"""

from __future__ import annotations

import multiprocessing
import os
import threading
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from concurrent.futures.process import BrokenProcessPool

from .errors import HTTPError

_registry = None  # in the worker: the registry, opened once


def _watch_parent() -> None:
    """In the worker: exit as soon as the server process is gone. A pool worker never notices by itself (it
    holds its own end of the call queue, CPython issue 111873)."""
    parent = multiprocessing.parent_process()

    def watch():
        parent.join()
        os._exit(0)

    if parent is not None:
        threading.Thread(target=watch, name="p2pz-parent-watch", daemon=True).start()


def _encode(db_url: str, source: str, target: str, model: str | None):
    """In the worker: :func:`registry.library.search.encode_pair` on the server's registry."""
    global _registry
    from p2pz.registry.library.records import user_errors
    from p2pz.registry.library.search import encode_pair

    with user_errors():
        if _registry is None:
            from p2pz.registry.library.api import Registry

            _registry = Registry.open(db_url)
        return encode_pair(_registry.db, source, target, model)


class PairEncoder:
    """``encoder(source, target, model)`` → (fingerprint, key, banks' sha256), computed in the worker process:
    the ``encode_in`` of :func:`registry.library.search.pair_key`."""

    def __init__(self, db_url: str, timeout_s: float = 600.0):
        self.db_url, self.timeout_s = db_url, timeout_s
        self._pool: ProcessPoolExecutor | None = None
        self._lock = threading.Lock()
        self._closed = False

    def _worker(self) -> ProcessPoolExecutor:
        with self._lock:
            if self._closed:
                raise HTTPError(503, "the server is stopping; retry", headers={"Retry-After": "1"})
            if self._pool is None:  # spawn, not fork: the server's threads and open connections stay behind
                self._pool = ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"),
                                                 initializer=_watch_parent)
            return self._pool

    def __call__(self, source: str, target: str, model: str | None):
        pool = self._worker()
        try:
            return pool.submit(_encode, self.db_url, source, target, model).result(timeout=self.timeout_s)
        except BrokenProcessPool:  # the worker died (killed, out of memory): the next call starts a new one
            self._drop(pool)
            raise HTTPError(503, "the process that encodes word pairs stopped; retry (a new one starts)",
                            headers={"Retry-After": "1"}) from None
        except FutureTimeout:
            self._drop(pool)
            raise HTTPError(503, f"encoding the word pair took longer than {self.timeout_s:.0f} s and was "
                                 "stopped; retry later", headers={"Retry-After": "60"}) from None

    def _drop(self, pool: ProcessPoolExecutor) -> None:
        with self._lock:
            if self._pool is pool:
                self._pool = None
        _stop(pool)

    def close(self) -> None:
        """Stop the worker without waiting for an encoding in progress (2 s, then it is killed)."""
        with self._lock:
            self._closed = True
            pool, self._pool = self._pool, None
        if pool is not None:
            _stop(pool)


def _stop(pool: ProcessPoolExecutor) -> None:
    processes = list((getattr(pool, "_processes", None) or {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    for process in processes:
        process.join(timeout=2)
        if process.is_alive():
            process.kill()
            process.join(timeout=2)
