"""Evaluation rows: one per direction version × metric × ``p2pz eval`` run, add-only; the latest scores."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from p2pz.store import models as m


METRICS = ("clip_acc", "clip_score", "clip_directional", "structure_distance", "bg_lpips", "bg_psnr", "bg_ssim",
           "bg_mse")  # the metric names evaluations store (editor.metrics computes them)
LOWER_IS_BETTER = {"structure_distance", "bg_lpips", "bg_mse"}


def insert_evaluation(s: Session, *, run_id: str, direction_id: int, scores: dict[str, float], n_images: int,
                      params: dict) -> list[m.Evaluation]:
    """One row per metric of one run of one direction version (add-only)."""
    rows = [m.Evaluation(run_id=run_id, direction_id=direction_id, metric=metric, value=float(value),
                         n_images=n_images, params=params) for metric, value in sorted(scores.items())]
    s.add_all(rows)
    s.flush()
    return rows


def latest_scores(s: Session, direction_ids) -> dict[int, dict]:
    """{direction id: {"run_id", "created_at", "n_images", "scores": {metric: value}}} of each direction's most
    recent evaluation run."""
    ids = list(direction_ids)
    if not ids:
        return {}
    rows = s.execute(select(m.Evaluation.direction_id, m.Evaluation.run_id, m.Evaluation.created_at,
                            m.Evaluation.metric, m.Evaluation.value, m.Evaluation.n_images, m.Evaluation.id)
                     .where(m.Evaluation.direction_id.in_(ids))
                     .order_by(m.Evaluation.direction_id, m.Evaluation.created_at, m.Evaluation.id)).all()
    out: dict[int, dict] = {}
    for did, run_id, created, metric, value, n_images, _ in rows:
        entry = out.get(did)
        if entry is None or entry["run_id"] != run_id:
            entry = out[did] = {"run_id": run_id, "created_at": created, "n_images": n_images, "scores": {}}
        entry["scores"][metric] = value
    return out
