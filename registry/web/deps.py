"""Dependencies shared by the routers: the registry, the job queue, the settings and write authorization."""

from __future__ import annotations

import contextlib
import threading
import time
from collections import OrderedDict, deque

from fastapi import Depends, Header, Request
from sqlalchemy.engine import make_url

from p2pz.registry.library import previews
from p2pz.registry.library.api import Registry
from p2pz.registry.library.encoding import registry_model
from p2pz.registry.library.records import RegistryError

from .errors import HTTPError
from .guard import has_token, write_refusal
from .jobs import Jobs
from .pairs import PairEncoder
from .settings import Settings


class PairKeyCache:
    """Word-pair query keys by (source bank sha256, target bank sha256, model): bounded, least recently used
    first out, thread-safe. Banks are content-addressed, so an entry never goes stale."""

    def __init__(self, size: int):
        self.size, self.lock, self.items = max(0, size), threading.Lock(), OrderedDict()

    def get(self, key):
        with self.lock:
            if key in self.items:
                self.items.move_to_end(key)
                return self.items[key]
        return None

    def put(self, key, value) -> None:
        with self.lock:
            self.items[key] = value
            self.items.move_to_end(key)
            while len(self.items) > self.size:
                self.items.popitem(last=False)


class Budget:
    """At most ``n`` uses in any ``window_s`` seconds (a sliding window), thread-safe: how many new export-cache
    entries anonymous callers may add before their exports are built uncached."""

    def __init__(self, n: int, window_s: float):
        self.n, self.window_s, self.lock, self.used = max(0, n), window_s, threading.Lock(), deque()

    def take(self) -> bool:
        """Use one → True, or False when the window's ``n`` are used (nothing is counted then)."""
        with self.lock:
            now = time.monotonic()
            while self.used and now - self.used[0] >= self.window_s:
                self.used.popleft()
            if len(self.used) >= self.n:
                return False
            self.used.append(now)
            return True


@contextlib.contextmanager
def heavy_slot(st: "State", kind: str, what: str):
    """One of the server's few slots for an expensive read of ``kind`` (``pair``, ``export``), or 429 with
    ``Retry-After`` when all are taken."""
    slots = st.heavy[kind]
    if not slots.acquire(blocking=False):
        wait = st.settings.retry_after_s
        raise HTTPError(429, f"the server is busy {what} for other requests; retry in {wait} s",
                        headers={"Retry-After": str(wait)})
    try:
        yield
    finally:
        slots.release()


class State:
    """What one app instance holds: settings, the registry, the job queue, the heavy-read slots and caches."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.registry = Registry.open(settings.db_url)
        self.jobs = Jobs(self.registry, settings.resolved_work_dir(), keep_jobs=settings.keep_jobs,
                         keep_jobs_days=settings.keep_jobs_days, max_queued=settings.max_queued,
                         retry_after_s=settings.retry_after_s)
        # expensive reads, each kind in its own slots so that one cannot starve the other, the rest answered 429
        # at once rather than queued behind them: an uncached pair search encodes two banks (seconds; encoding
        # is serialized, so one slot), an export zips tensors and students (``heavy_requests`` slots)
        self.heavy = {"pair": threading.BoundedSemaphore(1),
                      "export": threading.BoundedSemaphore(max(1, settings.heavy_requests))}
        self.encode_lock = threading.Lock()  # one text encoder load / bank encoding at a time
        self.export_budget = Budget(settings.export_budget, settings.export_budget_window_s)
        self.pair_keys = PairKeyCache(settings.pair_cache_size)
        # started on first use; not for an in-memory SQLite database, which another process cannot see
        url = make_url(self.registry.url)
        in_memory = url.get_backend_name() == "sqlite" and url.database in (None, "", ":memory:")
        self.pair_encoder = PairEncoder(self.registry.url, settings.pair_timeout_s) \
            if settings.pair_process and not in_memory else None
        self.diagnostics: dict[str, dict] = {}  # ref → inspect() result (immutable per direction version)

    def sample_image(self):
        """The sample image for "try it without an upload": a shapes-world image when the server's model (or the
        registry's one model) is the shapes model, else the bundled photo."""
        try:
            model = registry_model(self.registry.db, self.settings.model)
        except RegistryError:  # several models: the photo
            model = self.settings.model
        return previews.default_images(model)[0]


def state(request: Request) -> State:
    return request.app.state.p2pz


def registry(st: State = Depends(state)) -> Registry:
    return st.registry


def jobs(st: State = Depends(state)) -> Jobs:
    return st.jobs


def settings(st: State = Depends(state)) -> Settings:
    return st.settings


def require_write(st: State = Depends(state), authorization: str | None = Header(
        None, description="Bearer TOKEN; needed for writes when the server has a token.")) -> None:
    """Writes: refused on a read-only server (403); with a token set, only with ``Authorization: Bearer TOKEN``
    (401 otherwise). The comparison takes constant time. The app's gate (``guard.py``) applies the same rule
    before the request body is read; this dependency keeps it for any other way in and for the OpenAPI page."""
    refused = write_refusal(st.settings, authorization)
    if refused:
        raise HTTPError(*refused)


def require_token_for_private_reads(st: State = Depends(state), authorization: str | None = Header(
        None, description="Bearer TOKEN; needed to read jobs when the server has a token.")) -> None:
    """Jobs are their submitter's: with a token set, reading a job, its input or its results needs it (401);
    the library (directions, banks, previews) stays public."""
    if not has_token(st.settings, authorization):
        raise HTTPError(401, "this server needs Authorization: Bearer TOKEN to read jobs, their uploads and "
                             "results (the token given to p2pz serve)")
