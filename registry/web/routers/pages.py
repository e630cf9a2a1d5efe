"""The HTML pages: the gallery (with search), a direction's page and the apply page. Server-rendered Jinja2
templates over the same functions as the JSON API; a little vanilla JavaScript (``static/app.js``) for the
apply page's job progress and the direction page's diagnostics. No build step, no CDN: works offline."""

from __future__ import annotations

import logging
import math
from pathlib import Path

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates

from p2pz.store.repository import METRICS, SORTS

from p2pz.registry.library.records import NotFound, RegistryError, token_line
from ..deps import State, state
from ..errors import DATABASE_ERROR, HTTPError, from_database
from ..views import MAX_PAGE, detail, direction_out, directions_out, run_search

router = APIRouter(include_in_schema=False)
log = logging.getLogger("p2pz.web")
templates = Jinja2Templates(directory=str(Path(__file__).resolve().parent.parent / "templates"))
templates.env.filters["token_line"] = token_line  # Δ_token's line, the same as ``p2pz direction show``'s


def _render(request: Request, name: str, status: int = 200, **context) -> HTMLResponse:
    st: State = request.app.state.p2pz
    context.update(status_code=status, read_only=st.settings.read_only, auth=bool(st.settings.token),
                   metrics=METRICS, sorts=SORTS)
    return templates.TemplateResponse(request, name, context, status_code=status)


def _error_page(request: Request, exc: Exception) -> HTMLResponse:
    if from_database(exc):  # the database's host, user and name are for the server log only
        log.error("database error on %s %s: %s", request.method, request.url.path, exc)
        return _render(request, "error.html", status=500, message=DATABASE_ERROR)
    status = 404 if isinstance(exc, NotFound) else getattr(exc, "status", 400)
    return _render(request, "error.html", status=status, message=str(exc))


@router.get("/", response_class=HTMLResponse)
def gallery(request: Request, q: str | None = Query(None, max_length=200), sort: str = Query("name"),
            page: int = Query(1, ge=1, le=MAX_PAGE), similar: str | None = Query(None, max_length=210),
            source: str | None = Query(None, max_length=200), target: str | None = Query(None, max_length=200),
            st: State = Depends(state)):
    per_page = st.settings.per_page
    search = None
    try:
        if similar or source or target:
            query, hits = run_search(st, similar or None, source or None, target or None, per_page)
            scores = st.registry.scores([h.direction for h in hits])
            cards = [{**direction_out(h.direction, scores.get(h.direction.ref)), "similarity": h.score}
                     for h in hits]
            total, pages = len(cards), 1
            search = query
        else:
            total, ds = st.registry.page(query=q, sort=sort, offset=(page - 1) * per_page, limit=per_page)
            cards = directions_out(st.registry, ds)
            pages = max(1, math.ceil(total / per_page))
    except (RegistryError, HTTPError) as exc:
        return _error_page(request, exc)
    return _render(request, "gallery.html", cards=cards, total=total, page=page, pages=pages, q=q or "",
                   sort=sort, similar=similar or "", source=source or "", target=target or "", search=search)


@router.get("/d/{ref}", response_class=HTMLResponse)
def direction_page(request: Request, ref: str, st: State = Depends(state)):
    try:
        info = detail(st, ref)
    except RegistryError as exc:
        return _error_page(request, exc)
    return _render(request, "direction.html", info=info, d=info["direction"])


@router.get("/apply", response_class=HTMLResponse)
def apply_page(request: Request, d: list[str] = Query([], max_length=8), st: State = Depends(state)):
    chosen = []
    try:
        for ref in d:
            chosen.append(st.registry.get(ref).ref)
    except RegistryError as exc:
        return _error_page(request, exc)
    _, options = st.registry.page(limit=200)
    return _render(request, "apply.html", chosen=chosen, options=[o.ref for o in options],
                   sample=st.sample_image().name)
