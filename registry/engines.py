"""Where batch work runs: here (``--engine local``, the default) or on a Ray cluster (``--engine ray``).

On Ray, the items (images to edit, concepts to encode) become a Ray Data dataset mapped with ``map_batches``
over a callable class: each actor loads its model once and handles one item at a time; the driver shows one
progress bar for the whole job and gets one outcome per item, in order. Everything an item writes (images with
their provenance, cache entries) is written by the same functions as a local run, so results are identical; a
failing item is reported with its error and the others finish. Records reach the database through the driver
only (one writer).

Ray facts for small machines (architecture §8): on 2 cores give actors fractional CPUs (0.5 each), or the read
task and the actors starve each other.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from .records import RegistryError

ENGINES = ("local", "ray")
_ENV = ("P2PZ_HOME", "P2PZ_MODEL", "P2PZ_CACHE_MAX_GB", "HF_HOME", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE",
        "XDG_DATA_HOME")


@dataclass
class Engine:
    kind: str = "local"
    address: str | None = None  # a running Ray cluster ("auto", "ray://host:10001"); None starts a local one
    workers: int = 1
    gpus_per_worker: float = 0.0
    cpus_per_worker: float | None = None  # default: 1 with GPUs, else 0.5

    def __post_init__(self):
        if self.kind not in ENGINES:
            raise RegistryError(f"unknown engine {self.kind!r}; use local or ray")
        if self.workers < 1:
            raise RegistryError("--workers must be at least 1")
        if self.gpus_per_worker < 0:
            raise RegistryError("--gpus-per-worker must be ≥ 0")


@dataclass
class FrozenDirection:
    """A direction as plain data (name, version, encoder, Δ as numpy), to send to another process."""

    name: str
    version: int
    encoder: str
    encoder_model: str | None
    delta: object = field(repr=False)  # numpy [1, 77, D] float32

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"

    @property
    def vector(self):
        import torch

        return torch.from_numpy(self.delta.copy())


def freeze(d) -> FrozenDirection:
    return FrozenDirection(d.name, d.version, d.encoder, d.encoder_model, d.vector_numpy())


def start_ray(engine: Engine):
    """Connect to ``engine.address`` or start a local Ray (no dashboard) → the ``ray`` module."""
    try:
        import ray
    except ImportError:
        raise RegistryError("--engine ray needs Ray: pip install 'p2pz[ray]'") from None
    if not ray.is_initialized():
        env = {k: os.environ[k] for k in _ENV if k in os.environ}
        import logging

        kwargs = {"include_dashboard": False, "log_to_driver": False, "runtime_env": {"env_vars": env},
                  "logging_level": logging.ERROR}
        try:
            ray.init(address=engine.address, **kwargs)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            where = engine.address or "a local Ray"
            raise RegistryError(f"cannot start or reach {where}: {str(exc).splitlines()[0]}; check --address") \
                from None
    return ray


def ray_map(engine: Engine, items: list[dict], worker, args: tuple, *, desc: str, progress: bool,
            on_result: Callable[[dict], None] | None = None) -> list[dict]:
    """``worker(*args)`` on each actor, called with one item at a time → the result rows, in item order."""
    from store.progress import progress_bar

    out = []
    with progress_bar(len(items), desc, enabled=progress, unit="item") as bar:
        for row in ray_iter(engine, items, worker, args):
            out.append(row)
            if on_result:
                on_result(row)
            bar.update()
    return out


def ray_iter(engine: Engine, items: list[dict], worker, args: tuple):
    """The result rows of ``worker(*args)`` over ``items``, one by one as they finish (in item order)."""
    import logging

    ray = start_ray(engine)
    from ray.data import ActorPoolStrategy

    # p2pz reports outcomes and failures itself: no execution plans or stack traces from Ray Data's logger
    logging.getLogger("ray.data").setLevel(logging.CRITICAL)
    ctx = ray.data.DataContext.get_current()
    ctx.execution_options.preserve_order = True
    ctx.enable_progress_bars = False
    cpus = engine.cpus_per_worker or (1.0 if engine.gpus_per_worker else 0.5)
    # One call at a time per actor, on the actor's main thread: Ray Data's default moves the call to a helper
    # thread and overlaps batching with it, which costs a CPU-bound model ≈ 1.5× here (bench/ray_overhead.py).
    compute = ActorPoolStrategy(size=engine.workers, enable_true_multi_threading=True)
    import warnings

    with warnings.catch_warnings():  # max_restarts has no named parameter yet (Ray 2.60; pinned below 2.64)
        warnings.simplefilter("ignore", DeprecationWarning)
        # no restarts: an actor whose model cannot load fails the job at once, with its error, instead of
        # reloading forever (and Ray would warn about restarting actors whose arguments live in the object store)
        ds = ray.data.from_items(items).map_batches(
            worker, fn_constructor_args=args, batch_size=1, compute=compute, num_cpus=cpus,
            num_gpus=engine.gpus_per_worker or None, max_restarts=0)
    try:
        for row in ds.iter_rows():
            yield json.loads(row["result"])
    except ray.exceptions.RayError as exc:  # a worker could not start (its model did not load, …)
        cause = getattr(exc, "cause", None) or exc
        lines = [ln.strip() for ln in str(cause).splitlines() if ln.strip()]
        message = next((ln for ln in reversed(lines) if "Error" in ln or "error" in ln), lines[-1] if lines else "")
        message = message.split(": ", 1)[1] if message.split(": ", 1)[0].endswith("Error") else message
        raise RegistryError(f"the Ray job failed: {message[:300]}") from None


# --- editing ------------------------------------------------------------------------------------------------

class EditWorker:
    """A Ray actor's editor: loaded once, then one image per call through :func:`editor.batch.edit_files`."""

    def __init__(self, spec: dict):
        import torch

        from .editing import open_editor

        torch.set_num_threads(spec["threads"])  # as many as the driver would use: bit-identical results
        self.spec = spec
        self.editor = open_editor(spec["directions"], spec["model"], **spec["editor"])

    def __call__(self, batch: dict) -> dict:
        from editor.batch import EditOutcome, edit_files
        from editor.errors import ComponentLoadError

        s = self.spec
        results = []
        for image in batch["image"]:
            try:
                outcome = edit_files(self.editor, [Path(str(image))], s["directions"], Path(s["out_dir"]),
                                     inversion=s["inversion"], edit=s["edit"], caption=s["caption"],
                                     save_reconstruction=s["save_reconstruction"], force=s["force"],
                                     skip_existing=s["skip_existing"],
                                     record_source_path=s.get("record_source_path", False))[0]
            except ComponentLoadError:
                raise  # the captioner cannot load: every image would fail alike; the job fails with this line
            except Exception as exc:  # noqa: BLE001 — one item's failure is reported, the others go on
                outcome = EditOutcome(image=str(image), ok=False, error=f"{type(exc).__name__}: {exc}")
            results.append(json.dumps(asdict(outcome)))
        return {"result": results}


def edit_many(engine: Engine, directions: list, paths: list[Path], out_dir: Path, *, model: str | None,
              editor_kwargs: dict, inversion, edit, caption: str | None = None, save_reconstruction: bool = False,
              force: bool = False, skip_existing: bool = False, progress: bool = False,
              report: Callable | None = None, record_source_path: bool = False,
              open_local: Callable | None = None) -> list:
    """Edit every image with every direction on ``engine`` → one :class:`editor.batch.EditOutcome` per image.

    What needs no model is settled first (:func:`editor.batch.triage`: missing inputs, existing outputs, two
    inputs writing one output), so the model is loaded only when some image is left to edit."""
    from editor.batch import EditOutcome, edit_files, labels_of, triage

    settled = triage(paths, labels_of(directions), out_dir, force=force, skip_existing=skip_existing,
                     save_reconstruction=save_reconstruction)
    for outcome in settled:
        if outcome is not None and report:
            report(outcome)
    todo = [p for p, o in zip(paths, settled) if o is None]
    done: list = []
    if todo and engine.kind == "local":
        editor = open_local() if open_local else _open(directions, model, editor_kwargs)
        done = edit_files(editor, todo, directions, out_dir, inversion=inversion, edit=edit, caption=caption,
                          save_reconstruction=save_reconstruction, force=force, skip_existing=skip_existing,
                          record_source_path=record_source_path, report=report)
    elif todo:
        import torch

        frozen = [freeze(d) for d in directions]
        spec = {"directions": frozen, "model": model, "editor": {**editor_kwargs, "progress": False},
                "out_dir": str(out_dir), "inversion": inversion, "edit": edit, "caption": caption,
                "save_reconstruction": save_reconstruction, "force": force, "skip_existing": skip_existing,
                "record_source_path": record_source_path, "threads": torch.get_num_threads()}
        rows = ray_map(engine, [{"image": str(p)} for p in todo], EditWorker, (spec,), desc="editing (ray)",
                       progress=progress, on_result=(lambda r: report(EditOutcome(**r))) if report else None)
        done = [EditOutcome(**r) for r in rows]
    edited = iter(done)
    return [o if o is not None else next(edited) for o in settled]


def _open(directions, model, kwargs):
    from .editing import open_editor

    return open_editor(directions, model, **kwargs)


# --- building many directions ---------------------------------------------------------------------------------

class EncodeWorker:
    """A Ray actor's text encoder: loaded once, then one bank per call — made from its generator when it is new
    (templates, an LLM) and encoded. Returns plain data; the driver writes the records."""

    def __init__(self, spec: dict):
        import torch

        from .encoding import load_encoder

        torch.set_num_threads(spec["threads"])
        self.encoder = load_encoder(spec["model"], spec["device"])

    def __call__(self, batch: dict) -> dict:
        results = []
        for raw in batch["item"]:
            item = json.loads(str(raw))
            try:
                results.append(json.dumps(encode_item(self.encoder, item)))
            except Exception as exc:  # noqa: BLE001 — reported for this concept; the others go on
                results.append(json.dumps({"ref": item["ref"], "error": f"{type(exc).__name__}: {exc}"}))
        return {"result": results}


def encode_item(encoder, item: dict) -> dict:
    """One bank of a ``build-many``: its sentences (given, or drafted with the item's generator) encoded."""
    import base64

    from store.vectors import to_bytes

    from .banks import draft_bank
    from .encoding import encode_bank, save_stats

    if item.get("sentences") is not None:
        sentences, generator, params = item["sentences"], item["generator"], item["params"]
        drafted = False
    else:
        src = draft_bank(item["concept"], item["generator"], item["n"], item["seed"], dict(item["options"]))
        sentences, generator, params = src.draft.sentences, src.generator, src.draft.params
        drafted = True
    encoded = encode_bank(encoder, sentences)
    from generators import bank_sha256

    sha = bank_sha256(sentences)
    try:
        save_stats(sha, encoder.fingerprint, encoded.stats)
    except OSError:
        pass
    b64 = lambda a: base64.b64encode(to_bytes(a)).decode()  # noqa: E731
    return {"ref": item["ref"], "concept": item["concept"], "sha256": sha, "generator": generator,
            "params": params, "sentences": sentences if drafted else None, "mean": b64(encoded.mean),
            "key": b64(encoded.key), "key_kind": encoded.key_kind}


class PreviewWorker:
    """A Ray actor rendering previews (registry.previews): one editor per model, loaded on first use; each call
    edits one image with a chunk of directions and returns the edited PNGs' bytes."""

    def __init__(self, spec: dict):
        import torch

        torch.set_num_threads(spec["threads"])
        self.spec = spec
        self.editors: dict = {}

    def __call__(self, batch: dict) -> dict:
        import base64
        import tempfile

        from editor.batch import edit_files, output_name, output_stem
        from editor.config import EditConfig, InversionConfig

        from .editing import open_editor

        s = self.spec
        results = []
        for raw in batch["item"]:
            item = json.loads(str(raw))
            dirs = [s["directions"][r] for r in item["refs"]]
            try:
                if item["model"] not in self.editors:
                    self.editors = {item["model"]: open_editor(dirs, item["model"], **s["editor"])}
                image = Path(item["image"])
                with tempfile.TemporaryDirectory() as tmp:
                    outcome = edit_files(self.editors[item["model"]], [image], dirs, Path(tmp),
                                         inversion=InversionConfig(steps=s["steps"], seed=s["seed"]),
                                         edit=EditConfig(), caption=s.get("caption"), force=True)[0]
                    stem = output_stem(image)
                    pngs = {d.ref: base64.b64encode((Path(tmp) / output_name(stem, d.ref)).read_bytes())
                            .decode() for d in dirs} if outcome.ok else {}
                results.append(json.dumps({"error": None if outcome.ok else outcome.error, "pngs": pngs}))
            except Exception as exc:  # noqa: BLE001
                results.append(json.dumps({"error": f"{type(exc).__name__}: {exc}", "pngs": {}}))
        return {"result": results}


class PairsWorker:
    """A Ray actor of ``distill pairs``: the teacher editor (and the filter's scorers) loaded once; each call
    makes one training pair (editor.student.pairs.teacher_pair) and returns both images as PNG bytes."""

    def __init__(self, spec: dict):
        import torch

        from .editing import open_editor

        torch.set_num_threads(spec["threads"])
        self.spec = spec
        self.editor = open_editor([spec["direction"]], spec["model"], **spec["editor"])
        self.scorers = None
        if spec["filter"]:
            from editor.evaluate import Scorers

            self.scorers = Scorers.load(spec["clip_model"], spec["dino_model"], device=spec["editor"].get("device"))

    def __call__(self, batch: dict) -> dict:
        import base64
        import io

        from editor.student.pairs import teacher_pair

        s = self.spec
        results = []
        for raw in batch["item"]:
            kind, item, pid = json.loads(str(raw))
            try:
                src, tgt, scores = teacher_pair(self.editor, s["direction"], kind, item, prompt=s["prompt"],
                                                size=s["size"], inversion=s["inversion"], edit=s["edit"],
                                                scorers=self.scorers, source_concept=s["source_concept"],
                                                target_concept=s["target_concept"], caption=s.get("caption"))
                png = []
                for im in (src, tgt):
                    buf = io.BytesIO()
                    im.save(buf, format="PNG")
                    png.append(base64.b64encode(buf.getvalue()).decode())
                results.append(json.dumps({"job": [kind, item, pid], "png": png, "scores": scores, "model": {
                    "model": self.editor.model_id, "model_fingerprint": self.editor.model_fingerprint}}))
            except Exception as exc:  # noqa: BLE001 — this pair fails, the others go on
                results.append(json.dumps({"job": [kind, item, pid], "error": f"{type(exc).__name__}: {exc}"}))
        return {"result": results}


def pairs_runner(engine: Engine, spec: dict, progress: bool = False):
    """A ``runner`` for :func:`editor.student.pairs.make_pairs` computing the pairs on Ray workers."""
    import torch

    spec = {**spec, "direction": freeze(spec["direction"]), "threads": torch.get_num_threads()}

    def run(jobs):
        import base64
        import io

        from PIL import Image

        if not jobs:
            return
        items = [{"item": json.dumps([kind, str(item) if kind == "image" else item, pid])}
                 for kind, item, pid in jobs]
        originals = {pid: (kind, item, pid) for kind, item, pid in jobs}
        for row in ray_iter(engine, items, PairsWorker, (spec,)):
            job = originals[row["job"][2]]
            if "error" in row:
                yield job, None, None, None, row["error"]
                continue
            src, tgt = (Image.open(io.BytesIO(base64.b64decode(p))).convert("RGB") for p in row["png"])
            yield job, src, tgt, row["scores"], row["model"]
    return run
