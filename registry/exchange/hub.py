"""Directions on the Hugging Face Hub (issue #23, architecture §13): ``p2pz push hf://OWNER/REPO`` and ``p2pz pull``.

A Hub repo of p2pz directions (a model repo) holds:

    README.md                                  the model card (:mod:`.card`): YAML ``library_name: p2pz``, tags,
                                               ``base_model``; a table of the directions; a "without p2pz" snippet
    p2pz.json                                  the index (:class:`HubIndex`): every file with its sha256 and size,
                                               the encoders, banks, embeddings, directions and students
    directions/<name>/<version>.safetensors    Δ ``delta`` [1, 77, D], ``delta_pooled`` [1, 1280] (SDXL), ``key``,
                                               and a pair's Δ_token ``delta_token`` [D] when it has one (added at
                                               the source word's tokens, docs/algorithm.md §13); metadata: name,
                                               version, encoder and its model (a Hub id, or a local folder's name
                                               only: :func:`public_model`), the banks' sha256, scale, content hash,
                                               ``token_word`` — readable by plain ``safetensors``
    embeddings/<encoder>/<bank>.safetensors    a bank's mean embedding ``mean`` [1, 77, D] and ``key``, and its
                                               token-aligned mean ``token`` [D] when the bank has the word (what a
                                               p2pz registry stores; Δ and Δ_token are materialized from two)
    banks/<concept>/<sha256>.txt               the bank's sentences, one per line
    students/<name>/<version>/<sha256>.safetensors   a student's weights (``--students``)

Pushes are incremental: only direction versions the repo lacks are sent, in one commit whose message lists them,
made on top of the head that was read (a concurrent push makes the commit fail instead of losing the other's).
A version the repo holds with other content is refused, naming both hashes. Pulls resolve the revision (commit,
tag or branch) to a commit once, download everything they need at that commit, check every file's sha256 and
size against the index, and only then import, in one transaction (:func:`~.archive.store_library`), recording
``hf://OWNER/REPO`` and the commit as the origin. The token comes from ``HF_TOKEN`` or the Hub's own login
(``hf auth login``); p2pz never stores, logs or prints it. ``HF_ENDPOINT`` selects another Hub-compatible server;
``HF_HUB_OFFLINE=1`` pulls from the local Hub cache only.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import re
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from p2pz.store.lazy import numpy as np

from p2pz.registry.library.naming import parse_ref
from p2pz.registry.library.records import RegistryError, printable
from .manifest import (BankEntry, ComponentEntry, DirectionEntry, EmbeddingEntry, EncoderEntry, Manifest, Origin,
                       StudentEntry, FORMAT, FORMAT_VERSION, validate)

HUB_FORMAT = "p2pz-hub"
# 2: students carry ``deprecated``; 3: embeddings carry the token-aligned mean. Versions 1 and 2 are still read
HUB_FORMAT_VERSION = 3
INDEX = "p2pz.json"
CARD = "README.md"
MAX_INDEX_BYTES = 64 << 20
MAX_FILE_BYTES = 2 << 30
_REPO = re.compile(r"hf://([^/@\s]+)/([^/@\s]+)(?:@(\S*))?")
# the Hub's rules for each half of a repo id (huggingface_hub.utils.validate_repo_id), ASCII only
_REPO_PART = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9_.\-]{0,94}[A-Za-z0-9_])?")
_REVISION = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]{0,199}")  # a commit sha, tag or branch (no '/')


# --- the index (p2pz.json) ----------------------------------------------------------------------------------

class _Entry(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


class HubFile(_Entry):
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    size: int = Field(ge=0, le=MAX_FILE_BYTES)


class HubBank(_Entry):
    concept: str
    version: int | None = None
    generator: str
    params: dict
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    note: str | None = None
    created_at: str | None = None
    file: str | None = Field(description="its sentences, one per line; None for banks without sentences")


class HubEmbedding(_Entry):
    bank: str = Field(description="the bank's sha256")
    encoder: str = Field(description="the encoder's fingerprint")
    key_kind: str
    file: str
    token_word: str | None = Field(default=None, min_length=1, max_length=200, description="format 3: the word of "
                                   "the token-aligned mean (None: never looked for)")
    token_count: int | None = Field(default=None, ge=0, le=2**31 - 1, description="format 3: sentences with the "
                                    "word; ≥ 1: the file holds ``token`` [D]")


class HubComponent(_Entry):
    ref: str = Field(description="name@version of a direction in this repo")
    weight: float


class _Shown(BaseModel):  # what the card shows; keys a newer p2pz adds are kept (never shown)
    model_config = ConfigDict(extra="allow", strict=True, allow_inf_nan=False)


class HubDiagnostics(_Shown):
    unavailable: str | None = None
    checks_ok: int | None = Field(default=None, ge=0)
    warnings: list[str] = Field(default_factory=list)
    stability: float | None = None
    sentences_for_095: int | None = Field(default=None, ge=0)
    word_swap_cosine: float | None = None


class HubSummary(_Shown):
    """A direction's ``summary``: checked on every read, so a malformed one is named, never shown."""

    norm: float | None = None
    source: str | None = None
    target: str | None = None
    model: str | None = None
    family: str | None = None
    diagnostics: HubDiagnostics | None = None
    scores: dict[str, float] = Field(default_factory=dict)
    n_images: int | None = Field(default=None, ge=0)
    preview: str | None = Field(default=None, pattern=r"^(?:[\w+\-][\w.+\-]*/)*[\w+\-][\w.+\-]*$",
                                description="a folder of the repo (relative, no '.' or '..')")


class HubDirection(_Entry):
    name: str
    version: int = Field(ge=1, le=2**31 - 1)
    kind: Literal["pair", "combination"]
    encoder: str
    scale: float
    tags: list[str]
    note: str | None = None
    deprecated: bool = False
    content_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    created_at: str | None = None
    origin: Origin | None = None
    file: str
    source: str | None = Field(default=None, description="the source embedding's file (pair)")
    target: str | None = Field(default=None, description="the target embedding's file (pair)")
    components: list[HubComponent] | None = None
    summary: dict = Field(default_factory=dict, description="what the card shows: ‖Δ‖, scores, diagnostics, "
                          "preview (:class:`HubSummary`)")

    @field_validator("summary")
    @classmethod
    def _summary(cls, value: dict) -> dict:
        try:
            HubSummary.model_validate(value)
        except ValidationError as exc:
            first = exc.errors()[0]
            raise ValueError(f"{'.'.join(str(p) for p in first['loc'])}: {first['msg']}") from None
        return value

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"


class HubStudent(_Entry):
    direction: str = Field(description="name@version")
    version: int | None = None
    config: dict
    weights_bytes: int = Field(gt=0, le=MAX_FILE_BYTES)
    weights_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    dataset_sha256: str
    params: dict
    metrics: dict
    created_at: str | None = None
    file: str
    deprecated: bool = False


class HubIndex(_Entry):
    """``p2pz.json``: what the repo holds and the sha256 of every file in it (the card aside)."""

    format: Literal["p2pz-hub"] = HUB_FORMAT
    format_version: Literal[1, 2, 3] = HUB_FORMAT_VERSION
    updated_at: str | None = None
    files: dict[str, HubFile] = Field(default_factory=dict)
    encoders: list[EncoderEntry] = Field(default_factory=list)
    banks: list[HubBank] = Field(default_factory=list)
    embeddings: list[HubEmbedding] = Field(default_factory=list)
    directions: list[HubDirection] = Field(default_factory=list)
    students: list[HubStudent] = Field(default_factory=list)

    def direction(self, ref: str) -> HubDirection | None:
        return next((d for d in self.directions if d.ref == ref), None)


_SAFE_PATH = re.compile(r"(?:[\w.+\-]+/)*[\w.+\-]+")


def _check_paths(index: HubIndex) -> None:
    """Every path the index names is a plain relative path inside the repo (no ``..``, no absolute path, no
    backslash) and is listed with its sha256 — a hostile index cannot point a download outside the cache."""
    named = ([b.file for b in index.banks if b.file] + [e.file for e in index.embeddings]
             + [d.file for d in index.directions] + [x for d in index.directions for x in (d.source, d.target) if x]
             + [st.file for st in index.students])
    for path in list(index.files) + named:
        if (not _SAFE_PATH.fullmatch(path) or any(part in ("", ".", "..") for part in path.split("/"))
                or len(path) > 500):
            raise RegistryError(f"{INDEX} names an unsafe path {path[:80]!r}; refused")
    missing = [p for p in named if p not in index.files]
    if missing:
        raise RegistryError(f"{INDEX} lists no sha256 for {missing[0]}; the repo is incomplete")


def parse_index(raw: bytes) -> HubIndex:
    if len(raw) > MAX_INDEX_BYTES:
        raise RegistryError(f"{INDEX} is over {MAX_INDEX_BYTES >> 20} MB; this is not a p2pz repo")
    try:
        doc = json.loads(raw)
        version = doc.get("format_version") if isinstance(doc, dict) else None
        if type(version) is int and version > HUB_FORMAT_VERSION:
            raise RegistryError(f"{INDEX} is format_version {version}, newer than this p2pz reads (up to "
                                f"{HUB_FORMAT_VERSION}): upgrade p2pz (pip install -U p2pz) to pull from this repo")
        index = HubIndex.model_validate(doc)
    except (ValueError, ValidationError, RecursionError) as exc:
        first = exc.errors()[0] if isinstance(exc, ValidationError) else {"loc": (), "msg": str(exc)[:200]}
        where = ".".join(str(p) for p in first["loc"]) or INDEX
        raise RegistryError(f"{INDEX} is not a valid p2pz index ({where}: {first['msg']})") from None
    _check_paths(index)
    return index


# --- addresses, paths, errors ------------------------------------------------------------------------------------

def parse_repo(url: str) -> tuple[str, str | None]:
    """``hf://OWNER/REPO[@REVISION]`` → (``OWNER/REPO``, revision or None)."""
    m = _REPO.fullmatch(url.strip())
    if not m:
        raise RegistryError(f"malformed Hub address {url!r}: write hf://OWNER/REPO (pull: hf://OWNER/REPO@REVISION)")
    owner, name, revision = m.groups()
    if not all(_REPO_PART.fullmatch(p) and "--" not in p and ".." not in p for p in (owner, name)) \
            or name.endswith(".git"):
        raise RegistryError(f"invalid Hub repo id {owner + '/' + name!r}: owner and name are 1-96 of letters, digits, "
                            "'-', '_', '.', start with a letter or digit, do not end with '-' or '.', hold no '--' "
                            "or '..', and the name does not end in '.git'")
    if revision is not None and (not _REVISION.fullmatch(revision) or ".." in revision
                                 or revision.endswith((".", ".lock"))):
        raise RegistryError(f"invalid revision {revision!r} in {url.strip()!r}: give a commit sha, a tag or a branch "
                            "(letters, digits, '-', '_', '.'; not starting with '.' or '-', no '..')")
    return f"{owner}/{name}", revision


def public_model(model: str) -> str:
    """What a file pushed to the Hub (card, ``p2pz.json``, direction metadata) says of a model: a Hub id as it
    is, a local folder only by its name — never its path (``/home/alice/models/my-sd`` → ``my-sd``)."""
    text = str(model).strip()
    parts = text.split("/")
    hub_id = len(parts) <= 2 and all(_REPO_PART.fullmatch(p) and ".." not in p for p in parts)
    if hub_id and not (len(parts) == 2 and Path(text).is_dir()):  # OWNER/NAME that is a folder here: a folder
        return text
    return re.split(r"[\\/]+", text.rstrip("/\\"))[-1] or "local-model"


def _seg(text: str) -> str:
    """A name as one path segment: what the naming rules allow, with spaces as '_' and nothing path-like."""
    out = re.sub(r"\s", "_", text)
    if out in (".", "..") or "/" in out or "\\" in out:
        raise RegistryError(f"{text!r} cannot be a file name on the Hub")
    return out


def direction_path(name: str, version: int) -> str:
    return f"directions/{_seg(name)}/{version}.safetensors"


def _endpoint() -> str | None:
    return os.environ.get("HF_ENDPOINT") or None


def _token() -> str | None:
    return os.environ.get("HF_TOKEN") or None  # None: huggingface_hub falls back to its own login


def offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def _unreachable(repo_id: str, why: str = "") -> RegistryError:
    return RegistryError(f"cannot reach the Hub for {repo_id}{why}; check HF_ENDPOINT and the network, or pull "
                         "offline with HF_HUB_OFFLINE=1")


def _network_error(exc: Exception) -> bool:
    """A failure to talk to the Hub at all (refused, reset, timed out, name not found) — not a bug of ours."""
    if isinstance(exc, (OSError, TimeoutError)):
        return True
    # huggingface_hub's HTTP client (httpx, or its httpx2 fork in newer releases): its transport errors, by name,
    # so that p2pz imports neither
    return any(c.__name__ in ("TransportError", "TimeoutException") and c.__module__.split(".")[0].startswith("httpx")
               for c in type(exc).__mro__)


def _raise_hub_error(exc: Exception, repo_id: str, writing: bool):
    """Re-raise ``exc`` as its one line; an error that is neither the Hub's nor the network's is a bug, and keeps
    its traceback (issue #35: a malformed index once read as 'cannot reach the Hub')."""
    err = _hub_error(exc, repo_id, writing)
    if err is None:
        raise exc
    raise err from None


def _hub_error(exc: Exception, repo_id: str, writing: bool) -> RegistryError | None:
    """A huggingface_hub or network error as one line naming the fix (never the token); None for anything else."""
    from huggingface_hub import errors as hf  # lazy: huggingface_hub

    status = getattr(getattr(exc, "response", None), "status_code", None)
    if status in (401, 403):
        need = "write access to" if writing else "read access to"
        return RegistryError(f"the Hub refused the credentials ({status}) for {repo_id}: set HF_TOKEN to a token "
                             f"with {need} it (or run `hf auth login`)")
    if isinstance(exc, hf.LocalEntryNotFoundError) and offline():
        return RegistryError(f"{repo_id} is not in the local Hub cache and HF_HUB_OFFLINE is set; pull it once "
                             "online, or unset HF_HUB_OFFLINE")
    if isinstance(exc, hf.LocalEntryNotFoundError):  # online, and the Hub's answer was not usable: say that one
        cause = exc.__cause__
        return (cause is not None and _hub_error(cause, repo_id, writing)) or _unreachable(repo_id)
    if isinstance(exc, hf.RevisionNotFoundError):
        return RegistryError(f"{repo_id} has no such revision; give a commit, tag or branch that exists")
    if isinstance(exc, hf.RepositoryNotFoundError):
        return RegistryError(f"no Hub repo {repo_id} (or it is private: set HF_TOKEN)")
    if isinstance(exc, hf.EntryNotFoundError):
        return RegistryError(f"{repo_id} is not a p2pz repo (no {INDEX}); push to it with p2pz push hf://{repo_id}")
    if isinstance(exc, hf.HfHubHTTPError):
        # the Hub's own words when it gave some (else huggingface_hub's first line), with no terminal escapes
        said = getattr(exc, "server_message", None) or (str(exc).splitlines() or [""])[0]
        said = " ".join(printable(said, keep="\t\n").split())[:300]
        return RegistryError(f"the Hub answered {status or 'an error'} for {repo_id}: {said}")
    if _network_error(exc):
        return _unreachable(repo_id, f" ({type(exc).__name__})")
    return None


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --- push ----------------------------------------------------------------------------------------------------

def _safetensors(tensors: dict, metadata: dict) -> bytes:
    from safetensors.numpy import save  # lazy: safetensors

    return save({k: np.ascontiguousarray(v, dtype=np.float32) for k, v in tensors.items()},
                metadata={k: str(v) for k, v in metadata.items()})


def _diagnostics(reg, ref: str) -> dict:
    """What the card says of a pair direction's text-side diagnostics (``p2pz direction inspect``, from the
    banks' cached statistics: no images): split-half stability, the sentences it would need for 0.95, the
    cosine with the one-sentence word swap, and which checks warn. ``{"unavailable": why}`` when they cannot be
    computed here."""
    try:
        got = reg.inspect(ref)
    except RegistryError as exc:
        return {"unavailable": str(exc)[:200]}
    out = {"checks_ok": sum(c.status == "ok" for c in got.checks),
           "warnings": [c.name for c in got.checks if c.status != "ok"]}
    if got.stability:
        out["stability"] = round(float(got.stability["mean"]), 3)
    if got.sentences_for_095 is not None:
        out["sentences_for_095"] = int(round(got.sentences_for_095))
    if got.word_swap_cosine is not None:
        out["word_swap_cosine"] = round(float(got.word_swap_cosine), 3)
    return out


def _local_files(reg, man: Manifest, tensors: dict, students: bool) -> tuple[HubIndex, dict[str, bytes]]:
    """This registry's side of a push: the index entries and file bytes of every direction in ``man``."""
    from p2pz.registry.library.previews import lookup, preview_file  # lazy: PIL

    files: dict[str, bytes] = {}
    idx = HubIndex(encoders=[e.model_copy(update={"model": public_model(e.model)}) for e in man.encoders])
    encoders = {e.fingerprint: e for e in man.encoders}
    for b in man.banks:
        path = f"banks/{_seg(b.concept)}/{b.sha256[:16]}.txt" if b.sentences else None
        if path:
            files[path] = ("\n".join(b.sentences) + "\n").encode()
        idx.banks.append(HubBank(concept=b.concept, version=b.version, generator=b.generator, params=b.params,
                                 sha256=b.sha256, note=b.note, created_at=b.created_at, file=path))
    records = {f"{r.name}@{r.version}": reg.get(f"{r.name}@{r.version}") for r in man.directions}
    scores = reg.scores(list(records.values()))  # one query for every direction, not one each
    emb_files = []
    for i, e in enumerate(man.embeddings):
        bank = man.banks[e.bank]
        path = f"embeddings/{e.encoder[:16]}/{bank.sha256[:16]}.safetensors"
        arrays = {"mean": tensors[f"embedding/{i}/mean"], "key": tensors[f"embedding/{i}/key"]}
        meta = {"format": "p2pz-embedding", "concept": bank.concept, "bank_sha256": bank.sha256,
                "encoder": e.encoder, "key_kind": e.key_kind}
        if f"embedding/{i}/token" in tensors:  # the token-aligned mean [D]
            arrays["token"] = tensors[f"embedding/{i}/token"]
        if e.token_word is not None:
            meta.update(token_word=e.token_word, token_count=e.token_count)
        files[path] = _safetensors(arrays, meta)
        idx.embeddings.append(HubEmbedding(bank=bank.sha256, encoder=e.encoder, key_kind=e.key_kind, file=path,
                                           token_word=e.token_word, token_count=e.token_count))
        emb_files.append(path)
    for i, r in enumerate(man.directions):
        d = records[f"{r.name}@{r.version}"]
        enc = encoders[r.encoder]
        arrays = {"delta": d.vector_numpy(), "key": tensors[f"direction/{i}/key"]}
        pooled = d.pooled_numpy()
        if pooled is not None:
            arrays["delta_pooled"] = pooled
        meta = {"format": "p2pz-direction", "name": r.name, "version": r.version, "kind": r.kind,
                "encoder": r.encoder, "model": public_model(enc.model), "family": enc.family, "scale": r.scale,
                "content_sha256": r.content_sha256}
        if r.kind == "pair":
            src, tgt = (man.banks[man.embeddings[j].bank] for j in (r.source, r.target))
            meta.update(source=src.concept, target=tgt.concept, source_bank_sha256=src.sha256,
                        target_bank_sha256=tgt.sha256)
            tok = d.token_delta
            if tok.vector is not None:  # Δ_token [D], added at the source word's tokens
                arrays["delta_token"] = tok.vector
                meta.update(token_word=tok.word, token_target_word=tok.target_word)
        path = direction_path(r.name, r.version)
        files[path] = _safetensors(arrays, meta)
        stats = d.vector_stats()
        summary = {"norm": round(stats["norm"], 4), "source": d.source, "target": d.target,
                   "model": public_model(enc.model), "family": enc.family}
        if r.kind == "pair":
            summary["diagnostics"] = _diagnostics(reg, d.ref)
        scored = scores.get(d.ref)
        if scored:
            summary["scores"] = {k: round(float(v), 4) for k, v in scored["scores"].items()}
            summary["n_images"] = scored["n_images"]
        shown = lookup(d)
        if shown:  # the newest preview's thumbnails, for the card
            for which in ("source_thumb", "edit_thumb"):
                thumb = f"previews/{r.content_sha256[:16]}/{which}.png"
                files[thumb] = preview_file(shown[0]["key"], which).read_bytes()
            summary["preview"] = f"previews/{r.content_sha256[:16]}"
        idx.directions.append(HubDirection(
            name=r.name, version=r.version, kind=r.kind, encoder=r.encoder, scale=r.scale, tags=r.tags, note=r.note,
            deprecated=bool(r.deprecated), content_sha256=r.content_sha256, created_at=r.created_at, origin=r.origin,
            file=path, source=emb_files[r.source] if r.kind == "pair" else None,
            target=emb_files[r.target] if r.kind == "pair" else None,
            components=[HubComponent(ref=man.directions[c.direction].name + f"@{man.directions[c.direction].version}",
                                     weight=c.weight) for c in r.components] if r.components else None,
            summary=summary))
    if students:
        for i, st in enumerate(man.students):
            owner = man.directions[st.direction]
            path = f"students/{_seg(owner.name)}/{owner.version}/{st.weights_sha256[:16]}.safetensors"
            files[path] = bytes(tensors[f"student/{i}/weights"].tobytes())
            idx.students.append(HubStudent(direction=f"{owner.name}@{owner.version}", version=st.version,
                                           config=st.config, weights_bytes=st.weights_bytes,
                                           weights_sha256=st.weights_sha256, dataset_sha256=st.dataset_sha256,
                                           params=st.params, metrics=st.metrics, created_at=st.created_at, file=path,
                                           deprecated=st.deprecated))
    return idx, files


def _merge(remote: HubIndex, local: HubIndex, files: dict[str, bytes], repo_id: str):
    """The repo's next index and the files to send → (index, {path: bytes}, added refs, skipped refs). Refuses a
    version the repo holds with other content."""
    new_dirs, added, skipped = [], [], []
    for d in local.directions:
        there = remote.direction(d.ref)
        if there is not None:
            if there.content_sha256 != d.content_sha256:
                raise RegistryError(
                    f"{d.ref} exists on hf://{repo_id} with content {there.content_sha256[:16]}… but this registry's "
                    f"is {d.content_sha256[:16]}…; push it under another name (p2pz direction combine "
                    f"{d.name}@{d.version}=1 --name NEW) or pull the repo's version")
            skipped.append(d.ref)
            continue
        same = next((o for o in remote.directions if o.name == d.name and o.content_sha256 == d.content_sha256), None)
        if same is not None:  # the same content already there under another version: one identity
            skipped.append(f"{d.ref} (on the Hub as {same.ref})")
            continue
        new_dirs.append(d)
        added.append(d.ref)
    merged = remote.model_copy(deep=True)
    merged.updated_at = dt.datetime.now(dt.timezone.utc).isoformat()
    merged.format_version = HUB_FORMAT_VERSION  # a version 1 index is rewritten as this version
    have_enc = {e.fingerprint for e in merged.encoders}
    merged.encoders += [e for e in local.encoders if e.fingerprint not in have_enc]
    have_bank = {b.sha256 for b in merged.banks}
    merged.banks += [b for b in local.banks if b.sha256 not in have_bank]
    have_emb = {e.file for e in merged.embeddings}
    merged.embeddings += [e for e in local.embeddings if e.file not in have_emb]
    # fill-once, as in a registry: an embedding the repo holds without a token-aligned mean (pushed before format
    # 3) gains ours, its file sent again with the tensor ``token``
    mine = {e.file: e for e in local.embeddings}
    for j, e in enumerate(merged.embeddings):
        ours = mine.get(e.file)
        if (e.token_word is None and ours is not None and ours.token_word is not None
                and (ours.bank, ours.encoder) == (e.bank, e.encoder)):
            merged.embeddings[j] = ours
            merged.files.pop(e.file, None)
    merged.directions += new_dirs
    have_st = {(s.direction, s.weights_sha256) for s in merged.students}
    merged.students += [s for s in local.students if (s.direction, s.weights_sha256) not in have_st]
    wanted = ({b.file for b in merged.banks if b.file} | {e.file for e in merged.embeddings}
              | {d.file for d in merged.directions} | {s.file for s in merged.students}
              | {f"{d.summary['preview']}/{w}.png" for d in new_dirs if "preview" in d.summary
                 for w in ("source_thumb", "edit_thumb")})
    send = {p: files[p] for p in wanted if p in files and p not in merged.files}
    for p, data in send.items():
        merged.files[p] = HubFile(sha256=_sha(data), size=len(data))
    return merged, send, added, skipped


def push(reg, url: str, refs: list[str], *, private: bool = False, message: str | None = None,
         students: bool = False) -> dict:
    """Push ``refs`` (default: every direction version) to ``hf://OWNER/REPO`` → what was sent."""
    from huggingface_hub import CommitOperationAdd, HfApi, hf_hub_download  # lazy: huggingface_hub
    from huggingface_hub import errors as hf

    from .archive import collect_library
    from .card import model_card

    repo_id, revision = parse_repo(url)
    if revision:
        raise RegistryError(f"push writes to the repo's main branch; drop @{revision} from {url}")
    if offline():
        raise RegistryError("HF_HUB_OFFLINE is set: pushing needs the Hub; unset it")
    refs = list(refs) or [d.ref for d in reg.directions(include_deprecated=True)]
    if not refs:
        raise RegistryError("this registry holds no directions to push; build one with p2pz direction build")
    man, tensors = collect_library(reg.db, refs, students=students)
    local, files = _local_files(reg, man, tensors, students)
    api = HfApi(endpoint=_endpoint(), token=_token())
    try:
        api.create_repo(repo_id, private=private, exist_ok=True)
        head = api.repo_info(repo_id, revision="main").sha
        try:
            raw = Path(hf_hub_download(repo_id, INDEX, revision=head, endpoint=_endpoint(), token=_token())).read_bytes()
            remote = parse_index(raw)
        except hf.EntryNotFoundError:
            remote = HubIndex()
        index, send, added, skipped = _merge(remote, local, files, repo_id)
        if not added and not any(p.startswith("students/") for p in send):
            return {"repo": repo_id, "commit": head, "added": [], "skipped": skipped, "files": 0, "bytes": 0}
        body = json.dumps(index.model_dump(mode="json"), indent=1, ensure_ascii=False).encode()
        ops = [CommitOperationAdd(path_in_repo=p, path_or_fileobj=data) for p, data in sorted(send.items())]
        ops += [CommitOperationAdd(path_in_repo=INDEX, path_or_fileobj=body),
                CommitOperationAdd(path_in_repo=CARD, path_or_fileobj=model_card(repo_id, index).encode())]
        title = message or ("p2pz: add " + ", ".join(added[:20]) + (f" and {len(added) - 20} more" if len(added) > 20
                                                                       else "") if added else "p2pz: add students")
        info = api.create_commit(repo_id, operations=ops, commit_message=title,
                                 commit_description="\n".join(f"- {r}" for r in added), parent_commit=head)
    except RegistryError:
        raise
    except Exception as exc:  # huggingface_hub and HTTP errors: one line, no token
        _raise_hub_error(exc, repo_id, writing=True)
    return {"repo": repo_id, "commit": info.oid, "added": added, "skipped": skipped, "files": len(send),
            "bytes": sum(len(v) for v in send.values()), "url": info.commit_url}


# --- pull ----------------------------------------------------------------------------------------------------

def _closure(index: HubIndex, refs: list[str], repo_id: str) -> list[HubDirection]:
    """The directions ``refs`` name (bare names: every version) with a combination's components, components
    first."""
    if not refs:
        chosen = list(index.directions)
    else:
        chosen = []
        for ref in refs:
            name, version = parse_ref(ref, "direction")
            hits = [d for d in index.directions if d.name == name and (version is None or d.version == version)]
            if not hits:
                raise RegistryError(f"hf://{repo_id} has no direction {ref}; it holds "
                                    + ", ".join(sorted({d.name for d in index.directions})[:20]))
            chosen += hits
    from p2pz.store.repository import MAX_NESTING  # lazy: sqlalchemy

    out: dict[str, HubDirection] = {}

    def visit(d: HubDirection, depth: int) -> None:
        if depth > MAX_NESTING:  # the registry's own limit: whatever a push sends, a pull takes
            raise RegistryError(f"{INDEX}: combination {d.ref} is nested more than {MAX_NESTING} deep")
        for c in d.components or ():
            comp = index.direction(c.ref)
            if comp is None:
                raise RegistryError(f"{INDEX}: {d.ref} combines {c.ref}, which the repo does not hold")
            visit(comp, depth + 1)
        out.setdefault(d.ref, d)
    for d in chosen:
        visit(d, 0)
    return list(out.values())


def _read_st(data: bytes, path: str) -> dict:
    from safetensors import SafetensorError  # lazy: safetensors
    from safetensors.numpy import load

    try:
        return load(data)
    except (SafetensorError, ValueError, TypeError, OverflowError):
        raise RegistryError(f"{path} is not a valid safetensors file") from None


def _to_library(index: HubIndex, chosen: list[HubDirection], blobs: dict[str, bytes]) -> tuple[dict, dict]:
    """The chosen directions as a ``.p2pz`` manifest (raw) and its tensors, for :func:`~.manifest.validate`."""
    encoders = {e.fingerprint: e for e in index.encoders}
    banks = {b.sha256: b for b in index.banks}
    embs = {e.file: e for e in index.embeddings}
    man = {"format": FORMAT, "format_version": FORMAT_VERSION, "encoders": [], "banks": [], "embeddings": [],
           "directions": [], "students": []}
    tensors: dict = {}
    enc_seen, bank_at, emb_at, dir_at = set(), {}, {}, {}

    def bank(sha: str) -> int:
        if sha not in bank_at:
            b = banks.get(sha)
            if b is None:
                raise RegistryError(f"{INDEX} names bank {sha[:16]}, which it does not list")
            sentences = blobs[b.file].decode("utf-8").removesuffix("\n").split("\n") if b.file else []
            bank_at[sha] = len(man["banks"])
            man["banks"].append(BankEntry(concept=b.concept, version=b.version, generator=b.generator, params=b.params,
                                          sentences=sentences, sha256=b.sha256, note=b.note,
                                          created_at=b.created_at).model_dump(mode="json"))
        return bank_at[sha]

    def encoder(fp: str) -> None:
        if fp not in encoders:
            raise RegistryError(f"{INDEX} names encoder {fp[:16]}, which it does not list")
        if fp not in enc_seen:
            enc_seen.add(fp)
            man["encoders"].append(encoders[fp].model_dump(mode="json"))

    def embedding(path: str) -> int:
        if path not in emb_at:
            e = embs.get(path)
            if e is None:
                raise RegistryError(f"{INDEX} names embedding {path}, which it does not list")
            encoder(e.encoder)
            i = emb_at[path] = len(man["embeddings"])
            st = _read_st(blobs[path], path)
            for k in ("mean", "key") + (("token",) if e.token_count else ()):
                if k not in st:
                    raise RegistryError(f"{path} lacks the tensor {k!r}" + (
                        f" that {INDEX} declares (token_count {e.token_count}); nothing was imported"
                        if k == "token" else ""))
                tensors[f"embedding/{i}/{k}"] = st[k]
            if "token" in st and not e.token_count:
                raise RegistryError(f"{path} holds a tensor 'token' that {INDEX} does not declare (no token_count); "
                                    "refused, nothing was imported")
            man["embeddings"].append(EmbeddingEntry(bank=bank(e.bank), encoder=e.encoder, key_kind=e.key_kind,
                                                    token_word=e.token_word, token_count=e.token_count
                                                    ).model_dump(mode="json", exclude_none=True))
        return emb_at[path]

    for d in chosen:
        encoder(d.encoder)
        st = _read_st(blobs[d.file], d.file)
        if "key" not in st:
            raise RegistryError(f"{d.file} lacks the tensor 'key'")
        # what a reader without p2pz uses: finite, as the key must be (p2pz itself rebuilds them from the embeddings)
        for k in ("delta", "delta_pooled", "delta_token"):
            if k in st and not np.isfinite(st[k]).all():
                raise RegistryError(f"{d.file}: tensor {k!r} holds NaN or infinite values; refused, nothing was "
                                    "imported")
        i = dir_at[d.ref] = len(man["directions"])
        tensors[f"direction/{i}/key"] = st["key"]
        if d.kind == "pair":
            if not (d.source and d.target):
                raise RegistryError(f"{INDEX}: pair {d.ref} lacks its source or target embedding")
            fields = {"source": embedding(d.source), "target": embedding(d.target)}
        else:
            fields = {"components": [ComponentEntry(direction=dir_at[c.ref], weight=c.weight)
                                     for c in d.components or ()]}
        man["directions"].append(DirectionEntry(
            name=d.name, version=d.version, kind=d.kind, encoder=d.encoder, scale=d.scale, tags=d.tags, note=d.note,
            deprecated=d.deprecated, content_sha256=d.content_sha256, created_at=d.created_at, origin=d.origin,
            **fields).model_dump(mode="json", exclude_none=True))
    refs = set(dir_at)
    for s in index.students:
        if s.direction in refs:
            i = len(man["students"])
            tensors[f"student/{i}/weights"] = np.frombuffer(blobs[s.file], dtype=np.uint8)
            man["students"].append(StudentEntry(direction=dir_at[s.direction], version=s.version, config=s.config,
                                                weights_bytes=s.weights_bytes, weights_sha256=s.weights_sha256,
                                                dataset_sha256=s.dataset_sha256, params=s.params, metrics=s.metrics,
                                                created_at=s.created_at, deprecated=s.deprecated).model_dump(mode="json"))
    return man, tensors


def _needed(index: HubIndex, chosen: list[HubDirection]) -> list[str]:
    refs = {d.ref for d in chosen}
    paths = set()
    embs = {e.file: e for e in index.embeddings}
    banks = {b.sha256: b for b in index.banks}
    for d in chosen:
        paths.add(d.file)
        for side in (d.source, d.target):
            if side:
                paths.add(side)
                e = embs.get(side)
                b = banks.get(e.bank) if e else None
                if b and b.file:
                    paths.add(b.file)
    paths |= {s.file for s in index.students if s.direction in refs}
    return sorted(paths)


def pull(reg, url: str, refs: list[str], *, renumber: bool = False, progress: bool = False) -> dict:
    """Pull ``refs`` (default: everything) from ``hf://OWNER/REPO[@REVISION]`` into the registry, all or nothing."""
    from huggingface_hub import hf_hub_download  # lazy: huggingface_hub
    from huggingface_hub.errors import RemoteEntryNotFoundError

    from p2pz.store.progress import progress_bar

    from .archive import store_library

    repo_id, revision = parse_repo(url)
    local_only = offline()
    kw = {"endpoint": _endpoint(), "token": _token(), "local_files_only": local_only}
    try:
        # One resolve fixes the commit: the index is read at the revision and lands in the cache's snapshot folder
        # of the commit it resolved to (so offline pulls of the same revision find it); everything else is read at
        # that commit, whatever the branch does meanwhile.
        index_path = Path(hf_hub_download(repo_id, INDEX, revision=revision or "main", **kw))
        commit = index_path.parent.name
        index = parse_index(index_path.read_bytes())
        chosen = _closure(index, list(refs), repo_id)
        paths = _needed(index, chosen)
        bank_files = {b.file for b in index.banks if b.file}
        blobs: dict[str, bytes] = {}
        with progress_bar(len(paths), f"pull {repo_id}", enabled=progress, unit="file") as bar:
            for p in paths:
                meta = index.files.get(p)
                if meta is None:
                    raise RegistryError(f"{INDEX} lists no sha256 for {p}; the repo is incomplete")
                try:
                    local = Path(hf_hub_download(repo_id, p, revision=commit, **kw))
                except RemoteEntryNotFoundError:
                    raise RegistryError(f"hf://{repo_id} lacks {p}, which its {INDEX} lists: the repo is incomplete "
                                        "(push it again); nothing was imported") from None
                size = local.stat().st_size
                if size != meta.size:
                    raise RegistryError(f"{p} is {size} bytes, not the {meta.size} {INDEX} records: refused (tampered "
                                        "or truncated); nothing was imported")
                data = local.read_bytes()
                if _sha(data) != meta.sha256:
                    raise RegistryError(f"{p} has sha256 {_sha(data)[:16]}…, not the {meta.sha256[:16]}… {INDEX} "
                                        "records: refused (tampered?); nothing was imported")
                if p in bank_files:  # sentences are UTF-8 text
                    try:
                        data.decode("utf-8")
                    except UnicodeDecodeError as exc:
                        raise RegistryError(f"{p} in hf://{repo_id} is not UTF-8 text (byte {exc.start}): refused; "
                                            "nothing was imported") from None
                blobs[p] = data
                bar.update()
    except RegistryError:
        raise
    except Exception as exc:  # huggingface_hub and HTTP errors: one line, no token; nothing imported yet
        _raise_hub_error(exc, repo_id, writing=False)
    raw, tensors = _to_library(index, chosen, blobs)
    man, checked = validate(raw, tensors)
    out = store_library(reg.db, man, checked, source=f"hf://{repo_id}", revision=commit, renumber=renumber)
    return {"repo": repo_id, "revision": commit, "asked": revision or "main", **out}
