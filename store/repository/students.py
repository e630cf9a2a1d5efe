"""Student rows: versioned per direction version, weights as safetensors bytes with their sha256."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from p2pz.store import models as m

from .core import NotFoundError, lock


def insert_student(s: Session, *, direction_id: int, config: dict, weights: bytes, weights_sha256: str,
                   dataset_sha256: str, params: dict, metrics: dict,
                   deprecated: bool = False) -> tuple[m.Student, bool]:
    """Content-addressed (by weights), versioned per direction version → (row, created). ``deprecated`` is
    the new row's flag (an import's); a stored student keeps its own."""
    lock(s, "student", direction_id)
    row = s.scalar(select(m.Student).where(m.Student.direction_id == direction_id,
                                           m.Student.weights_sha256 == weights_sha256))
    if row is not None:
        return row, False
    version = (s.scalar(select(func.max(m.Student.version)).where(m.Student.direction_id == direction_id)) or 0) + 1
    row = m.Student(direction_id=direction_id, version=version, config=config, weights=weights,
                    weights_sha256=weights_sha256, dataset_sha256=dataset_sha256, params=params, metrics=metrics,
                    deprecated=bool(deprecated))
    s.add(row)
    s.flush()
    return row, True


def student_row(s: Session, direction_id: int, version: int | None) -> m.Student:
    """Student ``version`` of a direction version, or (None) its latest non-deprecated one."""
    q = select(m.Student).where(m.Student.direction_id == direction_id)
    if version is not None:
        row = s.scalar(q.where(m.Student.version == version))
    else:
        row = s.scalar(q.where(m.Student.deprecated.is_(False)).order_by(m.Student.version.desc()).limit(1))
        if row is None and s.scalar(q.limit(1)) is not None:
            raise NotFoundError("every student of this direction version is deprecated", fix="deprecated-student")
    if row is None:
        raise NotFoundError("this direction version has no student" + (f" version {version}" if version else ""),
                            fix="student")
    return row


def students(s: Session, direction_ids=None) -> list[m.Student]:
    q = select(m.Student).order_by(m.Student.direction_id, m.Student.version)
    if direction_ids is not None:
        q = q.where(m.Student.direction_id.in_(list(direction_ids)))
    return list(s.scalars(q))


def student_weight_bytes(s: Session, student_ids) -> dict[int, int]:
    """{student id: size of its weights in bytes}, measured by the database (the weights are not read)."""
    ids = list(student_ids)
    if not ids:
        return {}
    rows = s.execute(select(m.Student.id, func.length(m.Student.weights)).where(m.Student.id.in_(ids)))
    return {sid: int(n or 0) for sid, n in rows}
