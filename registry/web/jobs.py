"""Background jobs: edits (and preview renders) submitted to a server, run one at a time, in order.

A job is a row of table ``jobs`` (revision 0006) plus a folder ``<work>/jobs/<id>/`` holding what the job read
and wrote — its input image, saved under a name the server chose, and its result PNGs with their provenance.
Nothing about a job's files comes from a client: results are addressed by their index in the job's record.
Because the queue lives in the database, a restart loses nothing: :meth:`JobRunner.recover` marks a job that
was running when its server stopped as failed (saying so), and queued jobs simply run next. A running job names
its server (``owner``) and carries a heartbeat that server refreshes: a second server on the same registry fails
only jobs whose heartbeat is older than the lease, never a live server's, and a live server re-queues, every
``lease / 3``, the jobs whose owner's lease expired while it runs (:meth:`JobRunner.requeue_expired`). Every
lease decision reads the runner's ``clock`` (injected by tests, which advance it instead of sleeping).

The edit itself is :func:`editor.batch.edit_files` — the same code, outputs and provenance as ``p2pz edit``.
"""

from __future__ import annotations

import datetime as dt
import io
import logging
import os
import shutil
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from p2pz.editor.batch import edit_files, read_provenance
from p2pz.editor.config import EditConfig, InversionConfig
from p2pz.editor.errors import EditorError
from p2pz.store import repository as repo
from p2pz.store.files import atomic_write

from p2pz.registry.library.editing import check_delta_at, choose_model, one_encoder, open_editor
from p2pz.registry.library.previews import build_previews
from p2pz.registry.library.records import NotFound, RegistryError, user_errors

log = logging.getLogger("p2pz.web")
INTERRUPTED = "the server stopped while this job was running; submit it again"
MAX_REQUEUES = 2  # a job whose server stopped more often than this while running it is failed, not re-queued
IMAGE_FORMATS = {"PNG": "png", "JPEG": "jpg", "WEBP": "webp", "GIF": "gif", "BMP": "bmp", "TIFF": "tif"}


class UploadError(RegistryError):
    """An upload the server refuses; ``status`` is the HTTP status that says why (400 unreadable, 413 too big)."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


@dataclass
class Job:
    id: str
    kind: str
    status: str
    progress: float
    stage: str | None
    params: dict
    results: list = field(default_factory=list)
    error: str | None = None
    created_at: dt.datetime | None = None
    started_at: dt.datetime | None = None
    finished_at: dt.datetime | None = None

    def to_dict(self) -> dict:
        iso = lambda t: t.isoformat() if t else None  # noqa: E731
        return {"id": self.id, "kind": self.kind, "status": self.status, "progress": round(self.progress, 4),
                "stage": self.stage, "params": self.params, "results": self.results, "error": self.error,
                "created_at": iso(self.created_at), "started_at": iso(self.started_at),
                "finished_at": iso(self.finished_at)}


def _record(row) -> Job:
    return Job(id=row.id, kind=row.kind, status=row.status, progress=row.progress, stage=row.stage,
               params=dict(row.params or {}), results=list(row.results or []), error=row.error,
               created_at=row.created_at, started_at=row.started_at, finished_at=row.finished_at)


def utcnow() -> dt.datetime:
    """The real clock, as the database stores times: naive UTC."""
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)


def valid_job_id(job_id: str) -> bool:
    return len(job_id) == 32 and all(c in "0123456789abcdef" for c in job_id)


def check_image(data: bytes, *, max_bytes: int, max_pixels: int) -> tuple[str, int, int]:
    """(format extension, width, height) of an uploaded image, or :class:`UploadError`: over ``max_bytes``
    or ``max_pixels`` (413, checked from the header before decoding — the decompression-bomb guard), or not a
    readable image (400)."""
    if len(data) > max_bytes:
        raise UploadError(f"the image is {len(data)} bytes, over this server's limit of {max_bytes}; "
                          "send a smaller file", 413)
    if not data:
        raise UploadError("the upload is empty; attach an image file")
    try:
        with Image.open(io.BytesIO(data)) as im:
            w, h = im.size
            if w * h > max_pixels:
                raise UploadError(f"the image is {w}×{h} pixels, over this server's limit of {max_pixels}; "
                                  "resize it first", 413)
            fmt = IMAGE_FORMATS.get(im.format or "")
            if fmt is None:
                raise UploadError(f"{im.format} images are not accepted; send PNG, JPEG, WebP, GIF, BMP or TIFF")
            im.load()
    except UploadError:
        raise
    except Image.DecompressionBombError:
        raise UploadError("the image is larger than the decompression-bomb limit; resize it first", 413) from None
    except Exception as exc:  # noqa: BLE001 — anything PIL raises on a hostile file means: not an image
        raise UploadError(f"the upload is not a readable image ({type(exc).__name__}); send PNG, JPEG or WebP") \
            from None
    return fmt, w, h


def edit_params(*, steps: int = 50, seed: int = 0, scale: float = 1.0, xa_guidance: float | None = None,
                guidance_scale: float = 5.0, caption: str | None = None, delta_at: str = "auto") -> dict:
    """The parameters of an edit job, checked by the editor's own configuration classes."""
    try:
        InversionConfig(steps=steps, seed=seed)
        EditConfig(scale=scale, xa_guidance=xa_guidance, guidance_scale=guidance_scale, delta_at=delta_at)
    except EditorError as exc:
        raise RegistryError(str(exc)) from None
    if caption is not None and not caption.strip():
        caption = None
    return {"steps": steps, "seed": seed, "scale": scale, "xa_guidance": xa_guidance,
            "guidance_scale": guidance_scale, "caption": caption, "delta_at": delta_at}


class QueueFull(UploadError):
    """Too many jobs are waiting: 429, retry later."""

    def __init__(self, message: str, retry_after_s: int):
        super().__init__(message, 429)
        self.headers = {"Retry-After": str(retry_after_s)}


class Jobs:
    """The job queue of one registry, with its files under ``work_dir``.

    Files of finished jobs are cleaned by one rule (:meth:`clean`): a server keeps the files of its newest
    ``keep_jobs`` finished jobs and of none finished more than ``keep_jobs_days`` ago; the records stay (their
    results then answer 404, saying the files were cleaned). ``max_queued`` bounds the queue: a submission
    beyond it is answered 429 with ``Retry-After``."""

    def __init__(self, registry, work_dir: str | Path, *, keep_jobs: int = 200, keep_jobs_days: float = 30.0,
                 max_queued: int = 100, retry_after_s: int = 5):
        self.registry = registry
        self.db = registry.db
        self.work_dir = Path(work_dir)
        self.wakeup = threading.Event()
        self.keep_jobs, self.keep_jobs_days = keep_jobs, keep_jobs_days
        self.max_queued, self.retry_after_s = max_queued, retry_after_s

    def clean(self) -> int:
        """Delete the files of finished jobs beyond the newest ``keep_jobs`` or older than ``keep_jobs_days``
        → how many folders went. Running and queued jobs are never touched."""
        before = (dt.datetime.now(dt.timezone.utc).replace(tzinfo=None) - dt.timedelta(days=self.keep_jobs_days)
                  if self.keep_jobs_days else None)
        with user_errors(), self.db.read() as s:
            ids = repo.finished_jobs_to_clean(s, self.keep_jobs, before)
        gone = 0
        for job_id in ids:
            folder = self.work_dir / "jobs" / job_id
            if folder.is_dir():
                shutil.rmtree(folder, ignore_errors=True)
                gone += 1
        return gone

    def _check_room(self) -> None:
        if not self.max_queued:
            return
        with user_errors(), self.db.read() as s:
            waiting = repo.count_jobs(s, "queued")
        if waiting >= self.max_queued:
            raise QueueFull(f"{waiting} jobs are waiting, this server's limit; retry in {self.retry_after_s} s",
                            self.retry_after_s)

    def folder(self, job_id: str) -> Path:
        if not valid_job_id(job_id):
            raise NotFound(f"no job {job_id!r}; job ids are 32 hexadecimal characters")
        return self.work_dir / "jobs" / job_id

    def submit_edit(self, image: bytes, directions: list[str], params: dict, *, max_bytes: int,
                    max_pixels: int, model: str | None = None) -> Job:
        """Queue an edit of ``image`` with every one of ``directions`` (refs, checked now) → the queued job."""
        if not directions:
            raise RegistryError("choose at least one direction")
        if len(directions) > 8:
            raise RegistryError("at most 8 directions per job; submit several jobs")
        chosen = [self.registry.get(r) for r in directions]  # unknown ones fail here, before anything is stored
        one_encoder(chosen)
        check_delta_at(chosen, EditConfig(delta_at=params.get("delta_at", "all")))  # Δ_token for word modes
        self._check_room()
        refs = [d.ref for d in chosen]
        ext, w, h = check_image(image, max_bytes=max_bytes, max_pixels=max_pixels)
        job_id = uuid.uuid4().hex
        folder = self.folder(job_id)
        folder.mkdir(parents=True)
        try:
            atomic_write(folder / f"input.{ext}", image)
            with user_errors(), self.db.write() as s:
                row = repo.insert_job(s, job_id=job_id, kind="edit", params={
                    **params, "directions": refs, "model": model, "input": f"input.{ext}", "width": w,
                    "height": h})
                job = _record(row)
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        self.wakeup.set()
        return job

    def submit_preview(self, ref: str, *, steps: int, model: str | None = None) -> Job:
        """Queue the preview render of one direction (on the bundled sample image) → the queued job."""
        d = self.registry.get(ref)
        edit_params(steps=steps)
        self._check_room()
        job_id = uuid.uuid4().hex
        with user_errors(), self.db.write() as s:
            job = _record(repo.insert_job(s, job_id=job_id, kind="preview",
                                          params={"directions": [d.ref], "steps": steps, "model": model}))
        self.wakeup.set()
        return job

    def get(self, job_id: str) -> Job:
        self.folder(job_id)  # refuses a malformed id
        try:
            with user_errors(), self.db.read() as s:
                return _record(repo.job_row(s, job_id))
        except NotFound as exc:
            raise NotFound(f"{exc}; job ids come from POST /api/edits") from None

    def list(self, status: str | None = None, limit: int = 50) -> list[Job]:
        with user_errors(), self.db.read() as s:
            return [_record(r) for r in repo.jobs(s, status=status, limit=limit)]

    def result_file(self, job_id: str, index: int) -> Path:
        """The ``index``-th result file of a finished job (a path the server wrote, never one a client gave)."""
        job = self.get(job_id)
        if not 0 <= index < len(job.results):
            raise NotFound(f"job {job_id} has no result {index}; it has {len(job.results)}")
        path = self.folder(job_id) / Path(job.results[index]["file"]).name
        if not path.is_file():
            raise NotFound(f"the result files of job {job_id} were cleaned (a server keeps its newest "
                           f"{self.keep_jobs} finished jobs' files, none older than {self.keep_jobs_days:g} days)")
        return path

    def input_file(self, job_id: str) -> Path:
        job = self.get(job_id)
        return self.folder(job_id) / Path(job.params["input"]).name


class JobRunner:
    """Runs queued jobs one at a time, oldest first, keeping the last editor loaded between jobs.

    ``clock`` (a callable → the current naive-UTC time; default the real clock) is what every heartbeat, lease
    cutoff and claim reads: tests pass a fake one and advance it instead of sleeping past a lease."""

    def __init__(self, jobs: Jobs, *, model: str | None = None, device: str | None = None,
                 dtype: str | None = None, captioner: str | None = None, owner: str | None = None,
                 lease_s: float = 30.0, clock: Callable[[], dt.datetime] | None = None):
        self.jobs = jobs
        self.model, self.device, self.dtype, self.captioner = model, device, dtype, captioner
        # who runs a job (this process, this runner): another server on the same registry leaves its jobs alone
        self.owner = (owner or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:12]}")[:64]
        self.lease_s = lease_s  # a running job without a heartbeat for this long has lost its server
        self.clock = clock or utcnow
        self._swept_at: dt.datetime | None = None  # the clock's time of the last requeue_expired
        self._editor_key = None
        self._editor = None

    def _cutoff(self) -> dt.datetime:
        return self.clock() - dt.timedelta(seconds=self.lease_s)

    def recover(self) -> int:
        """At start: jobs left running by a server that is gone — no heartbeat for ``lease_s`` (or none at all:
        a server from before owners) — are failed, with the reason → how many. Jobs another live server is
        running keep running."""
        with user_errors(), self.jobs.db.write() as s:
            return repo.fail_interrupted_jobs(s, INTERRUPTED, stale_before=self._cutoff(), now=self.clock())

    def requeue_expired(self) -> tuple[int, int]:
        """While the server runs: jobs whose owner sent no heartbeat for ``lease_s`` (its server stopped, or
        never got to serve: a second ``p2pz serve`` that could not bind) go back to the queue, to run from the
        start; one re-queued ``MAX_REQUEUES`` times already is failed with the reason → (re-queued, failed)."""
        self._swept_at = self.clock()
        with user_errors(), self.jobs.db.write() as s:
            moved = repo.requeue_stale_jobs(s, self._cutoff(), INTERRUPTED, max_requeues=MAX_REQUEUES,
                                            now=self.clock())
        if moved[0]:
            self.jobs.wakeup.set()
        return moved

    def _requeue_if_due(self) -> None:
        """:meth:`requeue_expired` once every ``lease_s / 3`` of the clock (a clock set back counts as due)."""
        now = self.clock()
        last = self._swept_at
        if last is None or now < last or (now - last).total_seconds() >= self.lease_s / 3:
            try:
                moved = self.requeue_expired()
            except Exception as exc:  # noqa: BLE001 — the database is unreachable now: tried again when next due
                log.warning("could not re-queue the jobs of stopped servers (%s); trying again in %g s",
                            str(exc).splitlines()[0] if str(exc) else type(exc).__name__, self.lease_s / 3)
            else:
                if any(moved):
                    log.warning("%d job(s) re-queued and %d failed: their server stopped while running them",
                                *moved)

    def run_next(self) -> Job | None:
        """Claim and run the oldest queued job → its final record (None when the queue is empty). While it
        runs, a heartbeat thread refreshes its lease every ``lease_s / 3`` (and re-queues other servers'
        expired jobs meanwhile)."""
        with user_errors(), self.jobs.db.write() as s:
            row = repo.claim_next_job(s, owner=self.owner, now=self.clock())
            job = _record(row) if row is not None else None
        if job is None:
            return None
        done = threading.Event()
        beat = threading.Thread(target=self._heartbeat, args=(job.id, done), name="p2pz-job-heartbeat",
                                daemon=True)
        beat.start()
        try:
            try:
                results = self._run_preview(job) if job.kind == "preview" else self._run_edit(job)
            except Exception as exc:  # noqa: BLE001 — a job's failure is recorded, the worker goes on
                message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                self._update(job.id, status="failed", error=message, stage=None)
            else:  # a finished job carries no earlier error (one a wrongly-run recovery may have written)
                self._update(job.id, status="done", progress=1.0, stage=None, results=results, error=None)
        finally:
            done.set()
            beat.join()
        try:
            self.jobs.clean()
        except (RegistryError, OSError):  # cleaning is retried after the next job
            pass
        return self.jobs.get(job.id)

    def _heartbeat(self, job_id: str, done: threading.Event) -> None:
        while not done.wait(self.lease_s / 3):
            try:
                with self.jobs.db.write() as s:
                    repo.heartbeat_job(s, job_id, self.owner, now=self.clock())
            except Exception:  # noqa: BLE001 — a missed beat is retried; the lease is three beats long
                pass
            self._requeue_if_due()  # after this runner's own beat: its own job is fresh unless beats kept failing

    def loop(self, stop: threading.Event, poll_s: float = 1.0) -> None:
        """Run jobs until ``stop`` is set, waking on submissions (or every ``poll_s``); between jobs, every
        ``lease_s / 3``, re-queue the jobs of servers that stopped (:meth:`requeue_expired`)."""
        while not stop.is_set():
            self._requeue_if_due()
            try:
                job = self.run_next()
            except RegistryError:
                job = None
            if job is None:
                self.jobs.wakeup.wait(poll_s)
                self.jobs.wakeup.clear()

    # --- the work --------------------------------------------------------------------------------------
    def _update(self, job_id: str, **values) -> None:
        """Write this runner's job — only while it still owns it: a job another server re-queued (this runner's
        lease had expired) is no longer this runner's to finish."""
        if values.get("status") in ("done", "failed"):
            values.setdefault("finished_at", self.clock())
        with user_errors(), self.jobs.db.write() as s:
            repo.update_job(s, job_id, owned_by=self.owner, **values)

    def editor(self, directions):
        key = (choose_model(directions, self.model), self.device, self.dtype)
        if key != self._editor_key:
            self._editor = None  # free the previous model first
            kwargs = {k: v for k, v in (("device", self.device), ("dtype", self.dtype),
                                        ("captioner", self.captioner)) if v}
            self._editor = open_editor(directions, self.model, **kwargs)
            self._editor_key = key
        return self._editor

    def _reporter(self, job_id: str, steps: int):
        """An ``on_step`` callback writing a job's progress: the inversion, then the lockstep reference + edit
        pass, ``steps`` each (at most five writes a second)."""
        expected = 2 * steps
        state = {"done": 0, "base": 0, "stage": None, "last": 0.0}

        def on_step(stage: str, done: int, total: int | None) -> None:
            if stage != state["stage"]:
                state["stage"], state["base"] = stage, state["done"]
            state["done"] = state["base"] + done
            now = time.monotonic()
            if now - state["last"] >= 0.2 or done == total:
                state["last"] = now
                self._update(job_id, stage=stage, progress=min(0.99, state["done"] / expected))
        return on_step

    def _run_preview(self, job: Job) -> list[dict]:
        self._update(job.id, stage="loading model", progress=0.0)
        done = build_previews(self.jobs.registry, job.params["directions"], model=self.model, steps=job.params["steps"],
                              editor_for=self.editor, on_step=self._reporter(job.id, int(job.params["steps"])))
        failed = [r for r in done if r["status"] == "failed"]
        if failed:
            raise RegistryError(failed[0]["error"])
        return [{"direction": r["direction"], "preview": r["key"]} for r in done]

    def _run_edit(self, job: Job) -> list[dict]:
        p = job.params
        directions = [self.jobs.registry.get(r) for r in p["directions"]]
        self._update(job.id, stage="loading model", progress=0.0)
        editor = self.editor(directions)
        with editor.reporting(self._reporter(job.id, int(p["steps"]))):
            self._update(job.id, stage="caption" if not p.get("caption") else "inversion")
            folder = self.jobs.folder(job.id)
            outcome = edit_files(editor, [folder / p["input"]], directions, folder,
                                 inversion=InversionConfig(steps=int(p["steps"]), seed=int(p["seed"])),
                                 edit=EditConfig(scale=float(p["scale"]), xa_guidance=p.get("xa_guidance"),
                                                 guidance_scale=float(p["guidance_scale"]),
                                                 delta_at=p.get("delta_at", "all")),
                                 caption=p.get("caption"), force=True)[0]
        if not outcome.ok:
            raise RegistryError(outcome.error or "the edit failed")
        results = []
        for d, out in zip(directions, outcome.outputs):
            provenance = read_provenance(out)
            provenance.pop("source_path", None)  # the server's own folder layout is not the client's business
            results.append({"direction": d.ref, "file": Path(out).name, "provenance": provenance})
        return results
