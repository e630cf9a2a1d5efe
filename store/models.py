"""SQLAlchemy models of the registry (architecture §3).

The schema is created and changed only by the Alembic revisions in ``migrations/``; these classes mirror
the head revision (a test compares them). Content columns are immutable once written: an ORM guard
(:func:`_refuse_content_update`) raises on any attempt to change them. Only the annotations
``Direction.tags``, ``Direction.deprecated`` and ``Direction.note`` may change after insert.

Vectors are ``safetensors`` bytes (dtype and shape inside), see :mod:`store.vectors`.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    event,
    inspect,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)


class Base(DeclarativeBase):
    pass


class ImmutableRecordError(RuntimeError):
    """Raised when code tries to change the content of a stored record."""


class Encoder(Base):
    __tablename__ = "encoders"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    fingerprint: Mapped[str] = mapped_column(String(64), unique=True, nullable=False)
    model: Mapped[str] = mapped_column(Text, nullable=False)
    subfolder: Mapped[str | None] = mapped_column(String(200))
    revision: Mapped[str | None] = mapped_column(String(100))
    architecture: Mapped[str] = mapped_column(String(100), nullable=False)
    hidden_size: Mapped[int] = mapped_column(Integer, nullable=False)
    max_length: Mapped[int] = mapped_column(Integer, nullable=False)
    pad_id: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow, nullable=False)
    # revision 0008: "sd" (one text encoder) or "sdxl" (the pair; ``parts`` lists each one's facts)
    family: Mapped[str] = mapped_column(String(20), nullable=False, default="sd", server_default="sd")
    parts: Mapped[list | None] = mapped_column(JSON)
    key_size: Mapped[int | None] = mapped_column(Integer)  # the search key's width when it is not hidden_size

    @property
    def key_dim(self) -> int:
        """The width of this encoder's search keys (SDXL: the pooled embedding's, 1280)."""
        return self.key_size or self.hidden_size


class Bank(Base):
    __tablename__ = "banks"
    __table_args__ = (
        UniqueConstraint("concept", "version", name="uq_banks_concept_version"),
        UniqueConstraint("concept", "sha256", name="uq_banks_concept_sha256"),
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    concept: Mapped[str] = mapped_column(String(200), nullable=False, index=True)
    version: Mapped[int] = mapped_column(Integer, nullable=False)
    generator: Mapped[str] = mapped_column(String(50), nullable=False)
    params: Mapped[dict] = mapped_column(JSON, nullable=False, default=dict)
    sentences: Mapped[list] = mapped_column(JSON, nullable=False, deferred=True)  # loaded on access
    n_sentences: Mapped[int] = mapped_column(Integer, nullable=False)
    sha256: Mapped[str] = mapped_column(String(64), nullable=False)
    note: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow, nullable=False)


class Embedding(Base):
    __tablename__ = "embeddings"
    __table_args__ = (UniqueConstraint("bank_id", "encoder_id", name="uq_embeddings_bank_encoder"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    bank_id: Mapped[int] = mapped_column(ForeignKey("banks.id", ondelete="RESTRICT"), nullable=False)
    encoder_id: Mapped[int] = mapped_column(ForeignKey("encoders.id", ondelete="RESTRICT"), nullable=False)
    mean: Mapped[bytes] = mapped_column(LargeBinary, nullable=False, deferred=True)  # safetensors [1, 77, D] fp32
    key: Mapped[bytes] = mapped_column(LargeBinary, nullable=False, deferred=True)  # safetensors [D] fp32
    key_kind: Mapped[str] = mapped_column(String(30), nullable=False)  # pooler | masked-mean | token-mean
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow, nullable=False)
    # revision 0010 (token-aligned directions): the mean at the concept word's own tokens, safetensors [D] fp32
    token_mean: Mapped[bytes | None] = mapped_column(LargeBinary, deferred=True)
    token_word: Mapped[str | None] = mapped_column(String(200))
    token_count: Mapped[int | None] = mapped_column(Integer)  # bank sentences that contain the word
    bank: Mapped[Bank] = relationship(lazy="joined")
    encoder: Mapped[Encoder] = relationship(lazy="joined")


class Direction(Base):
    """A versioned edit direction.

    ``kind="pair"``: Δ = scale · (mean(target) − mean(source)), materialized on read from the two
    embeddings (no vector stored). ``kind="combination"``: Δ = Σ wᵢ Δᵢ over ``components``
    (``[{"id", "name", "version", "weight"}]``), materialized on read. ``vector`` is NULL for both; it
    exists in the schema for directions that cannot be derived.
    """

    __tablename__ = "directions"
    __table_args__ = (
        UniqueConstraint("name", "version", name="uq_directions_name_version"),
        UniqueConstraint("name", "content_sha256", name="uq_directions_name_content"),
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), nullable=False, index=True)
    version: Mapped[int] = mapped_column(Integer, nullable=False)
    kind: Mapped[str] = mapped_column(String(20), nullable=False)
    encoder_id: Mapped[int] = mapped_column(ForeignKey("encoders.id", ondelete="RESTRICT"), nullable=False)
    source_id: Mapped[int | None] = mapped_column(ForeignKey("embeddings.id", ondelete="RESTRICT"))
    target_id: Mapped[int | None] = mapped_column(ForeignKey("embeddings.id", ondelete="RESTRICT"))
    scale: Mapped[float] = mapped_column(Float, nullable=False, default=1.0)
    components: Mapped[list | None] = mapped_column(JSON)
    vector: Mapped[bytes | None] = mapped_column(LargeBinary, deferred=True)
    content_sha256: Mapped[str] = mapped_column(String(64), nullable=False, index=True)
    tags: Mapped[list] = mapped_column(JSON, nullable=False, default=list)
    note: Mapped[str | None] = mapped_column(Text)
    deprecated: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow, nullable=False)
    origin: Mapped[dict | None] = mapped_column(JSON)  # where an imported direction came from (revision 0009)
    encoder: Mapped[Encoder] = relationship(lazy="joined")
    source: Mapped[Embedding | None] = relationship(foreign_keys=[source_id])
    target: Mapped[Embedding | None] = relationship(foreign_keys=[target_id])
    key_record: Mapped["DirectionKey"] = relationship(uselist=False, lazy="select")

    @property
    def key(self) -> bytes:
        """The search key (safetensors [D] fp32), kept in ``direction_keys`` so listings never read blobs."""
        return self.key_record.key


class DirectionKey(Base):
    """A direction's search key, apart from the listing columns (revision 0003)."""

    __tablename__ = "direction_keys"
    direction_id: Mapped[int] = mapped_column(ForeignKey("directions.id", ondelete="CASCADE"), primary_key=True)
    key: Mapped[bytes] = mapped_column(LargeBinary, nullable=False)


class Evaluation(Base):
    """One image metric of one direction version in one ``p2pz eval`` run (revision 0004). Add-only."""

    __tablename__ = "evaluations"
    __table_args__ = (
        UniqueConstraint("run_id", "direction_id", "metric", name="uq_evaluations_run_direction_metric"),
        Index("ix_evaluations_direction_metric", "direction_id", "metric"),
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[str] = mapped_column(String(32), nullable=False, index=True)
    direction_id: Mapped[int] = mapped_column(ForeignKey("directions.id", ondelete="RESTRICT"), nullable=False)
    metric: Mapped[str] = mapped_column(String(50), nullable=False)
    value: Mapped[float] = mapped_column(Float, nullable=False)
    n_images: Mapped[int] = mapped_column(Integer, nullable=False)
    params: Mapped[dict] = mapped_column(JSON, nullable=False, default=dict)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow, nullable=False)


class Student(Base):
    """A real-time network distilled from one direction version (revision 0005). Immutable; versions per
    direction version, content-addressed by the weights' sha256."""

    __tablename__ = "students"
    __table_args__ = (
        UniqueConstraint("direction_id", "version", name="uq_students_direction_version"),
        UniqueConstraint("direction_id", "weights_sha256", name="uq_students_direction_weights"),
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    direction_id: Mapped[int] = mapped_column(ForeignKey("directions.id", ondelete="RESTRICT"), nullable=False)
    version: Mapped[int] = mapped_column(Integer, nullable=False)
    config: Mapped[dict] = mapped_column(JSON, nullable=False)
    weights: Mapped[bytes] = mapped_column(LargeBinary, nullable=False, deferred=True)  # safetensors
    weights_sha256: Mapped[str] = mapped_column(String(64), nullable=False)
    dataset_sha256: Mapped[str] = mapped_column(String(64), nullable=False)
    params: Mapped[dict] = mapped_column(JSON, nullable=False, default=dict)
    metrics: Mapped[dict] = mapped_column(JSON, nullable=False, default=dict)
    deprecated: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)  # revision 0007
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow, nullable=False)


class Job(Base):
    """Background work of the web app (revision 0006): an edit or a preview render. Mutable while it runs:
    status queued → running → done | failed, progress [0, 1], stage, results, error."""

    __tablename__ = "jobs"
    __table_args__ = (Index("ix_jobs_status_created", "status", "created_at"),)
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    kind: Mapped[str] = mapped_column(String(20), nullable=False)
    status: Mapped[str] = mapped_column(String(10), nullable=False)
    progress: Mapped[float] = mapped_column(Float, nullable=False, default=0.0)
    stage: Mapped[str | None] = mapped_column(String(50))
    params: Mapped[dict] = mapped_column(JSON, nullable=False, default=dict)
    results: Mapped[list] = mapped_column(JSON, nullable=False, default=list)
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow, nullable=False)
    started_at: Mapped[dt.datetime | None] = mapped_column(DateTime)
    finished_at: Mapped[dt.datetime | None] = mapped_column(DateTime)
    owner: Mapped[str | None] = mapped_column(String(64))  # the server running it (revision 0007)
    heartbeat_at: Mapped[dt.datetime | None] = mapped_column(DateTime)  # refreshed while it runs


class Meta(Base):
    """Key/value counters. ``generation`` grows with every change that affects search (revision 0002)."""

    __tablename__ = "meta"
    key: Mapped[str] = mapped_column(String(50), primary_key=True)
    value: Mapped[int] = mapped_column(Integer, nullable=False)


MUTABLE_COLUMNS = {Direction: {"tags", "deprecated", "note"}, Meta: {"value"}, Student: {"deprecated"},
                   Job: {"status", "progress", "stage", "results", "error", "started_at", "finished_at", "owner",
                         "heartbeat_at"}}


# Content added by a later revision to rows made before it: each may be set once, from NULL, and never changed.
FILL_ONCE_COLUMNS = {Embedding: {"token_mean", "token_word", "token_count"}}


@event.listens_for(Base, "before_update", propagate=True)
def _refuse_content_update(mapper, connection, target) -> None:
    allowed = MUTABLE_COLUMNS.get(type(target), set())
    fill_once = FILL_ONCE_COLUMNS.get(type(target), set())
    state = inspect(target)
    for attr in state.attrs:
        if attr.key in allowed or attr.key not in mapper.columns:
            continue
        history = attr.history
        if attr.key in fill_once and history.has_changes() and all(v is None for v in history.deleted):
            continue  # NULL → a value: the one fill this column allows
        if history.has_changes():
            raise ImmutableRecordError(
                f"{type(target).__name__}.{attr.key} is immutable once stored; create a new version instead"
            )
