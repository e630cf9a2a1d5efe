"""Reading and writing ``.p2pz`` libraries: a zip of ``manifest.json`` and ``tensors.safetensors``.

Import is all-or-nothing (one transaction), idempotent (the repository's content addressing), and defensive:
member names, sizes and compression ratios are checked before anything is read, every field and tensor is
validated (:mod:`.manifest`), and nothing is ever unpickled.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import shutil
import tempfile
import zipfile
from pathlib import Path

from sqlalchemy import select

from p2pz.store import models as m
from p2pz.store import repository as repo
from p2pz.store.files import atomic_write
from p2pz.store.lazy import numpy as np
from p2pz.store.vectors import from_bytes

from p2pz.registry.library.naming import parse_ref
from p2pz.registry.library.records import RegistryError
from .manifest import (FORMAT, FORMAT_VERSION, MAX_MANIFEST_BYTES, MAX_RATIO, MAX_TENSOR_BYTES, MEMBERS, BankEntry,
                       ComponentEntry, DirectionEntry, EmbeddingEntry, EncoderEntry, Manifest, Origin, StudentEntry,
                       MAX_ORIGIN_DEPTH, check_tensors, validate_manifest)


# --- export -------------------------------------------------------------------------------------------

class _Collector:
    """What an export gathers in one read transaction: each direction with what it depends on (its embeddings,
    banks and encoders, or a combination's components, each once) and its students, with their tensors."""

    def __init__(self, session):
        self.s = session
        self.tensors: dict[str, np.ndarray] = {}
        self.encoders: dict[str, EncoderEntry] = {}
        self.banks: dict[int, BankEntry] = {}  # bank row id → entry
        self.embeddings: dict[int, int] = {}  # embedding row id → index
        self.emb_entries: list[EmbeddingEntry] = []
        self.directions: dict[int, int] = {}  # direction row id → index
        self.dir_entries: list[DirectionEntry] = []
        self.student_entries: list[StudentEntry] = []

    def embedding(self, emb: m.Embedding) -> int:
        if emb.id in self.embeddings:
            return self.embeddings[emb.id]
        enc, b = emb.encoder, emb.bank
        self.encoders.setdefault(enc.fingerprint, EncoderEntry(**repo.encoder_facts(enc)))
        if b.id not in self.banks:
            self.banks[b.id] = BankEntry(index=len(self.banks), concept=b.concept, version=b.version,
                                         generator=b.generator, params=b.params, sentences=b.sentences,
                                         sha256=b.sha256, note=b.note, created_at=b.created_at.isoformat())
        i = len(self.emb_entries)
        self.tensors[f"embedding/{i}/mean"] = from_bytes(emb.mean, (1, None, enc.hidden_size))
        self.tensors[f"embedding/{i}/key"] = from_bytes(emb.key, (enc.key_dim,))
        if emb.token_mean is not None:  # the token-aligned mean [D], its stored bytes as they are (format 3)
            self.tensors[f"embedding/{i}/token"] = from_bytes(emb.token_mean, (enc.hidden_size,))
        self.emb_entries.append(EmbeddingEntry(index=i, bank=self.banks[b.id].index, encoder=enc.fingerprint,
                                               key_kind=emb.key_kind, token_word=emb.token_word,
                                               token_count=None if emb.token_word is None else emb.token_count))
        self.embeddings[emb.id] = i
        return i

    def direction(self, row: m.Direction, depth: int = 0) -> int:
        if row.id in self.directions:
            return self.directions[row.id]
        if depth > repo.MAX_NESTING:
            raise RegistryError(f"combination {row.name} is nested too deeply")
        fields = {}
        if row.kind == "pair":
            fields["source"] = self.embedding(self.s.get(m.Embedding, row.source_id))
            fields["target"] = self.embedding(self.s.get(m.Embedding, row.target_id))
        else:
            fields["components"] = [ComponentEntry(direction=self.direction(self.s.get(m.Direction, c["id"]),
                                                                            depth + 1), weight=c["weight"])
                                    for c in row.components]
        i = len(self.dir_entries)
        self.dir_entries.append(DirectionEntry(
            index=i, name=row.name, version=row.version, kind=row.kind, encoder=row.encoder.fingerprint,
            scale=row.scale, tags=row.tags, note=row.note, deprecated=row.deprecated,
            content_sha256=row.content_sha256, created_at=row.created_at.isoformat(),
            origin=Origin.model_validate(row.origin) if row.origin else None, **fields))
        self.tensors[f"direction/{i}/key"] = from_bytes(row.key, (row.encoder.key_dim,))
        self.directions[row.id] = i
        return i

    def students(self, rows: list[m.Direction], weights: bool = True) -> None:
        found = repo.students(self.s, [row.id for row in rows])
        sizes = {} if weights else repo.student_weight_bytes(self.s, [st.id for st in found])
        for st in found:
            if weights:
                blob = bytes(st.weights)
                self.tensors[f"student/{len(self.student_entries)}/weights"] = np.frombuffer(blob, dtype=np.uint8)
            size = len(blob) if weights else sizes[st.id]
            self.student_entries.append(StudentEntry(
                direction=self.directions[st.direction_id], version=st.version, config=st.config,
                weights_bytes=size, weights_sha256=st.weights_sha256, dataset_sha256=st.dataset_sha256,
                params=st.params, metrics=st.metrics, created_at=st.created_at.isoformat(),
                deprecated=bool(st.deprecated)))

    def manifest(self) -> Manifest:
        return Manifest(format=FORMAT, format_version=FORMAT_VERSION,
                        created_at=dt.datetime.now(dt.timezone.utc).isoformat(),
                        encoders=list(self.encoders.values()), banks=list(self.banks.values()),
                        embeddings=self.emb_entries, directions=self.dir_entries, students=self.student_entries)


def collect_library(db, refs: list[str], students: bool = True, weights: bool = True,
                    canonical: bool = False) -> tuple[Manifest, dict[str, np.ndarray]]:
    """``refs`` with their embeddings, banks, encoders and combination components (and their students) → the
    library's manifest and tensors, read in one transaction. ``weights=False`` leaves the students' weights out
    of the tensors (their sizes and sha256 stay in the manifest): what :func:`library_key` needs, without
    reading a student's hundred megabytes. ``canonical``: the directions in (name, version) order, each once,
    however the refs named them (``a,b``, ``b,a`` and ``a,a@1,b`` are one library)."""
    if not refs:
        raise RegistryError("export needs at least one direction name")
    with db.read() as s:
        got = _Collector(s)
        exported = [repo.direction_row(s, *parse_ref(ref, "direction")) for ref in refs]
        if canonical:
            exported = sorted({row.id: row for row in exported}.values(), key=lambda row: (row.name, row.version))
        for row in exported:
            got.direction(row)
        if students:
            got.students(exported, weights)
    return got.manifest(), got.tensors


EXPORT_WRITER = 1  # bump when write_library's bytes change for the same content: cached zips then miss
CHEAP_LOOKUP_REFS = 8  # up to this many refs, a cache lookup runs before (outside) the caller's build slot


def library_key(manifest: Manifest, tensors: dict[str, np.ndarray]) -> str:
    """The content address of a library: sha256 over its manifest without ``created_at`` (the one field that is
    not content) and over every tensor but the students' weights, which the manifest already names by sha256
    and size. Two exports get one key exactly when they hold the same directions with the same metadata
    (tags, note, deprecation, origin), banks, embeddings and students."""
    import hashlib

    h = hashlib.sha256(f"p2pz-export-{EXPORT_WRITER}\n".encode())
    doc = manifest.model_dump(mode="json")
    doc.pop("created_at", None)
    h.update(json.dumps(doc, sort_keys=True, ensure_ascii=False).encode())
    for name in sorted(tensors):
        if name.startswith("student/"):
            continue
        t = np.ascontiguousarray(tensors[name])
        h.update(f"\n{name}:{t.dtype.str}:{list(t.shape)}\n".encode())
        h.update(t.tobytes())
    return h.hexdigest()


def write_library(manifest: Manifest, tensors: dict[str, np.ndarray], path: Path) -> None:
    """The zip itself, written atomically (a reader never sees half a library)."""
    from safetensors.numpy import save as st_save  # numpy: not on the CLI's start-up path

    blob = st_save({k: np.ascontiguousarray(v) for k, v in tensors.items()})

    def write(tmp: Path) -> None:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            zf.writestr("manifest.json", json.dumps(manifest.model_dump(mode="json"), indent=1, ensure_ascii=False))
            # stored, not deflated: float tensors barely compress, and deflating a student's 100 MB took seconds
            zf.writestr("tensors.safetensors", blob, compress_type=zipfile.ZIP_STORED)

    atomic_write(path, writer=write)


def _summary(manifest: Manifest, path: Path) -> dict:
    return {"path": str(path), "directions": len(manifest.directions), "embeddings": len(manifest.embeddings),
            "banks": len(manifest.banks), "students": len(manifest.students), "bytes": path.stat().st_size}


def export_library(db, refs: list[str], path: Path) -> dict:
    """Write ``refs`` (with their embeddings, banks, encoders and combination components) to ``path``."""
    if path.exists() and path.is_dir():
        raise RegistryError(f"{path} is a folder; give a file name such as lib.p2pz")
    manifest, tensors = collect_library(db, refs)
    write_library(manifest, tensors, path)
    return _summary(manifest, path)


def cached_export(db, refs: list[str], root: Path, build=None, keep=None) -> tuple[Path, bool]:
    """The library of ``refs`` from the export cache ``root`` (``<cache>/exports``), built on a miss → (path,
    hit). The key (:func:`library_key`) is computed from the database without the students' weights, so a hit
    costs one small read; a miss collects everything, writes the zip under the key of what it actually read
    (the registry may have changed in between) and leaves eviction to the caller, who should open the file
    first. ``build`` wraps the miss (the server passes its heavy-read slot, so that only misses can be
    refused). The lookup reads every embedding the library holds, so only a few refs (``CHEAP_LOOKUP_REFS``)
    are looked up before ``build``; more are looked up inside it. The key is canonical (the directions sorted,
    each once). ``keep``, called on a miss, says whether the new zip may enter the cache: when it returns False
    the zip goes to a new temporary folder instead (same name), which the caller deletes after use."""
    from p2pz.store import cache as store_cache  # lazy: start-up

    def lookup() -> Path | None:
        key = library_key(*collect_library(db, refs, weights=False, canonical=True))
        path = root / key[:2] / f"{key}.p2pz"
        if path.is_file():
            store_cache.touch(path)
            return path
        return None

    if len(refs) <= CHEAP_LOOKUP_REFS and (found := lookup()) is not None:
        return found, True
    with (build or contextlib.nullcontext)():
        if len(refs) > CHEAP_LOOKUP_REFS and (found := lookup()) is not None:
            return found, True
        manifest, tensors = collect_library(db, refs, canonical=True)
        key = library_key(manifest, tensors)
        path = root / key[:2] / f"{key}.p2pz"
        if not path.is_file():  # another request may have built it meanwhile
            if keep is not None and not keep():
                folder = Path(tempfile.mkdtemp(prefix="p2pz-export-"))
                try:
                    write_library(manifest, tensors, folder / path.name)
                except BaseException:  # a failed build leaves no folder behind
                    shutil.rmtree(folder, ignore_errors=True)
                    raise
                return folder / path.name, False
            write_library(manifest, tensors, path)
    return path, False



# --- import -------------------------------------------------------------------------------------------

def open_archive(path: Path) -> zipfile.ZipFile:
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


def read_member(zf: zipfile.ZipFile, path: Path, name: str, limit: int) -> bytes:
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


def tensor_budget(man: Manifest) -> int:
    """The most bytes ``tensors.safetensors`` can legitimately hold for this manifest (float64 at most, plus
    header): the tensors member is refused above it before it is read."""
    dims = {e.fingerprint: (e.max_length, e.hidden_size, e.key_dim) for e in man.encoders}
    elements = 0
    for e in man.embeddings:
        length, d, k = dims.get(e.encoder, (0, 0, 0))
        elements += length * d + k + (d if e.token_count else 0)
    for r in man.directions:
        elements += dims.get(r.encoder, (0, 0, 0))[2]
    tensors = 3 * len(man.embeddings) + len(man.directions) + len(man.students)
    return 8 * elements + sum(st.weights_bytes for st in man.students) + 256 * tensors + 4096


def read_archive(path: Path) -> tuple[Manifest, dict[str, np.ndarray]]:
    with open_archive(path) as zf:
        blob = read_member(zf, path, "manifest.json", MAX_MANIFEST_BYTES)
        try:
            raw = json.loads(blob.decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError) as exc:
            why = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)[:200]
            raise RegistryError(f"{path}: manifest.json is not valid JSON ({why})") from None
        del blob
        man = validate_manifest(raw)
        data = read_member(zf, path, "tensors.safetensors", min(MAX_TENSOR_BYTES, tensor_budget(man)))
    from safetensors import SafetensorError  # lazy: safetensors
    from safetensors.numpy import load as st_load  # lazy: safetensors

    try:
        tensors = st_load(data)
    except (SafetensorError, ValueError, TypeError, OverflowError) as exc:
        raise RegistryError(f"{path}: tensors.safetensors is not a valid safetensors file ({exc})") from None
    del data
    return man, check_tensors(man, tensors)


def _import_embeddings(s, man, tensors, added: dict) -> tuple[dict, list]:
    """Encoders, banks and embeddings (each found or created) → the embedding rows, in manifest order. A stored
    embedding without a token-aligned mean gains the library's (fill-once: one it has is kept)."""
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
                                             key=tensors[f"embedding/{i}/key"], key_kind=e.key_kind,
                                             token=tensors.get(f"embedding/{i}/token"), token_word=e.token_word,
                                             token_count=e.token_count)
        emb_rows.append(row)
        added["embeddings"] += created
    return enc_ids, emb_rows


def _origin(r: DirectionEntry, source: str | None, revision: str | None) -> dict | None:
    """What a new row records as its origin: where this import read it (``source``, ``revision``), its version
    there, and the origin it carried there (``upstream``, at most :data:`MAX_ORIGIN_DEPTH` hops)."""
    if source is None:
        return r.origin.model_dump() if r.origin else None
    upstream = r.origin.model_dump() if r.origin else None
    node, depth = upstream, 1
    while node is not None:  # forget hops beyond the depth limit
        if depth >= MAX_ORIGIN_DEPTH:
            node["upstream"] = None
        node, depth = node.get("upstream"), depth + 1
    return {"source": source, "revision": revision, "version": r.version, "upstream": upstream}


def _import_directions(s, man, tensors, enc_ids: dict, emb_rows: list, source: str | None = None,
                       revision: str | None = None) -> list:
    """The directions → their records, in manifest order. They go in batches (repo.insert_directions: a few
    statements per batch, not per direction); a combination first flushes the batch, as it links to the rows of
    its components."""
    dir_rows: list = [None] * len(man.directions)
    batch: list[tuple[int, dict]] = []

    def flush() -> None:
        for (i, _), rec in zip(batch, repo.insert_directions(s, [item for _, item in batch])):
            dir_rows[i] = rec
        batch.clear()

    sides = {j: (man.banks[e.bank].concept, man.banks[e.bank].sha256) for j, e in enumerate(man.embeddings)}
    for i, r in enumerate(man.directions):
        item = {"name": r.name, "encoder_id": enc_ids[r.encoder], "key": tensors[f"direction/{i}/key"],
                "tags": r.tags, "note": r.note, "deprecated": bool(r.deprecated), "version": r.version,
                "origin": _origin(r, source, revision)}
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
                    components=[{"id": d.id, "name": d.name, "version": d.version, "weight": w} for d, w in comps])
        dir_rows[i] = repo.insert_directions(s, [item])[0]
    flush()
    return dir_rows


def import_library(db, path: Path, source: str | None = None, renumber: bool = True) -> dict:
    """Read and check a ``.p2pz`` library (:func:`read_archive`), then store it (:func:`store_library`); new
    directions record ``source`` (default: the file's name) as their origin."""
    man, tensors = read_archive(path)
    return {"path": str(path), **store_library(db, man, tensors, source or path.name, renumber=renumber)}


def store_library(db, man: Manifest, tensors: dict, source: str | None = None, revision: str | None = None,
                  renumber: bool = True) -> dict:
    """Store a checked library (:func:`~.manifest.validate`) in one transaction: what exists is found (content
    addressing), the rest is added. Directions keep their version numbers where this registry's name does not
    use them yet; ``renumbered`` lists the others, and a direction whose content is already stored keeps the
    version it has here (identity is the content hash, docs/architecture.md "Sharing"). New directions record
    their origin (``source``, ``revision``, their version there, the origin they carried) → what was added, every
    direction's ref here, and the renumbered ones. With ``renumber`` False (pulls and pushes between registries),
    a version taken here by other content is refused instead and nothing is stored."""
    return store_libraries(db, [(man, tensors)], source, revision, renumber)


def store_libraries(db, libraries: list[tuple[Manifest, dict]], source: str | None = None,
                    revision: str | None = None, renumber: bool = True) -> dict:
    """:func:`store_library` for several checked libraries (a pull in parts) in one transaction."""
    added = {"encoders": 0, "banks": 0, "embeddings": 0, "directions": 0, "students": 0}
    imported, renumbered, listed = [], [], set()
    with db.write() as s:
        for man, tensors in libraries:
            enc_ids, emb_rows = _import_embeddings(s, man, tensors, added)
            dir_rows = _import_directions(s, man, tensors, enc_ids, emb_rows, source, revision)
            added["directions"] += len({rec.id for rec in dir_rows if rec.created})
            for rec in dir_rows:
                if (rec.name, rec.version) not in listed:
                    listed.add((rec.name, rec.version))
                    imported.append(f"{rec.name}@{rec.version}")
            renumbered += [{"name": rec.name, "from": rec.wanted, "to": rec.version,
                            "content_sha256": rec.content_sha256,
                            "reason": "already stored here" if not rec.created else "version taken by other content"}
                           for rec in dir_rows if rec.renumbered]
            for i, st in enumerate(man.students):
                _, created = repo.insert_student(s, direction_id=dir_rows[st.direction].id, config=st.config,
                                                 weights=tensors[f"student/{i}"], weights_sha256=st.weights_sha256,
                                                 dataset_sha256=st.dataset_sha256, params=st.params,
                                                 metrics=st.metrics, deprecated=st.deprecated)
                added["students"] += created
        clash = [r for r in renumbered if r["reason"] != "already stored here"]
        if clash and not renumber:
            c = clash[0]
            here = s.scalar(select(m.Direction.content_sha256).where(m.Direction.name == c["name"],
                                                                      m.Direction.version == c["from"]))
            raise RegistryError(f"{c['name']}@{c['from']} exists here with content {here[:16]}… but "
                                f"{source or 'the library'} has {c['content_sha256'][:16]}…"
                                + (f" ({len(clash) - 1} more clash)" if len(clash) > 1 else "")
                                + "; nothing was imported: pass --renumber to store it as the next free version")
    seen, unique = set(), []
    for r in renumbered:
        if (r["name"], r["from"]) not in seen:
            seen.add((r["name"], r["from"]))
            unique.append(r)
    return {"added": added, "directions": imported, "renumbered": unique}
