"""The HTTP API's request and response models (pydantic): they are the API's documentation at ``/docs``."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from p2pz.store.repository import MAX_BANK_SENTENCES


class Error(BaseModel):
    error: str = Field(description="One line naming the problem and the fix.")


class Previews(BaseModel):
    source: str = Field(description="URL of the preview's source image (thumbnail).")
    edit: str = Field(description="URL of the edited preview (thumbnail).")
    source_full: str
    edit_full: str
    image: str = Field(description="Name of the preview image.")


class DirectionOut(BaseModel):
    model_config = ConfigDict(extra="allow")
    name: str
    version: int
    ref: str = Field(description="name@version")
    kind: Literal["pair", "combination"]
    source: str | None = Field(None, description="Source bank ref (pair directions).")
    target: str | None = None
    scale: float
    components: list[dict] | None = None
    encoder: str = Field(description="Text-encoder fingerprint.")
    encoder_model: str | None = None
    hidden_size: int | None = None
    family: Literal["sd", "sdxl"] = Field("sd", description="sd: one text encoder (SD 1.x/2.x); sdxl: the pair, "
                                          "with Δ_pooled")
    tags: list[str]
    note: str | None = None
    deprecated: bool
    created_at: str
    content_sha256: str = Field(description="The direction's identity across registries (its vectors and "
                                "scale); ``sha256:HEX`` is accepted wherever a ref is.")
    origin: dict | None = Field(None, description="Where an imported or pulled direction came from (source, "
                                "revision, ref there, its own origin).")
    scores: dict[str, float] = Field(default_factory=dict, description="Latest evaluation scores (p2pz eval).")
    preview: Previews | None = None
    url: str = Field(description="The direction's page.")


class DirectionPage(BaseModel):
    total: int
    page: int
    per_page: int
    pages: int
    sort: str
    q: str | None
    items: list[DirectionOut]


class BankSample(BaseModel):
    ref: str
    concept: str
    version: int
    generator: str
    n_sentences: int
    sha256: str
    sample: list[str] = Field(description="The bank's first sentences.")


class DirectionDetail(BaseModel):
    direction: DirectionOut
    vector: dict[str, Any] = Field(description="Shape and norms of Δ; ``token``: Δ_token's shape, norm, word pair "
                                   "and bank sentences containing each word, or ``{\"none\": why}``.")
    banks: dict[str, BankSample] = Field(description="source and target banks (pair directions).")
    evaluation: dict[str, Any] | None = Field(None, description="The latest evaluation run.")
    versions: list[DirectionOut]
    students: list[dict]
    previews: list[Previews]
    diagnostics_url: str


class SearchHitOut(BaseModel):
    score: float = Field(description="Cosine similarity of search keys.")
    direction: DirectionOut


class SearchOut(BaseModel):
    query: dict[str, str]
    items: list[SearchHitOut]


class BankOut(BaseModel):
    concept: str
    version: int
    ref: str
    generator: str
    params: dict
    n_sentences: int
    sha256: str
    created_at: str
    note: str | None = None
    sentences: list[str] | None = Field(None, description="One version's sentences ``offset`` … ``offset + limit`` "
                                        "(of ``n_sentences``); left out of the listing of every version.")
    offset: int | None = None
    limit: int | None = None


class BuildIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    source: str = Field(description="Source concept or bank ref (cat, cat@2).")
    target: str
    name: str | None = None
    n: int = Field(1000, ge=1, le=MAX_BANK_SENTENCES, description="Sentences per bank when one is made (templates).")
    seed: int = 0
    scale: float = 1.0
    tags: list[str] = Field(default_factory=list)
    note: str | None = None
    kind: Literal["auto", "object", "style", "attribute", "scene"] | None = Field(
        None, description="Template set for banks that are made [default: auto, chosen from the concept].")


class TagIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    tag: str = Field(min_length=1, max_length=100)


class JobResult(BaseModel):
    model_config = ConfigDict(extra="allow")
    direction: str
    url: str | None = Field(None, description="Download URL of the result image (edit jobs).")


class JobOut(BaseModel):
    id: str
    kind: Literal["edit", "preview"]
    status: Literal["queued", "running", "done", "failed"]
    progress: float = Field(description="0 … 1")
    stage: str | None
    params: dict
    results: list[JobResult]
    error: str | None
    created_at: str | None
    started_at: str | None
    finished_at: str | None
    url: str
    input_url: str | None = None


class ImportOut(BaseModel):
    model_config = ConfigDict(extra="allow")
    added: dict[str, int]


class Health(BaseModel):
    ok: bool
    version: str
    read_only: bool
    auth: bool = Field(description="Whether writes need a bearer token.")
    directions: int
