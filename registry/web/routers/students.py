"""``/api/students``: list the trained students; deprecate and undeprecate one (reversible flags)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Path

from p2pz.registry.library.api import Registry

from ..deps import registry, require_write
from ..schemas import Error

router = APIRouter(prefix="/api/students", tags=["students"])
ERRORS = {400: {"model": Error}, 404: {"model": Error}}
WRITE_ERRORS = {**ERRORS, 401: {"model": Error}, 403: {"model": Error}}
VERSION = Path(..., ge=1, le=2**31 - 1, description="The student's version.")


def student_out(record) -> dict:
    info = record.to_dict()
    info["params"] = {k: v for k, v in info["params"].items() if k != "run"}  # a path on the server
    return info


@router.get("", response_model=list[dict], responses=ERRORS)
def list_students(reg: Registry = Depends(registry)):
    """Every stored student (without weights), deprecated ones flagged."""
    return [student_out(r) for r in reg.students()]


@router.post("/{ref}/{version}/deprecate", response_model=dict, responses=WRITE_ERRORS,
             dependencies=[Depends(require_write)])
def deprecate_student(ref: str, version: int = VERSION, reg: Registry = Depends(registry)):
    """Deprecate student ``version`` of direction ``ref`` (``cat-to-dog@1``): applied only when asked for by
    version."""
    return student_out(reg.deprecate_student(ref, version))


@router.post("/{ref}/{version}/undeprecate", response_model=dict, responses=WRITE_ERRORS,
             dependencies=[Depends(require_write)])
def undeprecate_student(ref: str, version: int = VERSION, reg: Registry = Depends(registry)):
    """Undo a student's deprecation."""
    return student_out(reg.undeprecate_student(ref, version))
