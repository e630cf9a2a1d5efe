"""Preview images, the bundled sample image and the health check."""

from __future__ import annotations

from fastapi import APIRouter, Depends
from fastapi.responses import FileResponse

from p2pz.registry.library import previews as _previews
from p2pz.registry.library.records import NotFound
from p2pz.store.version import package_version

from p2pz.registry.library.api import Registry

from ..deps import registry, settings
from ..settings import Settings
from ..schemas import Error, Health

router = APIRouter(prefix="/api", tags=["files"])


@router.get("/previews/{key}/{which}", response_class=FileResponse, responses={404: {"model": Error}})
def preview(key: str, which: str):
    """A preview image: ``which`` is source, edit, source_thumb or edit_thumb (``key`` from a direction's
    ``preview``)."""
    return FileResponse(_previews.preview_file(key, which), media_type="image/png",
                        headers={"Cache-Control": "public, max-age=31536000, immutable"})


@router.get("/samples/{name}", response_class=FileResponse, responses={404: {"model": Error}})
def sample(name: str):
    """A bundled sample image (``sample.png``, the photo; ``shapes-sample.png``, the shapes model's), for trying an
    edit without an upload."""
    samples = {p.name: p for p in (_previews.SAMPLE_IMAGE, _previews.SHAPES_SAMPLE_IMAGE)}
    if name not in samples:
        raise NotFound(f"no sample {name!r}; the samples are {', '.join(samples)}")
    return FileResponse(samples[name], media_type="image/png")


@router.get("/health", response_model=Health)
def health(reg: Registry = Depends(registry), cfg: Settings = Depends(settings)):
    total, _ = reg.page(limit=0)
    return {"ok": True, "version": package_version(), "read_only": cfg.read_only, "auth": bool(cfg.token),
            "directions": total}
