"""``/api/banks/{concept}``: a concept's sentence banks."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from p2pz.registry.library.api import Registry

from ..deps import registry
from ..schemas import BankOut, Error

router = APIRouter(prefix="/api/banks", tags=["banks"])


@router.get("/{concept}", response_model=list[BankOut], responses={400: {"model": Error}, 404: {"model": Error}})
def banks(concept: str, reg: Registry = Depends(registry)):
    """Every version of a concept's bank (``cat``), or one version with all its sentences (``cat@2``)."""
    if "@" in concept:
        return [reg.bank(concept).to_dict(sentences=True)]
    reg.bank(concept)  # validates the name; 404 when the concept has no bank
    return [b.to_dict() for b in reg.banks(concept)]
