"""Direction libraries (``.p2pz``) and the official pix2pix-zero ``.pt`` embeddings.

A library is a zip with exactly two members:

* ``manifest.json`` — format/version, encoders, banks (with their sentences and generator parameters),
  embeddings, directions (pair or combination) with tags, notes and content hashes;
* ``tensors.safetensors`` — every embedding's mean [1, 77, D] and key [D], and every direction's key [D].

Import is all-or-nothing (one transaction), idempotent (content addressing), and defensive: member names,
sizes and compression ratios are checked before anything is read, every field and tensor is validated, and
nothing is ever unpickled.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import tempfile
import zipfile
from pathlib import Path

from store.lazy import numpy as np
from sqlalchemy import select

from generators import bank_sha256
from store import models as m
from store.vectors import VectorError, from_bytes, to_bytes

FORMAT = "p2pz-library"
FORMAT_VERSION = 1
MEMBERS = ("manifest.json", "tensors.safetensors")
MAX_MANIFEST_BYTES = 256 << 20
MAX_TENSOR_BYTES = 8 << 30
MAX_RATIO = 200  # uncompressed / compressed; above this the archive is treated as a zip bomb
MAX_PT_BYTES = 1 << 30


def _error(msg: str):
    from .api import RegistryError

    return RegistryError(msg)


# --- export -----------------------------------------------------------------------------------------

def export_library(reg, refs: list[str], path: Path) -> dict:
    if not refs:
        raise _error("export needs at least one direction name")
    if path.exists() and path.is_dir():
        raise _error(f"{path} is a folder; give a file name such as lib.p2pz")
    tensors: dict[str, np.ndarray] = {}
    encoders, banks, embeddings, directions = {}, {}, {}, {}
    with reg._read() as s:
        def add_embedding(emb: m.Embedding) -> int:
            if emb.id in embeddings:
                return embeddings[emb.id]["index"]
            enc = emb.encoder
            encoders.setdefault(enc.fingerprint, {
                "fingerprint": enc.fingerprint, "model": enc.model, "subfolder": enc.subfolder,
                "revision": enc.revision, "architecture": enc.architecture, "hidden_size": enc.hidden_size,
                "max_length": enc.max_length, "pad_id": enc.pad_id})
            b = emb.bank
            if b.id not in banks:
                banks[b.id] = {"index": len(banks), "concept": b.concept, "version": b.version,
                               "generator": b.generator, "params": b.params, "sentences": b.sentences,
                               "sha256": b.sha256, "note": b.note, "created_at": b.created_at.isoformat()}
            i = len(embeddings)
            tensors[f"embedding/{i}/mean"] = from_bytes(emb.mean, (1, None, enc.hidden_size))
            tensors[f"embedding/{i}/key"] = from_bytes(emb.key, (enc.hidden_size,))
            embeddings[emb.id] = {"index": i, "bank": banks[b.id]["index"], "encoder": enc.fingerprint,
                                  "key_kind": emb.key_kind}
            return i

        def add_direction(row: m.Direction, depth: int = 0) -> int:
            if row.id in directions:
                return directions[row.id]["index"]
            if depth > 32:
                raise _error(f"combination {row.name} is nested too deeply")
            entry = {"name": row.name, "version": row.version, "kind": row.kind,
                     "encoder": row.encoder.fingerprint, "scale": row.scale, "tags": row.tags, "note": row.note,
                     "deprecated": row.deprecated, "content_sha256": row.content_sha256,
                     "created_at": row.created_at.isoformat()}
            if row.kind == "pair":
                entry["source"] = add_embedding(s.get(m.Embedding, row.source_id))
                entry["target"] = add_embedding(s.get(m.Embedding, row.target_id))
            elif row.kind == "combination":
                entry["components"] = [
                    {"direction": add_direction(s.get(m.Direction, c["id"]), depth + 1), "weight": c["weight"]}
                    for c in row.components]
            else:
                raise _error(f"direction {row.name}@{row.version} of kind {row.kind!r} cannot be exported")
            i = len(directions)
            entry["index"] = i
            tensors[f"direction/{i}/key"] = from_bytes(row.key, (row.encoder.hidden_size,))
            directions[row.id] = entry
            return i

        for ref in refs:
            name, version = reg._parse(ref, "direction")
            add_direction(reg._direction_row(s, name, version))

    manifest = {
        "format": FORMAT, "format_version": FORMAT_VERSION,
        "created_at": dt.datetime.now(dt.timezone.utc).isoformat(),
        "encoders": list(encoders.values()),
        "banks": sorted(banks.values(), key=lambda b: b["index"]),
        "embeddings": sorted(embeddings.values(), key=lambda e: e["index"]),
        "directions": sorted(directions.values(), key=lambda d: d["index"]),
    }
    from safetensors.numpy import save as st_save

    blob = st_save({k: np.ascontiguousarray(v) for k, v in tensors.items()})
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".p2pz.tmp")
    os.close(fd)
    try:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            zf.writestr("manifest.json", json.dumps(manifest, indent=1, ensure_ascii=False))
            zf.writestr("tensors.safetensors", blob)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return {"path": str(path), "directions": len(directions), "embeddings": len(embeddings), "banks": len(banks),
            "bytes": path.stat().st_size}


# --- import -----------------------------------------------------------------------------------------

def _read_archive(path: Path) -> tuple[dict, dict[str, np.ndarray]]:
    if not path.is_file():
        raise _error(f"library file {str(path)!r} does not exist")
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise _error(f"{path} is not a p2pz library (not a zip archive: {exc})") from None
    with zf:
        infos = zf.infolist()
        for info in infos:
            name = info.filename
            if name.startswith(("/", "\\")) or ".." in Path(name).parts or ":" in name or "\\" in name:
                raise _error(f"{path} holds a member with an unsafe path ({name!r}); refusing to import it")
        names = sorted(i.filename for i in infos)
        if names != sorted(MEMBERS):
            raise _error(f"{path} is not a p2pz library: expected members {list(MEMBERS)}, found {names[:10]}")
        data = {}
        for info in infos:
            limit = MAX_MANIFEST_BYTES if info.filename == "manifest.json" else MAX_TENSOR_BYTES
            if info.file_size > limit:
                raise _error(f"{path}: member {info.filename} is too large ({info.file_size} bytes)")
            if info.compress_size and info.file_size / info.compress_size > MAX_RATIO and info.file_size > 1 << 20:
                raise _error(f"{path}: member {info.filename} expands {info.file_size // info.compress_size}× "
                             "(a zip bomb?); refusing to import it")
            try:
                with zf.open(info) as f:
                    blob = f.read(limit + 1)
            except (zipfile.BadZipFile, OSError, EOFError, ValueError, NotImplementedError) as exc:
                raise _error(f"{path}: member {info.filename} cannot be read ({exc})") from None
            if len(blob) > limit:
                raise _error(f"{path}: member {info.filename} is larger than it claims")
            data[info.filename] = blob
    try:
        manifest = json.loads(data["manifest.json"].decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise _error(f"{path}: manifest.json is not valid JSON ({exc})") from None
    from safetensors import SafetensorError
    from safetensors.numpy import load as st_load

    try:
        tensors = st_load(data["tensors.safetensors"])
    except (SafetensorError, ValueError, TypeError, OverflowError) as exc:
        raise _error(f"{path}: tensors.safetensors is not a valid safetensors file ({exc})") from None
    return manifest, tensors


def _check(cond: bool, msg: str) -> None:
    if not cond:
        raise _error(f"invalid library: {msg}")


def _typed(obj: dict, field: str, types, where: str, optional: bool = False):
    _check(isinstance(obj, dict), f"{where} must be an object")
    if field not in obj:
        _check(optional, f"{where} lacks the field {field!r}")
        return None
    value = obj[field]
    if value is None and optional:
        return None
    allowed = types if isinstance(types, tuple) else (types,)
    ok = isinstance(value, allowed) and (bool in allowed or not isinstance(value, bool))
    _check(ok, f"{where}.{field} has the wrong type ({type(value).__name__})")
    return value


def _allowed_fields(obj: dict, allowed: set[str], where: str) -> None:
    _check(isinstance(obj, dict), f"{where} must be an object")
    extra = set(obj) - allowed
    _check(not extra, f"{where} has unknown field(s) {sorted(extra)[:5]}")


def _tensor(tensors: dict, name: str, shape: tuple) -> np.ndarray:
    _check(name in tensors, f"tensor {name!r} is missing")
    arr = tensors[name]
    try:
        return from_bytes(to_bytes(arr), shape).astype(np.float32)
    except VectorError as exc:
        raise _error(f"invalid library: tensor {name}: {exc}") from None


def _validate(manifest: dict, tensors: dict) -> dict:
    _check(isinstance(manifest, dict), "the manifest must be a JSON object")
    _check(manifest.get("format") == FORMAT, f"format is {manifest.get('format')!r}, expected {FORMAT!r}")
    _check(manifest.get("format_version") == FORMAT_VERSION,
           f"format_version {manifest.get('format_version')!r} is not supported (this p2pz reads {FORMAT_VERSION})")
    _allowed_fields(manifest, {"format", "format_version", "created_at", "encoders", "banks", "embeddings",
                               "directions"}, "manifest")
    lists = {k: _typed(manifest, k, list, "manifest") for k in ("encoders", "banks", "embeddings", "directions")}
    _check(bool(lists["directions"]), "it holds no directions")
    encoders = {}
    for i, e in enumerate(lists["encoders"]):
        where = f"encoders[{i}]"
        _allowed_fields(e, {"fingerprint", "model", "subfolder", "revision", "architecture", "hidden_size",
                            "max_length", "pad_id"}, where)
        fp = _typed(e, "fingerprint", str, where)
        _check(len(fp) == 64 and all(c in "0123456789abcdef" for c in fp), f"{where}.fingerprint is not a sha256")
        hs = _typed(e, "hidden_size", int, where)
        _check(0 < hs <= 65536, f"{where}.hidden_size {hs} is out of range")
        ml = _typed(e, "max_length", int, where)
        _check(0 < ml <= 4096, f"{where}.max_length {ml} is out of range")
        _typed(e, "model", str, where)
        _typed(e, "architecture", str, where)
        for opt in ("subfolder", "revision"):
            _typed(e, opt, str, where, optional=True)
        _typed(e, "pad_id", int, where, optional=True)
        _check(fp not in encoders, f"encoder {fp[:12]} is listed twice")
        encoders[fp] = e
    banks = []
    for i, b in enumerate(lists["banks"]):
        where = f"banks[{i}]"
        _allowed_fields(b, {"index", "concept", "version", "generator", "params", "sentences", "sha256", "note",
                            "created_at"}, where)
        _typed(b, "concept", str, where)
        _typed(b, "generator", str, where)
        _typed(b, "params", dict, where)
        _typed(b, "note", str, where, optional=True)
        sentences = _typed(b, "sentences", list, where)
        _check(all(isinstance(x, str) for x in sentences), f"{where}.sentences must be strings")
        sha = _typed(b, "sha256", str, where)
        if sentences:
            _check(bank_sha256(sentences) == sha, f"{where}: sha256 does not match its sentences (tampered?)")
        banks.append(b)
    embeddings = []
    for i, e in enumerate(lists["embeddings"]):
        where = f"embeddings[{i}]"
        _allowed_fields(e, {"index", "bank", "encoder", "key_kind"}, where)
        bank = _typed(e, "bank", int, where)
        _check(0 <= bank < len(banks), f"{where}.bank points nowhere")
        fp = _typed(e, "encoder", str, where)
        _check(fp in encoders, f"{where} uses encoder {fp[:12]}, which the library does not declare")
        _typed(e, "key_kind", str, where)
        d = encoders[fp]["hidden_size"]
        e = dict(e, _mean=_tensor(tensors, f"embedding/{i}/mean", (1, encoders[fp]["max_length"], d)),
                 _key=_tensor(tensors, f"embedding/{i}/key", (d,)))
        embeddings.append(e)
    directions = []
    for i, r in enumerate(lists["directions"]):
        where = f"directions[{i}]"
        _allowed_fields(r, {"index", "name", "version", "kind", "encoder", "scale", "tags", "note", "deprecated",
                            "content_sha256", "created_at", "source", "target", "components"}, where)
        from .naming import RefError, parse_ref

        name = _typed(r, "name", str, where)
        try:
            _, v = parse_ref(name)
        except RefError as exc:
            raise _error(f"invalid library: {where}.name: {exc}") from None
        _check(v is None, f"{where}.name must not carry a version")
        fp = _typed(r, "encoder", str, where)
        _check(fp in encoders, f"{where} uses encoder {fp[:12]}, which the library does not declare")
        kind = _typed(r, "kind", str, where)
        scale = _typed(r, "scale", (int, float), where)
        _check(np.isfinite(scale), f"{where}.scale is not finite")
        tags = _typed(r, "tags", list, where)
        _check(all(isinstance(t, str) for t in tags), f"{where}.tags must be strings")
        _typed(r, "note", str, where, optional=True)
        _typed(r, "deprecated", bool, where, optional=True)
        if kind == "pair":
            for side in ("source", "target"):
                j = _typed(r, side, int, where)
                _check(0 <= j < len(embeddings), f"{where}.{side} points nowhere")
                _check(embeddings[j]["encoder"] == fp,
                       f"{where} claims encoder {fp[:12]} but its {side} embedding was made with "
                       f"{embeddings[j]['encoder'][:12]}")
        elif kind == "combination":
            comps = _typed(r, "components", list, where)
            _check(bool(comps), f"{where}.components is empty")
            for c in comps:
                _allowed_fields(c, {"direction", "weight"}, f"{where}.components")
                j = _typed(c, "direction", int, f"{where}.components")
                _check(0 <= j < i, f"{where}.components must point to earlier directions")
                _check(directions[j]["encoder"] == fp, f"{where} mixes encoders {fp[:12]} and "
                       f"{directions[j]['encoder'][:12]}")
                w = _typed(c, "weight", (int, float), f"{where}.components")
                _check(np.isfinite(w), f"{where}.components weight is not finite")
        else:
            raise _error(f"invalid library: {where}.kind {kind!r} is not pair or combination")
        r = dict(r, _key=_tensor(tensors, f"direction/{i}/key", (encoders[fp]["hidden_size"],)))
        directions.append(r)
    return {"encoders": encoders, "banks": banks, "embeddings": embeddings, "directions": directions}


def import_library(reg, path: Path) -> dict:
    manifest, tensors = _read_archive(path)
    lib = _validate(manifest, tensors)
    from .api import _PendingBank, _sha

    added = {"encoders": 0, "banks": 0, "embeddings": 0, "directions": 0}
    imported = []
    with reg._write() as s:
        enc_rows = {}
        for fp, e in lib["encoders"].items():
            reg._lock(s, "encoder", fp)
            row = s.scalar(select(m.Encoder).where(m.Encoder.fingerprint == fp))
            if row is None:
                row = m.Encoder(fingerprint=fp, model=e["model"], subfolder=e.get("subfolder"),
                                revision=e.get("revision"), architecture=e["architecture"],
                                hidden_size=e["hidden_size"], max_length=e["max_length"], pad_id=e.get("pad_id"))
                s.add(row)
                s.flush()
                added["encoders"] += 1
            elif row.hidden_size != e["hidden_size"]:
                raise _error(f"library encoder {fp[:12]} claims D={e['hidden_size']} but this registry knows it "
                             f"as D={row.hidden_size}; refusing the import")
            enc_rows[fp] = row
        bank_rows = []
        for b in lib["banks"]:
            reg._lock(s, "bank", b["concept"])
            row = s.scalar(select(m.Bank).where(m.Bank.concept == b["concept"], m.Bank.sha256 == b["sha256"]))
            if row is None:
                from generators import BankDraft

                pending = _PendingBank(concept=b["concept"], sha256=b["sha256"], generator=b["generator"],
                                       draft=BankDraft(list(b["sentences"]), dict(b["params"])))
                row = reg._store_bank(s, pending, b.get("note"))
                added["banks"] += 1
            bank_rows.append(row)
        emb_rows = []
        for e in lib["embeddings"]:
            bank_row, enc_row = bank_rows[e["bank"]], enc_rows[e["encoder"]]
            reg._lock(s, "embedding", f"{bank_row.id}:{enc_row.id}")
            row = s.scalar(select(m.Embedding).where(m.Embedding.bank_id == bank_row.id,
                                                     m.Embedding.encoder_id == enc_row.id))
            if row is None:
                row = m.Embedding(bank_id=bank_row.id, encoder_id=enc_row.id, mean=to_bytes(e["_mean"]),
                                  key=to_bytes(e["_key"]), key_kind=e["key_kind"])
                s.add(row)
                s.flush()
                added["embeddings"] += 1
            emb_rows.append(row)
        dir_rows = []
        for r in lib["directions"]:
            enc_row = enc_rows[r["encoder"]]
            if r["kind"] == "pair":
                src, tgt = emb_rows[r["source"]], emb_rows[r["target"]]
                content = {"kind": "pair", "encoder": r["encoder"],
                           "source": [src.bank.concept, src.bank.sha256],
                           "target": [tgt.bank.concept, tgt.bank.sha256], "scale": float(r["scale"])}
                kwargs = {"source_id": src.id, "target_id": tgt.id, "scale": r["scale"]}
            else:
                comps = [(dir_rows[c["direction"]], float(c["weight"])) for c in r["components"]]
                content = {"kind": "combination", "encoder": r["encoder"],
                           "components": [[d.content_sha256, w] for d, w in comps]}
                kwargs = {"components": [{"id": d.id, "name": d.name, "version": d.version, "weight": w}
                                         for d, w in comps]}
            before = s.scalar(select(m.Direction).where(m.Direction.name == r["name"],
                                                        m.Direction.content_sha256 == _sha(content)))
            row = reg._insert_direction(s, name=r["name"], kind=r["kind"], encoder_row=enc_row, key=r["_key"],
                                        content=content, tags=r["tags"], note=r.get("note"), **kwargs)
            if before is None:
                added["directions"] += 1
            dir_rows.append(row)
            imported.append(f"{row.name}@{row.version}")
    return {"path": str(path), "added": added, "directions": imported}


# --- official .pt embeddings ------------------------------------------------------------------------

def load_pt_embedding(path: Path, hidden_size: int) -> np.ndarray:
    """Read an official pix2pix-zero concept embedding: a tensor [1, 77, D] (or a raw bank [N, 77, D],
    averaged), loaded with ``torch.load(weights_only=True)`` only — a pickled object is refused."""
    import torch

    if not path.is_file():
        raise _error(f"embedding file {str(path)!r} does not exist")
    if path.stat().st_size > MAX_PT_BYTES:
        raise _error(f"{path} is larger than {MAX_PT_BYTES >> 20} MiB; not a concept embedding")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a hostile-input boundary: any failure to parse is the file's fault (struct.error, …)
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise _error(f"{path} is not a plain tensor file (torch.load with weights_only=True refused it: {first})") from None
    if isinstance(obj, dict) and len(obj) == 1:
        obj = next(iter(obj.values()))
    if not isinstance(obj, torch.Tensor):
        raise _error(f"{path} holds a {type(obj).__name__}, not a tensor [1, 77, D]")
    if obj.dim() != 3 or obj.shape[1] != 77 or obj.shape[0] < 1:
        raise _error(f"{path} holds a tensor of shape {tuple(obj.shape)}; expected [1, 77, D] or [N, 77, D]")
    if obj.shape[2] != hidden_size:
        raise _error(f"{path} has width D={obj.shape[2]} but the model's text encoder has D={hidden_size}; "
                     "pass the --model these embeddings were made with")
    if not obj.is_floating_point():
        raise _error(f"{path} holds a {obj.dtype} tensor; expected floating point")
    arr = obj.to(torch.float64).mean(0, keepdim=True).to(torch.float32).numpy()
    if not np.isfinite(arr).all():
        raise _error(f"{path} contains NaN or Inf")
    return arr


def import_pt(reg, source: Path, target: Path, name: str | None, model: str | None):
    from .api import _PendingBank, _PendingEmbedding
    from .naming import direction_name

    enc = reg._load_encoder(model)
    pendings = []
    for path in (source, target):
        arr = load_pt_embedding(path, enc.hidden_size)
        concept = path.stem  # a proper extension split: "text.pt" → "text" (the reference's strip() bug)
        digest = hashlib.sha256(b"pt:" + arr.tobytes()).hexdigest()
        from generators import BankDraft, check_concept

        concept = check_concept(concept)
        draft = BankDraft(sentences=[], params={"file": path.name, "file_sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
                                                "sentences": "unknown (imported mean embedding)"})
        pb = _PendingBank(concept=concept, sha256=digest, draft=draft, generator="import-pt")
        key = arr[0, 1:].mean(0)  # no sentences, so no pooled key: mean over token rows 1..76 [D]
        pendings.append(_PendingEmbedding(bank=pb, mean=arr, key=key.astype(np.float32), key_kind="token-mean"))
    src, tgt = pendings
    name = name or direction_name(src.bank.concept, tgt.bank.concept)
    reg._parse(name, "direction")
    content = {"kind": "pair", "encoder": enc.fingerprint, "source": [src.bank.concept, src.bank.sha256],
               "target": [tgt.bank.concept, tgt.bank.sha256], "scale": 1.0}
    with reg._write() as s:
        enc_row = reg._encoder_row(s, enc)
        se = reg._store_embedding(s, src, enc_row)
        te = reg._store_embedding(s, tgt, enc_row)
        row = reg._insert_direction(s, name=name, kind="pair", encoder_row=enc_row, key=tgt.key - src.key,
                                    content=content, source_id=se.id, target_id=te.id,
                                    note=f"imported from {source.name} and {target.name}")
        return reg._direction(s, row)

