"""Word-pair search keys encoded in a worker process, so that an encoding is not starved by the request threads.

Encoding a pair is Python-heavy (drafting two banks, tokenizing, many small torch calls). In the server's own
process it competes for the GIL with every request thread: under the load bench (``bench/web_load.py``) one pair
search in 165 got through, the others finding the one slot taken by a starved encoding (issue #23). One spawned
process does it instead; it starts on the first
uncached pair, keeps its registry and text encoder across calls, and is stopped with the app. The server's cache
(:class:`~registry.web.deps.PairKeyCache`) and its one "pair" slot stay in front of it.
"""

from __future__ import annotations

import multiprocessing
import threading
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from .errors import HTTPError

_registry = None  # in the worker: the registry, opened once


def _encode(db_url: str | None, source: str, target: str, model: str | None):
    """Runs in the worker: the pair's (encoder fingerprint, key), encoded there."""
    global _registry
    if _registry is None:
        from registry.library.api import Registry

        _registry = Registry.open(db_url)
    return _registry.pair_key(source, target, model=model)


class PairEncoder:
    """``encoder(source, target, model)`` → (fingerprint, key), computed in the worker process; the
    ``encode_in`` of :func:`registry.library.search.pair_key`."""

    def __init__(self, db_url: str | None):
        self.db_url = db_url
        self._pool: ProcessPoolExecutor | None = None
        self._lock = threading.Lock()

    def _worker(self) -> ProcessPoolExecutor:
        with self._lock:
            if self._pool is None:  # spawn, not fork: the server's threads and open connections stay behind
                self._pool = ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"))
            return self._pool

    def __call__(self, source: str, target: str, model: str | None):
        pool = self._worker()
        try:
            return pool.submit(_encode, self.db_url, source, target, model).result()
        except BrokenProcessPool:
            with self._lock:  # the worker died (killed, out of memory): the next call starts a new one
                if self._pool is pool:
                    self._pool = None
            pool.shutdown(wait=False, cancel_futures=True)
            raise HTTPError(503, "the process that encodes word pairs stopped; retry (a new one starts)",
                            headers={"Retry-After": "1"}) from None

    def close(self) -> None:
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
