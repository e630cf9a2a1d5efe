"""``/api/search``: directions similar to a stored one, or to the one a word pair would make."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Query

from ..deps import State, state
from ..errors import HTTPError
from ..schemas import Error, SearchOut
from ..views import direction_out

router = APIRouter(prefix="/api", tags=["search"])


def run_search(st: State, direction: str | None, source: str | None, target: str | None, k: int):
    if direction and (source or target):
        raise HTTPError(400, "search by direction= or by source= and target=, not both")
    if direction:
        with st.search_lock:
            hits = st.registry.search(direction, k)
        return {"direction": direction}, hits
    if source and target:
        with st.search_lock:  # the first pair search of a model loads its text encoder
            hits = st.registry.search_pair(source, target, k, model=st.settings.model)
        return {"source": source, "target": target}, hits
    raise HTTPError(400, "give direction=NAME[@V], or both source= and target= (a word pair)")


@router.get("/search", response_model=SearchOut, responses={400: {"model": Error}, 404: {"model": Error}})
def search(direction: str | None = Query(None, max_length=210, description="A stored direction, name[@v]."),
           source: str | None = Query(None, max_length=200), target: str | None = Query(None, max_length=200),
           k: int = Query(10, ge=1, le=100), st: State = Depends(state)):
    """Nearest directions by cosine of search keys, same text encoder, best first."""
    query, hits = run_search(st, direction, source, target, k)
    scores = st.registry.scores([h.direction for h in hits])
    return {"query": query, "items": [{"score": round(h.score, 6), "direction": direction_out(
        h.direction, scores.get(h.direction.ref))} for h in hits]}
