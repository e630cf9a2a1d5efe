"""``/api/directions``: list, show, diagnostics, build, tag/untag, deprecate/undeprecate, render a preview."""

from __future__ import annotations

import math

from fastapi import APIRouter, Depends, Query

from p2pz.generators import TemplateOptions
from p2pz.store.repository import METRICS, SORTS

from p2pz.registry.library.api import Registry

from ..deps import State, jobs, registry, require_write, settings, state
from ..jobs import Jobs
from ..settings import Settings
from ..schemas import BuildIn, DirectionDetail, DirectionOut, DirectionPage, Error, JobOut, TagIn
from ..views import MAX_PAGE, detail, direction_out, directions_out, job_out

router = APIRouter(prefix="/api/directions", tags=["directions"])
ERRORS = {400: {"model": Error}, 404: {"model": Error}}
WRITE_ERRORS = {**ERRORS, 401: {"model": Error}, 403: {"model": Error}}
SORT_HELP = f"{' or '.join(SORTS)} (date: newest first), or a metric, best first: {', '.join(METRICS)}"


@router.get("", response_model=DirectionPage, responses=ERRORS)
def list_directions(q: str | None = Query(None, max_length=200, description="Matches name, concepts and tags."),
                    tag: str | None = Query(None, max_length=100),
                    sort: str = Query("name", description=SORT_HELP),
                    page: int = Query(1, ge=1, le=MAX_PAGE), per_page: int | None = Query(None, ge=1, le=200),
                    deprecated: bool = Query(False, description="Include deprecated versions."),
                    reg: Registry = Depends(registry), cfg: Settings = Depends(settings)):
    """One page of directions with their latest scores and preview thumbnails."""
    per_page = per_page or cfg.per_page
    total, ds = reg.page(query=q, tag=tag, include_deprecated=deprecated, sort=sort,
                                 offset=(page - 1) * per_page, limit=per_page)
    return {"total": total, "page": page, "per_page": per_page, "pages": max(1, math.ceil(total / per_page)),
            "sort": sort, "q": q, "items": directions_out(reg, ds)}


@router.get("/{ref}", response_model=DirectionDetail, responses=ERRORS)
def show_direction(ref: str, st: State = Depends(state)):
    """A direction (``name`` for the latest version, or ``name@v``): provenance, banks with sample sentences,
    Δ's statistics, the latest scores, every version, students and previews."""
    return detail(st, ref)


@router.get("/{ref}/diagnostics", responses=ERRORS)
def direction_diagnostics(ref: str, st: State = Depends(state)):
    """Text-side diagnostics (``p2pz direction inspect``): stability, word-swap baseline, token profile, bank
    health, neighbours, checks. The first call per version may load the text encoder."""
    d = st.registry.get(ref)
    if d.ref not in st.diagnostics:
        st.diagnostics[d.ref] = st.registry.inspect(d.ref).to_dict()
    return st.diagnostics[d.ref]


@router.post("", response_model=DirectionOut, status_code=201, responses=WRITE_ERRORS,
             dependencies=[Depends(require_write)])
def build_direction(body: BuildIn, reg: Registry = Depends(registry), cfg: Settings = Depends(settings)):
    """Build Δ = mean(target bank) − mean(source bank) with the server's model (``p2pz direction build``);
    missing banks are made from templates. Building the same again returns the stored version."""
    options = TemplateOptions(template_kind=body.kind) if body.kind else None
    d = reg.build_direction(body.source, body.target, cfg.model, name=body.name, n=body.n,
                                    seed=body.seed, scale=body.scale, tags=body.tags, note=body.note,
                                    device=cfg.device, generator=options)
    return direction_out(d)


@router.post("/{ref}/tags", response_model=DirectionOut, responses=WRITE_ERRORS,
             dependencies=[Depends(require_write)])
def tag_direction(ref: str, body: TagIn, reg: Registry = Depends(registry)):
    """Add a tag to a direction version."""
    return direction_out(reg.tag(ref, body.tag))


@router.post("/{ref}/deprecate", response_model=DirectionOut, responses=WRITE_ERRORS,
             dependencies=[Depends(require_write)])
def deprecate_direction(ref: str, reg: Registry = Depends(registry)):
    """Deprecate a direction version (kept, hidden from listings and search)."""
    return direction_out(reg.deprecate(ref))


@router.post("/{ref}/untag", response_model=DirectionOut, responses=WRITE_ERRORS,
             dependencies=[Depends(require_write)])
def untag_direction(ref: str, body: TagIn, reg: Registry = Depends(registry)):
    """Remove a tag from a direction version (the reverse of ``…/tags``; 404 when it does not carry it)."""
    return direction_out(reg.untag(ref, body.tag))


@router.post("/{ref}/undeprecate", response_model=DirectionOut, responses=WRITE_ERRORS,
             dependencies=[Depends(require_write)])
def undeprecate_direction(ref: str, reg: Registry = Depends(registry)):
    """Undo a deprecation: the version is listed and searchable again."""
    return direction_out(reg.undeprecate(ref))


@router.post("/{ref}/preview", response_model=JobOut, status_code=202, responses=WRITE_ERRORS,
             dependencies=[Depends(require_write)])
def render_preview(ref: str, queue: Jobs = Depends(jobs), cfg: Settings = Depends(settings)):
    """Queue the preview render of a direction on the bundled sample image → the job."""
    return job_out(queue.submit_preview(ref, steps=cfg.preview_steps, model=cfg.model))

