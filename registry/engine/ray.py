"""The Ray engine's plumbing: starting or reaching a cluster, and a Ray Data ``map_batches`` over an actor class
that builds the feature's worker once and calls it item by item.

Ray facts for small machines (architecture §11): on 2 cores give actors fractional CPUs (0.5 each), or the read
task and the actors starve each other.
"""

from __future__ import annotations

import json
import logging
import os
import warnings

from p2pz.registry.library.records import RegistryError

from . import from_json, to_json

_ENV = ("P2PZ_HOME", "P2PZ_MODEL", "P2PZ_CACHE_MAX_GB", "HF_HOME", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE",
        "XDG_DATA_HOME")


def start_ray(engine):
    """Connect to ``engine.address`` or start a local Ray (no dashboard) → the ``ray`` module."""
    try:
        import ray  # lazy: ray
    except ImportError:
        raise RegistryError("--engine ray needs Ray: pip install 'p2pz[ray]'") from None
    if not ray.is_initialized():
        env = {k: os.environ[k] for k in _ENV if k in os.environ}
        kwargs = {"include_dashboard": False, "log_to_driver": False, "runtime_env": {"env_vars": env},
                  "logging_level": logging.ERROR}
        try:
            ray.init(address=engine.address, **kwargs)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            where = engine.address or "a local Ray"
            raise RegistryError(f"cannot start or reach {where}: {str(exc).splitlines()[0]}; check --address") \
                from None
    return ray


class Actor:
    """One Ray actor: the feature's worker built once (with the driver's torch thread count, so results are
    bit-identical to a local run), then each row's item decoded, worked and encoded back. An item's error is the
    worker's ``failed`` result; an error in ``worker.fatal`` fails the job with its message."""

    def __init__(self, worker: type, setup, threads: int):
        import torch  # lazy: torch

        torch.set_num_threads(threads)
        self.worker = worker(setup)
        self.cls = worker

    def __call__(self, batch: dict) -> dict:
        results = []
        for raw in batch["item"]:
            item = from_json(self.cls.Item, json.loads(str(raw)))
            try:
                result = self.worker(item)
            except self.cls.fatal:
                raise
            except Exception as exc:  # noqa: BLE001 — one item's failure is reported, the others go on
                result = self.cls.failed(item, f"{type(exc).__name__}: {exc}")
            results.append(json.dumps(to_json(result)))
        return {"result": results}


def ray_iter(engine, worker: type, setup, items: list):
    """The results of ``worker`` over ``items`` on ``engine``'s actors, one by one as they finish (in item order)."""
    if not items:
        return
    import torch  # lazy: torch

    ray = start_ray(engine)
    from ray.data import ActorPoolStrategy  # lazy: ray

    # p2pz reports outcomes and failures itself: no execution plans or stack traces from Ray Data's logger
    logging.getLogger("ray.data").setLevel(logging.CRITICAL)
    ctx = ray.data.DataContext.get_current()
    ctx.execution_options.preserve_order = True
    ctx.enable_progress_bars = False
    cpus = engine.cpus_per_worker or (1.0 if engine.gpus_per_worker else 0.5)
    # One call at a time per actor, on the actor's main thread: Ray Data's default moves the call to a helper
    # thread and overlaps batching with it, which costs a CPU-bound model ≈ 1.5× here (bench/ray_overhead.py).
    compute = ActorPoolStrategy(size=engine.workers, enable_true_multi_threading=True)
    rows = [{"item": json.dumps(to_json(item))} for item in items]
    with warnings.catch_warnings():  # max_restarts has no named parameter yet (Ray 2.60; pinned below 2.64)
        warnings.simplefilter("ignore", DeprecationWarning)
        # no restarts: an actor whose model cannot load fails the job at once, with its error, instead of
        # reloading forever (and Ray would warn about restarting actors whose arguments live in the object store)
        ds = ray.data.from_items(rows).map_batches(
            Actor, fn_constructor_args=(worker, setup, torch.get_num_threads()), batch_size=1, compute=compute,
            num_cpus=cpus, num_gpus=engine.gpus_per_worker or None, max_restarts=0)
    try:
        for row in ds.iter_rows():
            yield from_json(worker.Result, json.loads(row["result"]))
    except ray.exceptions.RayError as exc:  # a worker could not start (its model did not load, …)
        cause = getattr(exc, "cause", None) or exc
        lines = [ln.strip() for ln in str(cause).splitlines() if ln.strip()]
        message = next((ln for ln in reversed(lines) if "Error" in ln or "error" in ln), lines[-1] if lines else "")
        message = message.split(": ", 1)[1] if message.split(": ", 1)[0].endswith("Error") else message
        raise RegistryError(f"the Ray job failed: {message[:300]}") from None
