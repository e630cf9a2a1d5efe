"""Direction libraries (``.p2pz``) and the official pix2pix-zero ``.pt`` concept embeddings.

A library is a zip with exactly two members:

* ``manifest.json`` — described once, by the pydantic models below (:class:`Manifest`), which are both the
  validator and the documentation of the format;
* ``tensors.safetensors`` — every embedding's mean ``embedding/<i>/mean`` [1, 77, D] and key
  ``embedding/<i>/key`` [D], and every direction's key ``direction/<i>/key`` [D] (float32).

Import is all-or-nothing (one transaction), idempotent (the repository's content addressing), and defensive:
member names, sizes and compression ratios are checked before anything is read, every field and tensor is
validated, and nothing is ever unpickled.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import zipfile
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from generators import BankDraft, bank_sha256
from store import models as m
from store import repository as repo
from store.files import atomic_write
from store.hashing import sha256_json
from store.lazy import numpy as np
from store.vectors import VectorError, from_bytes, to_bytes

from .banks import BankSource, check_bank_concept
from .directions import record_of
from .encoding import EmbeddingSource, encoder_facts, load_encoder, registry_model, store_embedding
from .naming import RefError, check_name, check_tag, direction_name, name_problem, parse_ref
from .records import Direction, RegistryError

FORMAT = "p2pz-library"
FORMAT_VERSION = 1
MEMBERS = ("manifest.json", "tensors.safetensors")
MAX_MANIFEST_BYTES = 256 << 20
MAX_TENSOR_BYTES = 8 << 30
MAX_RATIO = 200  # uncompressed / compressed; above this the archive is treated as a zip bomb
MAX_PT_BYTES = 1 << 30
MAX_PT_ROWS = 100_000  # a raw bank [N, 77, D] of at most this many sentences


# --- the manifest format ------------------------------------------------------------------------------

class _Entry(BaseModel):
    # Strict: no coercion ("1" is not 1, true is not 1), no unknown fields, no NaN or Inf.
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


class EncoderEntry(_Entry):
    """A text encoder, identified by its fingerprint (sha256 over its config and weights)."""

    fingerprint: str = Field(pattern=r"^[0-9a-f]{64}$")
    model: str = Field(description="hub id or folder it was loaded from")
    subfolder: str | None = None
    revision: str | None = None
    architecture: str
    hidden_size: int = Field(gt=0, le=65536, description="D")
    max_length: int = Field(gt=0, le=4096, description="tokens per prompt (77)")
    pad_id: int | None = None


class BankEntry(_Entry):
    """A sentence bank; ``sha256`` must match its sentences (checked on import)."""

    index: int | None = None
    concept: str
    version: int | None = Field(default=None, description="its version in the exporting registry")
    generator: str
    params: dict
    sentences: list[str] = Field(description="empty for banks imported from .pt means")
    sha256: str
    note: str | None = None
    created_at: str | None = None


class EmbeddingEntry(_Entry):
    """A bank's mean embedding under one encoder (tensors ``embedding/<i>/mean`` and ``/key``)."""

    index: int | None = None
    bank: int = Field(description="index into banks")
    encoder: str = Field(description="fingerprint of a listed encoder")
    key_kind: str


class ComponentEntry(_Entry):
    direction: int = Field(description="index of an earlier direction")
    weight: float


class DirectionEntry(_Entry):
    """A direction version: a pair of embeddings (``source``, ``target``, ``scale``) or a combination."""

    index: int | None = None
    name: str
    version: int | None = Field(default=None, description="its version in the exporting registry")
    kind: Literal["pair", "combination"]
    encoder: str
    scale: float
    tags: list[str]
    note: str | None = None
    deprecated: bool | None = False
    content_sha256: str | None = None
    created_at: str | None = None
    source: int | None = Field(default=None, description="index into embeddings (pair)")
    target: int | None = Field(default=None, description="index into embeddings (pair)")
    components: list[ComponentEntry] | None = Field(default=None, description="combination")


class StudentEntry(_Entry):
    """A trained student of a direction (tensor ``student/<i>/weights``: the safetensors file's bytes, uint8)."""

    direction: int = Field(description="index into directions")
    version: int | None = Field(default=None, description="its version in the exporting registry")
    config: dict
    weights_bytes: int = Field(gt=0, le=2 << 30)
    weights_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    dataset_sha256: str
    params: dict
    metrics: dict
    created_at: str | None = None


class Manifest(_Entry):
    """``manifest.json`` of a ``.p2pz`` library."""

    format: Literal["p2pz-library"]
    format_version: Literal[1]
    created_at: str | None = None
    encoders: list[EncoderEntry]
    banks: list[BankEntry]
    embeddings: list[EmbeddingEntry]
    directions: list[DirectionEntry]
    students: list[StudentEntry] = Field(default_factory=list)


# --- export -------------------------------------------------------------------------------------------

def export_library(db, refs: list[str], path: Path) -> dict:
    """Write ``refs`` (with their embeddings, banks, encoders and combination components) to ``path``."""
    if not refs:
        raise RegistryError("export needs at least one direction name")
    if path.exists() and path.is_dir():
        raise RegistryError(f"{path} is a folder; give a file name such as lib.p2pz")
    tensors: dict[str, np.ndarray] = {}
    encoders: dict[str, EncoderEntry] = {}
    banks: dict[int, BankEntry] = {}
    embeddings: dict[int, int] = {}  # embedding row id → index
    emb_entries: list[EmbeddingEntry] = []
    directions: dict[int, int] = {}  # direction row id → index
    dir_entries: list[DirectionEntry] = []
    with db.read() as s:
        def add_embedding(emb: m.Embedding) -> int:
            if emb.id in embeddings:
                return embeddings[emb.id]
            enc, b = emb.encoder, emb.bank
            encoders.setdefault(enc.fingerprint, EncoderEntry(**repo.encoder_facts(enc)))
            if b.id not in banks:
                banks[b.id] = BankEntry(index=len(banks), concept=b.concept, version=b.version,
                                        generator=b.generator, params=b.params, sentences=b.sentences,
                                        sha256=b.sha256, note=b.note, created_at=b.created_at.isoformat())
            i = len(emb_entries)
            tensors[f"embedding/{i}/mean"] = from_bytes(emb.mean, (1, None, enc.hidden_size))
            tensors[f"embedding/{i}/key"] = from_bytes(emb.key, (enc.hidden_size,))
            emb_entries.append(EmbeddingEntry(index=i, bank=banks[b.id].index, encoder=enc.fingerprint,
                                              key_kind=emb.key_kind))
            embeddings[emb.id] = i
            return i

        def add_direction(row: m.Direction, depth: int = 0) -> int:
            if row.id in directions:
                return directions[row.id]
            if depth > repo.MAX_NESTING:
                raise RegistryError(f"combination {row.name} is nested too deeply")
            fields = {}
            if row.kind == "pair":
                fields["source"] = add_embedding(s.get(m.Embedding, row.source_id))
                fields["target"] = add_embedding(s.get(m.Embedding, row.target_id))
            else:
                fields["components"] = [
                    ComponentEntry(direction=add_direction(s.get(m.Direction, c["id"]), depth + 1), weight=c["weight"])
                    for c in row.components]
            i = len(dir_entries)
            dir_entries.append(DirectionEntry(
                index=i, name=row.name, version=row.version, kind=row.kind, encoder=row.encoder.fingerprint,
                scale=row.scale, tags=row.tags, note=row.note, deprecated=row.deprecated,
                content_sha256=row.content_sha256, created_at=row.created_at.isoformat(), **fields))
            tensors[f"direction/{i}/key"] = from_bytes(row.key, (row.encoder.hidden_size,))
            directions[row.id] = i
            return i

        exported = [repo.direction_row(s, *parse_ref(ref, "direction")) for ref in refs]
        for row in exported:
            add_direction(row)
        student_entries = []
        for st in repo.students(s, [row.id for row in exported]):
            weights = bytes(st.weights)
            tensors[f"student/{len(student_entries)}/weights"] = np.frombuffer(weights, dtype=np.uint8)
            student_entries.append(StudentEntry(
                direction=directions[st.direction_id], version=st.version, config=st.config,
                weights_bytes=len(weights), weights_sha256=st.weights_sha256, dataset_sha256=st.dataset_sha256,
                params=st.params, metrics=st.metrics, created_at=st.created_at.isoformat()))

    manifest = Manifest(format=FORMAT, format_version=FORMAT_VERSION,
                        created_at=dt.datetime.now(dt.timezone.utc).isoformat(), encoders=list(encoders.values()),
                        banks=list(banks.values()), embeddings=emb_entries, directions=dir_entries,
                        students=student_entries)
    from safetensors.numpy import save as st_save

    blob = st_save({k: np.ascontiguousarray(v) for k, v in tensors.items()})

    def write(tmp: Path) -> None:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            zf.writestr("manifest.json", json.dumps(manifest.model_dump(mode="json"), indent=1, ensure_ascii=False))
            zf.writestr("tensors.safetensors", blob)

    atomic_write(path, writer=write)
    return {"path": str(path), "directions": len(dir_entries), "embeddings": len(emb_entries), "banks": len(banks),
            "students": len(student_entries), "bytes": path.stat().st_size}


# --- import -------------------------------------------------------------------------------------------

def _open_archive(path: Path) -> zipfile.ZipFile:
    """The library's zip with exactly the two expected members, safe names, no encryption."""
    if not path.is_file():
        raise RegistryError(f"library file {str(path)!r} does not exist")
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, ValueError, RuntimeError, EOFError) as exc:
        raise RegistryError(f"{path} is not a p2pz library (not a zip archive: {exc})") from None
    infos = zf.infolist()
    for info in infos:
        name = info.filename
        if name.startswith(("/", "\\")) or ".." in Path(name).parts or ":" in name or "\\" in name:
            zf.close()
            raise RegistryError(f"{path} holds a member with an unsafe path ({name!r}); refusing to import it")
    names = sorted(i.filename for i in infos)
    if names != sorted(MEMBERS):
        zf.close()
        raise RegistryError(f"{path} is not a p2pz library: expected members {list(MEMBERS)}, found {names[:10]}")
    for info in infos:
        if info.flag_bits & 0x1:
            zf.close()
            raise RegistryError(f"{path}: member {info.filename} is encrypted; a p2pz library never is")
    return zf


def _read_member(zf: zipfile.ZipFile, path: Path, name: str, limit: int) -> bytes:
    """One member, refused from its declared size and compression ratio before a byte is expanded, and read
    with a hard cap in case the declaration lies."""
    info = zf.getinfo(name)
    if info.file_size > limit:
        raise RegistryError(f"{path}: member {name} is too large ({info.file_size} bytes; at most {limit} expected)")
    if info.compress_size and info.file_size / info.compress_size > MAX_RATIO and info.file_size > 1 << 20:
        raise RegistryError(f"{path}: member {name} expands {info.file_size // info.compress_size}× (a zip bomb?); "
                            "refusing to import it")
    try:
        with zf.open(info) as f:
            blob = f.read(limit + 1)
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, NotImplementedError, RuntimeError) as exc:
        raise RegistryError(f"{path}: member {name} cannot be read ({exc})") from None
    if len(blob) > limit:
        raise RegistryError(f"{path}: member {name} is larger than it claims")
    return blob


def _tensor_budget(man: Manifest) -> int:
    """The most bytes ``tensors.safetensors`` can legitimately hold for this manifest (float64 at most, plus
    header): the tensors member is refused above it before it is read."""
    dims = {e.fingerprint: (e.max_length, e.hidden_size) for e in man.encoders}
    elements = 0
    for e in man.embeddings:
        length, d = dims.get(e.encoder, (0, 0))
        elements += length * d + d
    for r in man.directions:
        elements += dims.get(r.encoder, (0, 0))[1]
    tensors = 2 * len(man.embeddings) + len(man.directions) + len(man.students)
    return 8 * elements + sum(st.weights_bytes for st in man.students) + 256 * tensors + 4096


def _read_archive(path: Path) -> tuple[Manifest, dict[str, np.ndarray]]:
    with _open_archive(path) as zf:
        blob = _read_member(zf, path, "manifest.json", MAX_MANIFEST_BYTES)
        try:
            raw = json.loads(blob.decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError) as exc:
            why = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)[:200]
            raise RegistryError(f"{path}: manifest.json is not valid JSON ({why})") from None
        del blob
        man = validate_manifest(raw)
        data = _read_member(zf, path, "tensors.safetensors", min(MAX_TENSOR_BYTES, _tensor_budget(man)))
    from safetensors import SafetensorError
    from safetensors.numpy import load as st_load

    try:
        tensors = st_load(data)
    except (SafetensorError, ValueError, TypeError, OverflowError) as exc:
        raise RegistryError(f"{path}: tensors.safetensors is not a valid safetensors file ({exc})") from None
    del data
    return man, check_tensors(man, tensors)


def _invalid(msg: str) -> RegistryError:
    return RegistryError(f"invalid library: {msg}")


def _where(loc) -> str:
    """A pydantic error location as a path: ('directions', 0, 'scale') → directions[0].scale."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "manifest"


def _explain(exc: ValidationError) -> RegistryError:
    """The first problem pydantic found, as one line in the library's own terms."""
    err = exc.errors()[0]
    loc = tuple(err["loc"])
    if err["type"] == "missing":
        return _invalid(f"{_where(loc[:-1])} lacks the field {loc[-1]!r}")
    if err["type"] == "extra_forbidden":
        return _invalid(f"{_where(loc[:-1])} has unknown field(s) [{loc[-1]!r}]")
    if err["type"].endswith("_type") or err["type"] in ("model_type", "list_type", "dict_type"):
        return _invalid(f"{_where(loc)} has the wrong type ({type(err.get('input')).__name__})")
    return _invalid(f"{_where(loc)}: {err['msg']}")


def _check(cond: bool, msg: str) -> None:
    if not cond:
        raise _invalid(msg)


def _tensor(tensors: dict, name: str, shape: tuple) -> np.ndarray:
    _check(name in tensors, f"tensor {name!r} is missing")
    try:
        return from_bytes(to_bytes(tensors[name]), shape).astype(np.float32)
    except VectorError as exc:
        raise _invalid(f"tensor {name}: {exc}") from None


def validate_manifest(raw) -> Manifest:
    """Parse a manifest and check everything in it that needs no tensor: types, cross-references, bank hashes,
    and each direction's ``content_sha256`` against what it is made of (a changed scale, weight or bank is
    tampering, not a new direction)."""
    _check(isinstance(raw, dict), "the manifest must be a JSON object")
    _check(raw.get("format") == FORMAT, f"format is {raw.get('format')!r}, expected {FORMAT!r}")
    _check(raw.get("format_version") == FORMAT_VERSION,
           f"format_version {raw.get('format_version')!r} is not supported (this p2pz reads {FORMAT_VERSION})")
    try:
        man = Manifest.model_validate(raw)
    except ValidationError as exc:
        raise _explain(exc) from None
    except RecursionError:
        raise _invalid("the manifest is nested too deeply") from None
    _check(bool(man.directions), "it holds no directions")
    encoders = {}
    for e in man.encoders:
        _check(e.fingerprint not in encoders, f"encoder {e.fingerprint[:12]} is listed twice")
        encoders[e.fingerprint] = e
    for i, b in enumerate(man.banks):
        problem = name_problem(b.concept, "bank")
        _check(problem is None, f"banks[{i}]: {problem}")
        if b.sentences:
            _check(bank_sha256(b.sentences) == b.sha256, f"banks[{i}]: sha256 does not match its sentences (tampered?)")
    for i, e in enumerate(man.embeddings):
        _check(0 <= e.bank < len(man.banks), f"embeddings[{i}].bank points nowhere")
        _check(e.encoder in encoders, f"embeddings[{i}] uses encoder {e.encoder[:12]}, which the library does not declare")
    contents: list[str] = []  # each direction's recomputed content hash, for the combinations after it
    for i, r in enumerate(man.directions):
        where = f"directions[{i}]"
        _check("@" not in r.name, f"{where}.name must not carry a version")
        problem = name_problem(r.name, "direction")
        _check(problem is None, f"{where}: {problem}")
        for t in r.tags:
            try:
                check_tag(t)
            except RefError as exc:
                raise _invalid(f"{where}: {exc}") from None
        _check(r.encoder in encoders, f"{where} uses encoder {r.encoder[:12]}, which the library does not declare")
        if r.kind == "pair":
            sides = []
            for side in ("source", "target"):
                j = getattr(r, side)
                _check(j is not None, f"{where} lacks the field {side!r}")
                _check(0 <= j < len(man.embeddings), f"{where}.{side} points nowhere")
                _check(man.embeddings[j].encoder == r.encoder,
                       f"{where} claims encoder {r.encoder[:12]} but its {side} embedding was made with "
                       f"{man.embeddings[j].encoder[:12]}")
                bank = man.banks[man.embeddings[j].bank]
                sides.append((bank.concept, bank.sha256))
            content = repo.direction_content("pair", r.encoder, source=sides[0], target=sides[1], scale=r.scale)
        else:
            _check(bool(r.components), f"{where}.components is empty")
            for c in r.components:
                _check(0 <= c.direction < i, f"{where}.components must point to earlier directions")
                _check(man.directions[c.direction].encoder == r.encoder,
                       f"{where} mixes encoders {r.encoder[:12]} and {man.directions[c.direction].encoder[:12]}")
            content = repo.direction_content("combination", r.encoder,
                                             components=[(contents[c.direction], c.weight) for c in r.components])
        contents.append(sha256_json(content))
        if r.content_sha256 is not None:
            _check(r.content_sha256 == contents[-1], f"{where} ({r.name}): content_sha256 does not match what the "
                   "direction is made of (its scale, weights or banks were changed: tampered?)")
    return man


def _student_weights(man: Manifest, tensors: dict, i: int) -> bytes:
    """A student's weights: exactly the declared bytes, their sha256, and a safetensors file of float tensors."""
    from safetensors import SafetensorError
    from safetensors.numpy import load as st_load

    st = man.students[i]
    name = f"student/{i}/weights"
    _check(name in tensors, f"tensor {name!r} is missing")
    arr = tensors[name]
    _check(arr.dtype == np.uint8 and arr.ndim == 1 and arr.size == st.weights_bytes,
           f"students[{i}] weights are not the declared {st.weights_bytes} bytes")
    blob = arr.tobytes()
    _check(hashlib.sha256(blob).hexdigest() == st.weights_sha256,
           f"students[{i}]: weights_sha256 does not match its weights (tampered?)")
    try:
        inner = st_load(blob)
    except (SafetensorError, ValueError, TypeError, OverflowError):
        raise _invalid(f"students[{i}] weights are not a safetensors file") from None
    _check(bool(inner) and all(v.dtype.kind == "f" for v in inner.values()),
           f"students[{i}] weights must be floating-point tensors")
    return blob


def check_tensors(man: Manifest, tensors: dict) -> dict[str, np.ndarray]:
    """Every tensor the manifest needs, with its exact shape, finite, as float32."""
    encoders = {e.fingerprint: e for e in man.encoders}
    checked: dict[str, np.ndarray] = {}
    for i, e in enumerate(man.embeddings):
        enc = encoders[e.encoder]
        checked[f"embedding/{i}/mean"] = _tensor(tensors, f"embedding/{i}/mean", (1, enc.max_length, enc.hidden_size))
        checked[f"embedding/{i}/key"] = _tensor(tensors, f"embedding/{i}/key", (enc.hidden_size,))
    for i, r in enumerate(man.directions):
        checked[f"direction/{i}/key"] = _tensor(tensors, f"direction/{i}/key", (encoders[r.encoder].hidden_size,))
    for i, st in enumerate(man.students):
        _check(0 <= st.direction < len(man.directions), f"students[{i}].direction points nowhere")
        checked[f"student/{i}"] = _student_weights(man, tensors, i)
    return checked


def validate(raw, tensors: dict) -> tuple[Manifest, dict[str, np.ndarray]]:
    """Parse and cross-check a manifest and its tensors → (manifest, tensors as float32, shapes checked)."""
    man = validate_manifest(raw)
    return man, check_tensors(man, tensors)


def import_library(db, path: Path) -> dict:
    man, tensors = _read_archive(path)
    added = {"encoders": 0, "banks": 0, "embeddings": 0, "directions": 0, "students": 0}
    imported = []
    with db.write() as s:
        enc_ids = {}
        for e in man.encoders:
            row, created = repo.encoder_row(s, e.model_dump())
            enc_ids[e.fingerprint] = row.id
            added["encoders"] += created
        bank_rows = []
        for b in man.banks:
            row, created = repo.insert_bank(s, concept=b.concept, sha256=b.sha256, generator=b.generator,
                                            params=b.params, sentences=list(b.sentences), note=b.note)
            bank_rows.append(row)
            added["banks"] += created
        emb_rows = []
        for i, e in enumerate(man.embeddings):
            row, created = repo.insert_embedding(s, bank_id=bank_rows[e.bank].id, encoder_id=enc_ids[e.encoder],
                                                 mean=tensors[f"embedding/{i}/mean"],
                                                 key=tensors[f"embedding/{i}/key"], key_kind=e.key_kind)
            emb_rows.append(row)
            added["embeddings"] += created
        # Directions go in batches (repo.insert_directions: a few statements per batch, not per direction); a
        # combination first flushes the batch, as it links to the rows of its components.
        dir_rows: list = [None] * len(man.directions)
        batch: list[tuple[int, dict]] = []

        def flush() -> None:
            for (i, _), rec in zip(batch, repo.insert_directions(s, [item for _, item in batch])):
                dir_rows[i] = rec
            batch.clear()

        sides = {}  # embedding index → (concept, bank sha256)
        for j, e in enumerate(man.embeddings):
            sides[j] = (man.banks[e.bank].concept, man.banks[e.bank].sha256)
        for i, r in enumerate(man.directions):
            item = {"name": r.name, "encoder_id": enc_ids[r.encoder], "key": tensors[f"direction/{i}/key"],
                    "tags": r.tags, "note": r.note, "deprecated": bool(r.deprecated)}
            if r.kind == "pair":
                item.update(content=repo.direction_content("pair", r.encoder, source=sides[r.source],
                                                           target=sides[r.target], scale=r.scale),
                            source_id=emb_rows[r.source].id, target_id=emb_rows[r.target].id, scale=r.scale)
                batch.append((i, item))
                continue
            flush()
            comps = [(dir_rows[c.direction], c.weight) for c in r.components]
            item.update(content=repo.direction_content("combination", r.encoder,
                                                       components=[(d.content_sha256, w) for d, w in comps]),
                        components=[{"id": d.id, "name": d.name, "version": d.version, "weight": w}
                                    for d, w in comps])
            dir_rows[i] = repo.insert_directions(s, [item])[0]
        flush()
        added["directions"] = len({rec.id for rec in dir_rows if rec.created})
        imported = [f"{rec.name}@{rec.version}" for rec in dir_rows]
        for i, st in enumerate(man.students):
            _, created = repo.insert_student(s, direction_id=dir_rows[st.direction].id, config=st.config,
                                             weights=tensors[f"student/{i}"], weights_sha256=st.weights_sha256,
                                             dataset_sha256=st.dataset_sha256, params=st.params, metrics=st.metrics)
            added["students"] += created
    return {"path": str(path), "added": added, "directions": imported}


# --- official .pt embeddings --------------------------------------------------------------------------

def load_pt_embedding(path: Path, hidden_size: int) -> np.ndarray:
    """Read an official pix2pix-zero concept embedding: a tensor [1, 77, D] (or a raw bank [N, 77, D],
    averaged), loaded with ``torch.load(weights_only=True)`` only — a pickled object is refused."""
    import torch

    if not path.is_file():
        raise RegistryError(f"embedding file {str(path)!r} does not exist")
    if path.stat().st_size > MAX_PT_BYTES:
        raise RegistryError(f"{path} is larger than {MAX_PT_BYTES >> 20} MiB; not a concept embedding")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a hostile-input boundary: any failure to parse is the file's fault (struct.error, …)
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise RegistryError(f"{path} is not a plain tensor file (torch.load with weights_only=True refused it: "
                            f"{first})") from None
    if isinstance(obj, dict) and len(obj) == 1:
        obj = next(iter(obj.values()))
    if not isinstance(obj, torch.Tensor):
        raise RegistryError(f"{path} holds a {type(obj).__name__}, not a tensor [1, 77, D]")
    if obj.dim() != 3 or obj.shape[1] != 77 or obj.shape[0] < 1:
        raise RegistryError(f"{path} holds a tensor of shape {tuple(obj.shape)}; expected [1, 77, D] or [N, 77, D]")
    if obj.shape[0] > MAX_PT_ROWS:
        raise RegistryError(f"{path} holds {obj.shape[0]} rows; a concept embedding has 1 (a raw bank at most "
                            f"{MAX_PT_ROWS})")
    nbytes = obj.numel() * obj.element_size()
    if not obj.is_contiguous() or nbytes > path.stat().st_size:
        # an expanded (stride-0) or strided view claims more data than the file holds: refuse before any copy
        raise RegistryError(f"{path} holds a tensor view of {nbytes} bytes over a smaller storage (a {path.stat().st_size}"
                            "-byte file); save a plain contiguous tensor")
    if obj.shape[2] != hidden_size:
        raise RegistryError(f"{path} has width D={obj.shape[2]} but the model's text encoder has D={hidden_size}; "
                            "pass the --model these embeddings were made with")
    if not obj.is_floating_point():
        raise RegistryError(f"{path} holds a {obj.dtype} tensor; expected floating point")
    arr = obj.to(torch.float64).mean(0, keepdim=True).to(torch.float32).numpy()
    if not np.isfinite(arr).all():
        raise RegistryError(f"{path} contains NaN or Inf")
    return arr


def _pt_side(path: Path, hidden_size: int) -> EmbeddingSource:
    arr = load_pt_embedding(path, hidden_size)  # [1, 77, D]
    concept = check_bank_concept(path.stem)  # a proper extension split: "text.pt" → "text" (the reference's strip() bug)
    params = {"file": path.name, "file_sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
              "sentences": "unknown (imported mean embedding)"}
    bank = BankSource(concept=concept, sha256=hashlib.sha256(b"pt:" + arr.tobytes()).hexdigest(),
                      generator="import-pt", draft=BankDraft(sentences=[], params=params))
    key = arr[0, 1:].mean(0).astype(np.float32)  # no sentences, so no pooled key: mean over token rows 1..76 [D]
    return EmbeddingSource(bank=bank, mean=arr, key=key, key_kind="token-mean")


def import_pt(db, source: Path, target: Path, name: str | None, model: str | None) -> Direction:
    """A direction from two official per-concept ``.pt`` means, tied to ``model``'s text encoder."""
    enc = load_encoder(registry_model(db, model))
    src, tgt = _pt_side(source, enc.hidden_size), _pt_side(target, enc.hidden_size)
    name = check_name(name or direction_name(src.bank.concept, tgt.bank.concept), "direction")
    content = repo.direction_content("pair", enc.fingerprint, source=(src.bank.concept, src.bank.sha256),
                                     target=(tgt.bank.concept, tgt.bank.sha256), scale=1.0)
    with db.write() as s:
        enc_row, _ = repo.encoder_row(s, encoder_facts(enc))
        se = store_embedding(s, src, enc_row.id)
        te = store_embedding(s, tgt, enc_row.id)
        row, _ = repo.insert_direction(s, name=name, content=content, encoder_id=enc_row.id, key=tgt.key - src.key,
                                       source_id=se.id, target_id=te.id,
                                       note=f"imported from {source.name} and {target.name}")
        return record_of(db, s, row)
