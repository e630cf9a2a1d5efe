"""Students in the registry: a trained student is a versioned, immutable record linked to its direction version
(table ``students``): configuration, weights (safetensors, sha256), the dataset it learnt from, training parameters
and held-out metrics. ``Student.load(registry, ref)`` (:mod:`editor.student.apply`) applies one.

The weights live in the row (a BLOB / ``bytea``), not in files beside the database: a registry shared on
PostgreSQL serves them to every machine, a backup or ``export`` of the database holds them, and a record can never
point to a file that is gone. The column is deferred (listings never read it; sizes are measured by the database),
and the default width keeps a student proportionate to its resolution (``editor.student.train.default_width``).
"""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass, field
from pathlib import Path

from p2pz.editor.devices import resolve_device
from p2pz.store import models as m
from p2pz.store import repository as repo

from .naming import RefError, parse_ref, parse_version
from .records import RegistryError


@dataclass
class StudentRecord:
    direction: str  # "cat-to-dog@1"
    version: int
    config: dict
    weights_sha256: str
    dataset_sha256: str
    params: dict
    metrics: dict
    created_at: dt.datetime
    weights: bytes | None = field(default=None, repr=False)
    weights_bytes: int | None = None
    deprecated: bool = False

    @property
    def ref(self) -> str:
        return f"{self.direction} student {self.version}"

    @property
    def parameters(self) -> int | None:
        """The generator's parameter count: recorded at training, else from the float32 weights' size."""
        n = self.params.get("parameters")
        if isinstance(n, int) and not isinstance(n, bool):
            return n
        return self.weights_bytes // 4 if self.weights_bytes else None

    def to_dict(self) -> dict:
        return {"direction": self.direction, "version": self.version, "config": self.config,
                "weights_sha256": self.weights_sha256, "weights_bytes": self.weights_bytes,
                "parameters": self.parameters, "deprecated": self.deprecated,
                "dataset_sha256": self.dataset_sha256, "params": self.params, "metrics": self.metrics,
                "created_at": self.created_at.isoformat()}


def parse_choice(text: str) -> int | None:
    """Which student ``--student`` asks for: ``latest`` (the flag alone) → None, ``@V`` → V; anything else is one
    line naming the form."""
    if text == "latest":
        return None
    try:
        return parse_version(text[1:] if text.startswith("@") else "", "--student version")
    except RefError:
        raise RegistryError(f"--student takes no value or @VERSION (e.g. --student @2), not {text!r}") from None


def _record(row: m.Student, direction: m.Direction, with_weights: bool, size: int | None = None) -> StudentRecord:
    weights = bytes(row.weights) if with_weights else None
    return StudentRecord(direction=f"{direction.name}@{direction.version}", version=row.version, config=dict(row.config),
                         weights_sha256=row.weights_sha256, dataset_sha256=row.dataset_sha256,
                         params=dict(row.params or {}), metrics=dict(row.metrics or {}), created_at=row.created_at,
                         weights=weights, weights_bytes=len(weights) if weights is not None else size,
                         deprecated=bool(row.deprecated))


def store(db, direction_ref: str, *, config: dict, weights: bytes, dataset_sha256: str, params: dict,
          metrics: dict) -> StudentRecord:
    name, version = parse_ref(direction_ref, "direction")
    with db.write() as s:
        d = repo.direction_row(s, name, version)
        row, _ = repo.insert_student(s, direction_id=d.id, config=config, weights=weights,
                                     weights_sha256=hashlib.sha256(weights).hexdigest(),
                                     dataset_sha256=dataset_sha256, params=params, metrics=metrics)
        return _record(row, d, with_weights=True)


def set_deprecated(db, direction_ref: str, version: int | None, deprecated: bool) -> StudentRecord:
    """Deprecate (or undeprecate) student ``version`` of a direction version: a deprecated student is applied
    only when asked for by version (the record itself never changes)."""
    name, dversion = parse_ref(direction_ref, "direction")
    if version is None:
        verb = "deprecate" if deprecated else "undeprecate"
        raise RegistryError(f"student {verb} needs the student's version, e.g. --version 1 (see p2pz student list)")
    with db.write() as s:
        d = repo.direction_row(s, name, dversion)
        row = repo.student_row(s, d.id, version)
        row.deprecated = bool(deprecated)
        s.flush()
        return _record(row, d, False, repo.student_weight_bytes(s, [row.id]).get(row.id))


def get(db, direction_ref: str, version: int | None = None, with_weights: bool = True) -> StudentRecord:
    name, dversion = parse_ref(direction_ref, "direction")
    with db.read() as s:
        d = repo.direction_row(s, name, dversion)
        row = repo.student_row(s, d.id, version)
        size = None if with_weights else repo.student_weight_bytes(s, [row.id]).get(row.id)
        return _record(row, d, with_weights, size)


def listing(db) -> list[StudentRecord]:
    with db.read() as s:
        rows = repo.students(s)
        sizes = repo.student_weight_bytes(s, [row.id for row in rows])
        return [_record(row, s.get(m.Direction, row.direction_id), False, sizes.get(row.id)) for row in rows]


def edit_with_students(registry, directions, paths, out_dir, version: int | None = None, *, device: str | None = None,
                       force: bool = False, record_source_path: bool = False, report=None) -> list:
    """``p2pz edit --student``: each direction's trained student (the latest, or ``version``) applied to every
    image (milliseconds each) → one :class:`editor.batch.EditOutcome` per image, written as diffusion edits are
    (same names and provenance, plus the student's version and weights)."""
    from p2pz.editor.batch import student_files  # torch: only when students are applied
    from p2pz.editor.student import Student  # lazy: torch

    device = resolve_device(device)
    students = []
    for d in directions:
        record = registry.student(d.ref, version)  # the facade's errors: not-found messages with their fix
        model = Student.from_weights(record.weights, record.config, record.ref, device)
        students.append((d.ref, model, {"student": record.version, "student_weights_sha256": record.weights_sha256}))
    return student_files(students, list(paths), Path(out_dir), force=force, record_source_path=record_source_path,
                         report=report)
