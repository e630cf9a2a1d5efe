"""``p2pz db check``: records whose stored tensors disagree with their encoder, and their removal.

Every stored tensor's shape follows from its encoder row (:func:`.encoders.tensor_shape`): a search key has the
encoder's key width, an embedding's mean is [1, max_length, D]. Before imports compared every encoder field
(:func:`.encoders.encoder_row`), a library could state a known encoder with another ``key_size`` or
``max_length`` and land records of those sizes, after which search, export and edits failed for the whole encoder.
The encoder row is the reference here: it is written once, by the first record of its fingerprint, and never
changes, so the records that disagree with it are the ones a re-declaring import brought in.

A direction is broken when its key has the wrong shape (or is missing or unreadable), when a pair's embedding is
broken or belongs to another encoder, or when a combination uses a broken direction; an embedding when its mean
or key has the wrong shape. :func:`repair` removes exactly those, with the students and evaluations of the
removed directions, and keeps every bank (its sentences are checked by their hash; re-encoding them makes a good
embedding again).
"""

from __future__ import annotations

import json
import struct
from dataclasses import asdict, dataclass

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from p2pz.store import models as m
from p2pz.store.vectors import VectorError, from_bytes

from .core import bump_generation
from .encoders import tensor_shape

HEADER_BYTES = 4096  # a one-tensor safetensors header is ~100 bytes; the blob's first bytes are all a check reads


@dataclass
class Problem:
    """One broken record: ``kind`` "direction" or "embedding", its row ``id``, how it is named (``ref``: a
    direction's name@version, an embedding's bank concept@version), its encoder's fingerprint and ``why``."""

    kind: str
    id: int
    ref: str
    encoder: str
    why: str

    def as_dict(self) -> dict:
        return asdict(self)


def _blob_shape(prefix: bytes) -> tuple[int, ...] | None:
    """The shape of the one tensor of a safetensors vector blob, from its header alone (None: unreadable)."""
    try:
        (n,) = struct.unpack("<Q", bytes(prefix[:8]))
        header = json.loads(bytes(prefix[8:8 + n]).decode("utf-8"))
        return tuple(int(x) for x in header["v"]["shape"])
    except (struct.error, ValueError, KeyError, TypeError, UnicodeDecodeError):
        return None


def find_problems(s: Session) -> list[Problem]:
    """Every embedding and direction whose stored tensors disagree with their encoder (see the module), in row
    order. Reads each embedding's header only (not its [1, 77, D] mean) and each direction's key."""
    encs = {e.id: e for e in s.scalars(select(m.Encoder))}
    problems: list[Problem] = []
    bad_emb: dict[int, str] = {}
    emb_encoder: dict[int, int] = {}
    rows = s.execute(select(m.Embedding.id, m.Embedding.encoder_id, m.Bank.concept, m.Bank.version,
                            func.substr(m.Embedding.mean, 1, HEADER_BYTES), m.Embedding.key)
                     .join(m.Bank, m.Bank.id == m.Embedding.bank_id).order_by(m.Embedding.id))
    for eid, enc_id, concept, version, mean_head, key in rows:
        enc = encs[enc_id]
        emb_encoder[eid] = enc_id
        whys = []
        for kind, shape in (("mean", _blob_shape(mean_head)), ("key", _blob_shape(key))):
            want = tensor_shape(enc, kind)
            if shape is None:
                whys.append(f"its {kind} is not a readable vector")
            elif shape != want:
                whys.append(f"its {kind} has shape {list(shape)}, encoder makes {list(want)}")
        if whys:
            bad_emb[eid] = f"bank {concept}@{version}"
            problems.append(Problem("embedding", eid, f"{concept}@{version}", enc.fingerprint, "; ".join(whys)))
    bad_dir: set[int] = set()
    rows = s.execute(select(m.Direction.id, m.Direction.name, m.Direction.version, m.Direction.kind,
                            m.Direction.encoder_id, m.Direction.source_id, m.Direction.target_id,
                            m.Direction.components, m.DirectionKey.key)
                     .outerjoin(m.DirectionKey, m.DirectionKey.direction_id == m.Direction.id)
                     .order_by(m.Direction.id))
    found = []
    for rid, name, version, kind, enc_id, src, tgt, comps, key in rows:
        enc = encs[enc_id]
        whys = []
        want, shape = tensor_shape(enc, "key"), _blob_shape(key) if key is not None else None
        if key is None:
            whys.append("it has no search key")
        elif shape is not None and shape != want:
            whys.append(f"its key has shape {list(shape)}, encoder makes {list(want)}")
        else:
            try:
                from_bytes(key, want)
            except VectorError as exc:
                whys.append(f"its key: {exc}")
        if kind == "pair":
            for side, eid in (("source", src), ("target", tgt)):
                if eid in bad_emb:
                    whys.append(f"its {side} embedding ({bad_emb[eid]}) is broken")
                elif eid is not None and emb_encoder.get(eid) != enc_id:
                    whys.append(f"its {side} embedding belongs to another encoder")
        found.append([rid, f"{name}@{version}", enc.fingerprint, whys, [c["id"] for c in comps or ()]])
    changed = True
    while changed:  # a combination of a broken direction is broken (components may be nested)
        changed = False
        for entry in found:
            rid, ref, _, whys, comp_ids = entry
            if rid in bad_dir:
                continue
            broken = [c for c in comp_ids if c in bad_dir]
            if broken and not whys:
                whys.append(f"it combines {len(broken)} broken direction(s)")
            if whys:
                bad_dir.add(rid)
                changed = True
    problems += [Problem("direction", rid, ref, fp, "; ".join(whys)) for rid, ref, fp, whys, _ in found if whys]
    return problems


def repair(s: Session, problems: list[Problem]) -> dict:
    """Remove the broken records ``problems`` names (:func:`find_problems`, in the same transaction): the
    directions with their keys, students and evaluations, then the embeddings → counts of what was removed."""
    dirs = [p.id for p in problems if p.kind == "direction"]
    embs = [p.id for p in problems if p.kind == "embedding"]
    out = {"directions": len(dirs), "embeddings": len(embs), "students": 0, "evaluations": 0}
    for start in range(0, len(dirs), 500):
        chunk = dirs[start:start + 500]
        out["evaluations"] += s.execute(delete(m.Evaluation).where(m.Evaluation.direction_id.in_(chunk))).rowcount
        out["students"] += s.execute(delete(m.Student).where(m.Student.direction_id.in_(chunk))).rowcount
        s.execute(delete(m.DirectionKey).where(m.DirectionKey.direction_id.in_(chunk)))
        s.execute(delete(m.Direction).where(m.Direction.id.in_(chunk)))
    for start in range(0, len(embs), 500):
        s.execute(delete(m.Embedding).where(m.Embedding.id.in_(embs[start:start + 500])))
    if dirs or embs:
        bump_generation(s)  # the search indexes rebuild without the removed keys
    return out
