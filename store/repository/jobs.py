"""Job rows: the web app's background work (edits, preview renders), claimed by one owner at a time."""

from __future__ import annotations

import datetime as dt
from typing import Iterable

from sqlalchemy import func, or_, select, update
from sqlalchemy.orm import Session

from p2pz.store import models as m

from .core import NotFoundError


JOB_STATES = ("queued", "running", "done", "failed")


def insert_job(s: Session, *, job_id: str, kind: str, params: dict) -> m.Job:
    row = m.Job(id=job_id, kind=kind, status="queued", progress=0.0, params=params, results=[])
    s.add(row)
    s.flush()
    return row


def job_row(s: Session, job_id: str) -> m.Job:
    row = s.get(m.Job, job_id)
    if row is None:
        raise NotFoundError(f"no job {job_id}", fix="job", name=job_id)
    return row


def jobs(s: Session, *, status: str | None = None, limit: int = 50) -> list[m.Job]:
    q = select(m.Job).order_by(m.Job.created_at.desc(), m.Job.id).limit(limit)
    return list(s.scalars(q.where(m.Job.status == status) if status else q))


def claim_next_job(s: Session, kinds: Iterable[str] | None = None, owner: str | None = None,
                   now: dt.datetime | None = None) -> m.Job | None:
    """The oldest queued job, marked running by ``owner`` (with a first heartbeat at ``now``, default the UTC
    clock) — atomically, so two workers never take the same job."""
    q = select(m.Job.id).where(m.Job.status == "queued").order_by(m.Job.created_at, m.Job.id)
    if kinds is not None:
        q = q.where(m.Job.kind.in_(list(kinds)))
    now = now or m.utcnow()
    for job_id in s.scalars(q.limit(5)).all():
        taken = s.execute(update(m.Job).where(m.Job.id == job_id, m.Job.status == "queued")
                          .values(status="running", started_at=now, stage="starting", owner=owner,
                                  heartbeat_at=now, error=None)).rowcount
        if taken == 1:
            return s.get(m.Job, job_id)
    return None


def update_job(s: Session, job_id: str, *, owned_by: str | None = None, **values) -> bool:
    """Progress, stage, results, or the end of a job (``status`` done | failed, with ``finished_at``) → whether
    it was written. With ``owned_by``, only while that runner still owns the job (not after another server
    re-queued it)."""
    if values.get("status") in ("done", "failed"):
        values.setdefault("finished_at", m.utcnow())
    q = update(m.Job).where(m.Job.id == job_id)
    if owned_by is not None:
        q = q.where(m.Job.owner == owned_by)
    return s.execute(q.values(**values)).rowcount == 1


def heartbeat_job(s: Session, job_id: str, owner: str | None, now: dt.datetime | None = None) -> bool:
    """``owner`` still runs ``job_id``: refresh its heartbeat (to ``now``, default the UTC clock) → False when the
    job is no longer its running job."""
    return s.execute(update(m.Job).where(m.Job.id == job_id, m.Job.status == "running", m.Job.owner == owner)
                     .values(heartbeat_at=now or m.utcnow())).rowcount == 1


def fail_interrupted_jobs(s: Session, reason: str, stale_before: dt.datetime | None = None,
                          now: dt.datetime | None = None) -> int:
    """Mark running jobs failed whose server is gone → how many: every running job, or with ``stale_before``
    only those whose last heartbeat is older (or absent: a server from before revision 0007)."""
    q = update(m.Job).where(m.Job.status == "running")
    if stale_before is not None:
        q = q.where(or_(m.Job.heartbeat_at.is_(None), m.Job.heartbeat_at < stale_before))
    return s.execute(q.values(status="failed", error=reason, finished_at=now or m.utcnow())).rowcount


def requeue_stale_jobs(s: Session, stale_before: dt.datetime, reason: str, *, max_requeues: int = 2,
                       now: dt.datetime | None = None) -> tuple[int, int]:
    """Running jobs whose owner's last heartbeat is older than ``stale_before`` (the owner is gone) go back to
    the queue, to run again from the start, counted in ``params["requeued"]``; one already re-queued
    ``max_requeues`` times is failed with ``reason`` instead (a job that keeps killing its server is not retried
    forever) → (re-queued, failed). Jobs without a heartbeat (a server from before revision 0007 may be running
    them) are left to the start-up recovery. Each change is conditional on the lease still being expired, so a
    beat that lands meanwhile keeps the job with its owner."""
    stale = (m.Job.status == "running", m.Job.heartbeat_at.is_not(None), m.Job.heartbeat_at < stale_before)
    requeued = failed = 0
    for job_id, params in s.execute(select(m.Job.id, m.Job.params).where(*stale).order_by(m.Job.created_at)).all():
        params = dict(params or {})
        times = int(params.get("requeued") or 0)
        q = update(m.Job).where(m.Job.id == job_id, *stale)
        if times >= max_requeues:
            failed += s.execute(q.values(status="failed", error=reason, finished_at=now or m.utcnow())).rowcount
        else:
            requeued += s.execute(q.values(status="queued", owner=None, heartbeat_at=None, started_at=None,
                                           stage=None, progress=0.0, error=None,
                                           params={**params, "requeued": times + 1})).rowcount
    return requeued, failed


def finished_jobs_to_clean(s: Session, keep: int, finished_before: dt.datetime | None) -> list[str]:
    """Ids of finished jobs (done or failed) beyond the newest ``keep`` (0: none by count), or finished before
    ``finished_before`` (None: none by age) — the jobs whose files a server deletes."""
    q = (select(m.Job.id, m.Job.finished_at).where(m.Job.status.in_(("done", "failed")))
         .order_by(m.Job.finished_at.desc().nulls_last(), m.Job.id))
    out = []
    for n, (job_id, finished) in enumerate(s.execute(q)):
        if (keep and n >= keep) or (finished_before is not None and finished is not None
                                    and finished < finished_before):
            out.append(job_id)
    return out


def count_jobs(s: Session, status: str) -> int:
    return s.scalar(select(func.count()).select_from(m.Job).where(m.Job.status == status))
