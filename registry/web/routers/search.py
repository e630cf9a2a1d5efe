"""``/api/search``: directions similar to a stored one, or to the one a word pair would make."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Query

from ..deps import State, state
from ..schemas import Error, SearchOut
from ..views import direction_out, run_search

router = APIRouter(prefix="/api", tags=["search"])


@router.get("/search", response_model=SearchOut, responses={400: {"model": Error}, 404: {"model": Error}, 429: {"model": Error}})
def search(direction: str | None = Query(None, max_length=210, description="A stored direction, name[@v]."),
           source: str | None = Query(None, max_length=200), target: str | None = Query(None, max_length=200),
           k: int = Query(10, ge=1, le=100), st: State = Depends(state)):
    """Nearest directions by cosine of search keys, same text encoder, best first."""
    query, hits = run_search(st, direction, source, target, k)
    scores = st.registry.scores([h.direction for h in hits])
    return {"query": query, "items": [{"score": round(h.score, 6), "direction": direction_out(
        h.direction, scores.get(h.direction.ref))} for h in hits]}
