"""``/api/banks/{concept}``: a concept's sentence banks."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Query

from p2pz.registry.library.api import Registry

from ..deps import registry
from ..schemas import BankOut, Error

router = APIRouter(prefix="/api/banks", tags=["banks"])
MAX_LIMIT = 1000  # sentences per answer: a bank is paged, never sent (or read) whole


@router.get("/{concept}", response_model=list[BankOut], responses={400: {"model": Error}, 404: {"model": Error}})
def banks(concept: str, offset: int = Query(0, ge=0, le=2**31 - 1, description="First sentence (cat@2 only)."),
          limit: int = Query(100, ge=0, le=MAX_LIMIT, description="Sentences to return (cat@2 only)."),
          reg: Registry = Depends(registry)):
    """Every version of a concept's bank (``cat``), or one version with a page of its sentences (``cat@2``:
    ``offset`` … ``offset + limit`` of ``n_sentences``)."""
    if "@" in concept:
        return [{**reg.bank(concept, offset=offset, limit=limit).to_dict(sentences=True), "offset": offset,
                 "limit": limit}]
    reg.bank(concept, limit=0)  # validates the name; 404 when the concept has no bank; reads no sentence
    return [b.to_dict() for b in reg.banks(concept)]
