"""The ``.p2pz`` library format: its constants, the pydantic models that are both the validator and the
documentation of ``manifest.json``, and every check a manifest and its tensors must pass before an import
touches the database."""

from __future__ import annotations

import hashlib
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from p2pz.generators import bank_sha256
from p2pz.store import repository as repo
from p2pz.store.hashing import sha256_json
from p2pz.store.lazy import numpy as np
from p2pz.store.vectors import VectorError, from_bytes, to_bytes

from p2pz.registry.library.naming import RefError, check_tag, name_problem
from p2pz.registry.library.records import RegistryError

FORMAT = "p2pz-library"
# 2: students carry ``deprecated``; 3: embeddings carry the token-aligned mean. Versions 1 and 2 are still read
FORMAT_VERSION = 3
READS_VERSIONS = (1, 2, 3)
MEMBERS = ("manifest.json", "tensors.safetensors")
MAX_MANIFEST_BYTES = 256 << 20
MAX_TENSOR_BYTES = 8 << 30
MAX_RATIO = 200  # uncompressed / compressed; above this the archive is treated as a zip bomb


# --- the manifest format ------------------------------------------------------------------------------

class _Entry(BaseModel):
    # Strict: no coercion ("1" is not 1, true is not 1), no unknown fields, no NaN or Inf.
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


class EncoderPart(_Entry):
    """One text encoder of an SDXL pair (``text_encoder`` or ``text_encoder_2``)."""

    subfolder: str
    fingerprint: str = Field(pattern=r"^[0-9a-f]{64}$")
    architecture: str
    hidden_size: int = Field(gt=0, le=65536)


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
    family: Literal["sd", "sdxl"] = Field(default="sd", description="sd: one text encoder; sdxl: the pair")
    parts: list[EncoderPart] | None = Field(default=None, description="an SDXL pair's two encoders")
    key_size: int | None = Field(default=None, gt=0, le=65536, description="search key width when not D "
                                 "(SDXL: the pooled embedding's)")

    @property
    def key_dim(self) -> int:
        return self.key_size or self.hidden_size


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
    """A bank's mean embedding under one encoder (tensors ``embedding/<i>/mean`` and ``/key``), and from format 3
    its token-aligned mean (docs/algorithm.md §13): tensor ``embedding/<i>/token`` [D] exactly when
    ``token_count`` ≥ 1. Both fields None: the word was never looked for (an embedding made before schema
    revision 0010, or imported from a ``.pt`` mean)."""

    index: int | None = None
    bank: int = Field(description="index into banks")
    encoder: str = Field(description="fingerprint of a listed encoder")
    key_kind: str
    token_word: str | None = Field(default=None, min_length=1, max_length=200,
                                   description="format 3: the concept word whose token-aligned mean was taken")
    token_count: int | None = Field(default=None, ge=0, le=2**31 - 1,
                                    description="format 3: the bank's sentences that contain the word (0: none, "
                                    "and no tensor)")


class Origin(_Entry):
    """Where a direction came from: the registry, Hub repo or file it was imported from, the revision (a Hub
    commit) and its version there; ``upstream`` is the origin it carried there (a direction pulled through two
    hops keeps both). Never holds credentials."""

    source: str = Field(max_length=2000)
    revision: str | None = Field(default=None, max_length=200)
    version: int | None = Field(default=None, ge=1, le=2**31 - 1)
    upstream: "Origin | None" = None


MAX_ORIGIN_DEPTH = 8  # hops an origin remembers; older upstreams are dropped


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
    origin: Origin | None = Field(default=None, description="where the exporting registry got it from")
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
    deprecated: bool = Field(default=False, description="format 2: not applied unless asked by version")


class Manifest(_Entry):
    """``manifest.json`` of a ``.p2pz`` library."""

    format: Literal["p2pz-library"]
    format_version: Literal[1, 2, 3]
    created_at: str | None = None
    encoders: list[EncoderEntry]
    banks: list[BankEntry]
    embeddings: list[EmbeddingEntry]
    directions: list[DirectionEntry]
    students: list[StudentEntry] = Field(default_factory=list)



# --- validation ---------------------------------------------------------------------------------------

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


def _direction_content(man: Manifest, encoders: dict, i: int, r, contents: list[str]) -> dict:
    """Check direction ``i``'s name, tags and references → what it is made of (its content, to hash)."""
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
        return repo.direction_content("pair", r.encoder, source=sides[0], target=sides[1], scale=r.scale)
    _check(bool(r.components), f"{where}.components is empty")
    for c in r.components:
        _check(0 <= c.direction < i, f"{where}.components must point to earlier directions")
        _check(man.directions[c.direction].encoder == r.encoder,
               f"{where} mixes encoders {r.encoder[:12]} and {man.directions[c.direction].encoder[:12]}")
    return repo.direction_content("combination", r.encoder,
                                  components=[(contents[c.direction], c.weight) for c in r.components])


def validate_manifest(raw) -> Manifest:
    """Parse a manifest and check everything in it that needs no tensor: types, cross-references, bank hashes,
    and each direction's ``content_sha256`` against what it is made of (a changed scale, weight or bank is
    tampering, not a new direction)."""
    _check(isinstance(raw, dict), "the manifest must be a JSON object")
    _check(raw.get("format") == FORMAT, f"format is {raw.get('format')!r}, expected {FORMAT!r}")
    version = raw.get("format_version")
    if type(version) is int and version > FORMAT_VERSION:
        raise RegistryError(f"this library is format_version {version}, newer than this p2pz reads (up to "
                            f"{FORMAT_VERSION}): upgrade p2pz (pip install -U p2pz) to import it")
    _check(type(version) is int and version in READS_VERSIONS,
           f"format_version {version!r} is not supported (this p2pz reads {', '.join(map(str, READS_VERSIONS))})")
    try:
        man = Manifest.model_validate(raw)
    except ValidationError as exc:
        raise _explain(exc) from None
    except RecursionError:
        raise _invalid("the manifest is nested too deeply") from None
    _check(bool(man.directions), "it holds no directions")
    if man.format_version < 2:
        for i, st in enumerate(man.students):
            _check("deprecated" not in st.model_fields_set, f"students[{i}] has unknown field(s) ['deprecated'] "
                   "(format_version 1 has none; 2 has)")
    encoders = {}
    for e in man.encoders:
        _check(e.fingerprint not in encoders, f"encoder {e.fingerprint[:12]} is listed twice")
        encoders[e.fingerprint] = e
    for i, b in enumerate(man.banks):
        problem = name_problem(b.concept, "bank")
        _check(problem is None, f"banks[{i}]: {problem}")
        repo.check_bank_size(b.concept, len(b.sentences))  # the store's one cap, before hashing them all
        if b.sentences:
            _check(bank_sha256(b.sentences) == b.sha256, f"banks[{i}]: sha256 does not match its sentences (tampered?)")
    for i, e in enumerate(man.embeddings):
        _check(0 <= e.bank < len(man.banks), f"embeddings[{i}].bank points nowhere")
        _check(e.encoder in encoders, f"embeddings[{i}] uses encoder {e.encoder[:12]}, which the library does not declare")
        given = sorted({"token_word", "token_count"} & e.model_fields_set)
        if man.format_version < 3:
            _check(not given, f"embeddings[{i}] has unknown field(s) {given} (format_version "
                   f"{man.format_version} has none; 3 has)")
        _check((e.token_word is None) == (e.token_count is None),
               f"embeddings[{i}] gives {'token_word' if e.token_count is None else 'token_count'} without "
               f"{'token_count' if e.token_count is None else 'token_word'}")
    contents: list[str] = []  # each direction's recomputed content hash, for the combinations after it
    for i, r in enumerate(man.directions):
        contents.append(sha256_json(_direction_content(man, encoders, i, r, contents)))
        if r.content_sha256 is not None:
            _check(r.content_sha256 == contents[-1], f"directions[{i}] ({r.name}): content_sha256 does not match "
                   "what the direction is made of (its scale, weights or banks were changed: tampered?)")
    return man


def _student_weights(man: Manifest, tensors: dict, i: int) -> bytes:
    """A student's weights: exactly the declared bytes, their sha256, and a safetensors file of float tensors."""
    from safetensors import SafetensorError  # lazy: safetensors
    from safetensors.numpy import load as st_load  # lazy: safetensors

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
        checked[f"embedding/{i}/key"] = _tensor(tensors, f"embedding/{i}/key", (enc.key_dim,))
        token = f"embedding/{i}/token"
        if e.token_count:  # the word is in ≥ 1 sentence: its token-aligned mean [D]
            checked[token] = _tensor(tensors, token, (enc.hidden_size,))
        else:
            _check(token not in tensors, f"tensor {token!r} comes without its word and count (embeddings[{i}] has "
                   + ("token_count 0)" if e.token_count == 0 else "no token_word or token_count)"))
    for i, r in enumerate(man.directions):
        checked[f"direction/{i}/key"] = _tensor(tensors, f"direction/{i}/key", (encoders[r.encoder].key_dim,))
    for i, st in enumerate(man.students):
        _check(0 <= st.direction < len(man.directions), f"students[{i}].direction points nowhere")
        checked[f"student/{i}"] = _student_weights(man, tensors, i)
    return checked


def validate(raw, tensors: dict) -> tuple[Manifest, dict[str, np.ndarray]]:
    """Parse and cross-check a manifest and its tensors → (manifest, tensors as float32, shapes checked)."""
    man = validate_manifest(raw)
    return man, check_tensors(man, tensors)

