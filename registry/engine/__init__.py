"""Where batch work runs: one interface, :meth:`Engine.map`, here (``--engine local``, the default) or on a Ray
cluster (``--engine ray``, :mod:`registry.engine.ray`); no caller asks which.

A *worker* (:class:`Worker`) is a class built once per process from a typed *setup* (which model, which
settings), then called with one typed *item* at a time, returning one typed *result*. ``Worker.Item`` and
``Worker.Result`` name the two dataclasses, so the Ray engine can carry them as JSON and rebuild them on the
other side. Each feature's worker lives next to its feature (editing, ``build-many``, previews, distillation
pairs); this package knows none of them. Everything a worker writes (images with their provenance, cache entries)
is written by the same functions either way, so results are identical; records reach the database through the
caller only (one writer).
"""

from __future__ import annotations

import base64
import dataclasses
import types
import typing
from dataclasses import dataclass
from typing import Callable, ClassVar, Iterable, Iterator

from p2pz.store.progress import progress_bar

from p2pz.registry.library.records import RegistryError

ENGINES = ("local", "ray")


class Worker:
    """What a worker class provides (subclassing is optional; the engine uses only these names)."""

    Item: ClassVar[type]  # a dataclass of JSON-able fields (bytes allowed)
    Result: ClassVar[type]
    fatal: ClassVar[tuple[type[BaseException], ...]] = ()  # errors that fail the whole job, not just one item

    def __init__(self, setup):  # loads the model(s) once
        raise NotImplementedError

    def __call__(self, item):
        raise NotImplementedError

    @classmethod
    def failed(cls, item, error: str):
        """The result of an item that raised ``error`` on a remote worker (locally, the error propagates)."""
        raise NotImplementedError


class Engine:
    """Runs ``worker`` over ``items``: :meth:`iter` yields the results in item order as they finish; :meth:`map`
    collects them with a progress bar."""

    kind: ClassVar[str]

    def iter(self, worker: type, setup, items: Iterable) -> Iterator:
        raise NotImplementedError

    def map(self, worker: type, setup, items: list, *, desc: str = "working", progress: bool = False,
            on_result: Callable | None = None) -> list:
        out = []
        with progress_bar(len(items), desc, enabled=progress and bool(items), unit="item") as bar:
            for result in self.iter(worker, setup, items):
                out.append(result)
                if on_result:
                    on_result(result)
                bar.update()
        return out


@dataclass(frozen=True)
class LocalEngine(Engine):
    """In this process: the worker is built once per :meth:`map` and called item by item; an unexpected error
    propagates (as from any local code), an item's expected failure is the worker's own result."""

    kind: ClassVar[str] = "local"

    def iter(self, worker: type, setup, items: Iterable) -> Iterator:
        items = list(items)
        if not items:
            return
        w = worker(setup)
        for item in items:
            yield w(item)


@dataclass(frozen=True)
class RayEngine(Engine):
    """On a Ray cluster (``address``; None starts a local one): ``workers`` actors, each building the worker once;
    an item's unexpected error becomes ``Worker.failed`` and the others finish (architecture §11)."""

    kind: ClassVar[str] = "ray"
    address: str | None = None  # a running cluster ("auto", "ray://host:10001")
    workers: int = 1
    gpus_per_worker: float = 0.0
    cpus_per_worker: float | None = None  # default: 1 with GPUs, else 0.5

    def iter(self, worker: type, setup, items: Iterable) -> Iterator:
        from .ray import ray_iter  # circular import

        yield from ray_iter(self, worker, setup, list(items))


def make_engine(kind: str = "local", address: str | None = None, workers: int = 1,
                gpus_per_worker: float = 0.0) -> Engine:
    """The engine the ``--engine``, ``--address``, ``--workers`` and ``--gpus-per-worker`` options describe."""
    if kind not in ENGINES:
        raise RegistryError(f"unknown engine {kind!r}; use local or ray")
    if workers < 1:
        raise RegistryError("--workers must be at least 1")
    if gpus_per_worker < 0:
        raise RegistryError("--gpus-per-worker must be ≥ 0")
    if kind == "local":
        if address or workers != 1 or gpus_per_worker:
            raise RegistryError("--address, --workers and --gpus-per-worker need --engine ray")
        return LocalEngine()
    return RayEngine(address=address, workers=workers, gpus_per_worker=gpus_per_worker)


# --- typed items as JSON (what crosses to a Ray worker and back) ------------------------------------------------

def to_json(obj) -> dict:
    """A dataclass as a JSON-able dict (bytes as base64; a field whose value has ``to_wire()`` as that)."""
    def plain(v):
        if hasattr(v, "to_wire"):
            return v.to_wire()
        if isinstance(v, bytes):
            return {"__bytes__": base64.b64encode(v).decode()}
        if dataclasses.is_dataclass(v):
            return {f.name: plain(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return v
    return plain(obj)


def from_json(cls: type, data: dict):
    """``cls`` (a dataclass) rebuilt from :func:`to_json`'s output, by its fields' type hints: a nested dataclass
    (also in a list or ``| None``) is rebuilt, a class with ``from_wire`` rebuilds itself, bytes come back."""
    hints = typing.get_type_hints(cls)
    return cls(**{k: _typed(hints.get(k), v) for k, v in data.items()})


def _typed(hint, v):
    if v is None:
        return None
    if isinstance(v, dict) and set(v) == {"__bytes__"}:
        return base64.b64decode(v["__bytes__"])
    members = [a for a in typing.get_args(hint) if a is not type(None)] \
        if typing.get_origin(hint) in (typing.Union, types.UnionType) else [hint]
    for t in members:
        if isinstance(v, dict) and hasattr(t, "from_wire"):
            return t.from_wire(v)
        if isinstance(v, dict) and dataclasses.is_dataclass(t):
            return from_json(t, v)
        if isinstance(v, list) and typing.get_origin(t) is list:
            (item,) = typing.get_args(t) or (None,)
            return [_typed(item, x) for x in v]
    if isinstance(v, list):
        return [_typed(None, x) for x in v]
    if isinstance(v, dict):
        return {k: _typed(None, x) for k, x in v.items()}
    return v
