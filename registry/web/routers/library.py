"""``/api/export`` and ``/api/import``: ``.p2pz`` libraries (safetensors + manifest, verified on import)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from urllib.parse import quote

from fastapi import APIRouter, Depends, File, Header, Query, Response, UploadFile
from fastapi.responses import StreamingResponse
from starlette.background import BackgroundTask

from p2pz.registry.web.jobs import UploadError
from p2pz.registry.library.api import Registry

from ..deps import State, heavy_slot, registry, require_write, settings, state
from ..guard import has_token
from ..settings import Settings
from ..schemas import Error, ImportOut

router = APIRouter(prefix="/api", tags=["library"])


@router.get("/export", response_class=StreamingResponse,
            responses={200: {"content": {"application/zip": {}}}, 304: {"description": "Not modified (ETag)"},
                       400: {"model": Error}, 404: {"model": Error}, 429: {"model": Error}})
def export(names: str = Query(..., max_length=10_000, description="Comma-separated name[@v] refs."),
           if_none_match: str | None = Header(None, description="A previous answer's ETag: 304 if unchanged."),
           authorization: str | None = Header(None, description="Bearer TOKEN: not held to the anonymous budget "
                                              "of new cache entries."),
           st: State = Depends(state)):
    """Download a ``.p2pz`` library of the named directions with full provenance. Served from the export cache
    (content-addressed: the same directions in any order are one entry; repeated downloads cost one small read
    and take no slot); a miss is built in one of the server's few slots for expensive reads (429 with
    ``Retry-After`` when all are busy). Anonymous callers (no token) add at most ``export_budget`` new entries
    per window; past it their misses are built for that answer only (``X-P2PZ-Cache: uncached``) and deleted.
    Streamed from disk; the weak ``ETag`` is the library's content key (a rebuild after eviction has the same
    content, but the manifest's date may differ)."""
    refs = [n.strip() for n in names.split(",") if n.strip()]
    anonymous = not (st.settings.token and has_token(st.settings, authorization))
    uncached: list[bool] = []

    def keep() -> bool:  # asked on a miss: may this build enter the cache?
        if anonymous and not st.export_budget.take():
            uncached.append(True)
            return False
        return True

    for attempt in range(2):
        uncached.clear()
        path, hit = st.registry.export_cached(refs, build=lambda: heavy_slot(st, "export", "building exports"),
                                              keep=keep)
        etag = f'W/"{path.stem}"'
        if hit and etag_matches(if_none_match, etag):
            return Response(status_code=304, headers={"ETag": etag})
        try:  # held open from here: evicting the entry meanwhile cannot cut the download short
            handle = open(path, "rb")
            break
        except FileNotFoundError:  # evicted between the lookup and the open: look it up (build it) again
            if attempt:
                raise
    try:
        if uncached:  # built for this answer only: the open handle reads it, nothing is left on disk
            path.unlink(missing_ok=True)
            path.parent.rmdir()
        elif not hit:
            st.registry.evict_exports(keep=path)
        size = os.fstat(handle.fileno()).st_size
    except BaseException:
        handle.close()
        raise
    filename = (refs[0].replace("@", "-v").replace(":", "-") if len(refs) == 1 else "library") + ".p2pz"
    # RFC 6266: a plain ASCII filename for every client, the exact one as filename*=utf-8''… when it differs
    plain = "".join(c if c.isascii() and c.isprintable() and c not in '"\\' else "_" for c in filename)
    disposition = f'attachment; filename="{plain}"'
    if quote(filename) != filename:
        disposition += f"; filename*=utf-8''{quote(filename)}"

    def chunks():
        try:
            while chunk := handle.read(1 << 20):
                yield chunk
        finally:
            handle.close()

    return StreamingResponse(chunks(), media_type="application/zip", headers={
        "Content-Length": str(size), "Content-Disposition": disposition, "ETag": etag,
        "X-P2PZ-Cache": "hit" if hit else "uncached" if uncached else "miss"}, background=BackgroundTask(handle.close))


def etag_matches(if_none_match: str | None, etag: str) -> bool:
    """RFC 9110 §13.1.2: ``If-None-Match`` is ``*`` (any representation) or lists ``etag`` by the weak comparison
    (``W/"x"`` and ``"x"`` are the same tag)."""
    opaque = etag.strip().removeprefix("W/")
    tags = [t.strip() for t in (if_none_match or "").split(",")]
    return any(t == "*" or (t and t.removeprefix("W/") == opaque) for t in tags)


@router.post("/import", response_model=ImportOut, dependencies=[Depends(require_write)],
             responses={400: {"model": Error}, 401: {"model": Error}, 403: {"model": Error}, 413: {"model": Error}})
def import_library(file: UploadFile = File(..., description="A .p2pz library."),
                   renumber: bool = Query(True, description="Store a direction whose version is taken here by "
                                          "other content as the next free version (false: refuse the import, 400)."),
                   source: str | None = Query(None, max_length=200, description="Recorded as the origin of new "
                                              "directions (default: the upload's file name)."),
                   reg: Registry = Depends(registry), cfg: Settings = Depends(settings)):
    """Import a library (idempotent; every tensor and student checked before anything is stored; versions kept
    where free, ``renumbered`` lists the others)."""
    limit = cfg.max_library_bytes
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "upload.p2pz"
        size = 0
        with open(path, "wb") as out:
            while chunk := file.file.read(1 << 20):
                size += len(chunk)
                if size > limit:
                    raise UploadError(f"the library is over this server's limit of {limit} bytes", 413)
                out.write(chunk)
        result = reg.import_(path, source=source or Path(file.filename or "upload.p2pz").name[:200], renumber=renumber)
    result.pop("path", None)
    return result
