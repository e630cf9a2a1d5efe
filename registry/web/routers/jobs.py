"""``/api/edits`` and ``/api/jobs``: edit jobs, run one at a time in the background, in order."""

from __future__ import annotations

from fastapi import APIRouter, Depends, File, Form, Query, UploadFile
from fastapi.responses import FileResponse

from p2pz.registry.library.records import NotFound

from ..deps import State, jobs, require_token_for_private_reads, require_write, state
from ..jobs import Jobs, UploadError, edit_params
from ..errors import HTTPError
from ..schemas import Error, JobOut
from ..views import job_out

router = APIRouter(prefix="/api", tags=["jobs"])
READ_ERRORS = {401: {"model": Error}, 404: {"model": Error}}
PRIVATE = [Depends(require_token_for_private_reads)]  # a job is its submitter's (the library is public)


@router.post("/edits", response_model=JobOut, status_code=202, dependencies=[Depends(require_write)],
             responses={400: {"model": Error}, 401: {"model": Error}, 403: {"model": Error}, 404: {"model": Error},
                        413: {"model": Error}})
def submit_edit(image: UploadFile | None = File(None, description="The photo to edit (PNG, JPEG, WebP, …)."),
                sample: bool = Form(False, description="Edit the bundled sample image instead of an upload."),
                directions: list[str] = Form(..., description="name[@v], repeated (or comma-separated)."),
                scale: float = Form(1.0, ge=-10, le=10, description="Multiplier of Δ."),
                xa_guidance: float | None = Form(None, ge=0, le=10, description="Cross-attention guidance step "
                                                 "(default: 0.1 real images, 0.01 v-prediction models)."),
                guidance_scale: float = Form(5.0, le=50, description="Classifier-free guidance (> 1)."),
                steps: int = Form(50, ge=1, le=1000, description="DDIM steps (inversion and edit)."),
                seed: int = Form(0, ge=0, le=2**31 - 1),
                caption: str | None = Form(None, max_length=500, description="Default: a BLIP caption."),
                delta_at: str = Form("auto", max_length=20, description="Where Δ is added to the caption's "
                                     "embedding: auto (by the source word's kind), all, word (Δ_token at the "
                                     "source word) or word+pad "
                                     "(docs/algorithm.md §13); the result's provenance notes a fallback."),
                st: State = Depends(state)):
    """Queue an edit of one image with one or more directions → the job (poll ``GET /api/jobs/{id}``)."""
    refs = [r.strip() for item in directions for r in item.split(",") if r.strip()]
    params = edit_params(steps=steps, seed=seed, scale=scale, xa_guidance=xa_guidance,
                         guidance_scale=guidance_scale, caption=caption, delta_at=delta_at)
    limit = st.settings.max_upload_bytes
    if sample:
        if image is not None and image.filename:
            raise HTTPError(400, "send an image or sample=true, not both")
        data = st.sample_image().read_bytes()
    elif image is None:
        raise UploadError("attach an image (field 'image') or set sample=true")
    else:
        data = image.file.read(limit + 1)
        if len(data) > limit:
            raise UploadError(f"the image is over this server's limit of {limit} bytes; send a smaller file", 413)
    job = st.jobs.submit_edit(data, refs, params, max_bytes=limit, max_pixels=st.settings.max_pixels,
                              model=st.settings.model)
    return job_out(job)


@router.get("/jobs", response_model=list[JobOut], dependencies=PRIVATE, responses={401: {"model": Error}})
def list_jobs(status: str | None = Query(None, pattern="^(queued|running|done|failed)$"),
              limit: int = Query(50, ge=1, le=500), queue: Jobs = Depends(jobs)):
    """Recent jobs, newest first."""
    return [job_out(j) for j in queue.list(status, limit)]


@router.get("/jobs/{job_id}", response_model=JobOut, responses=READ_ERRORS, dependencies=PRIVATE)
def get_job(job_id: str, queue: Jobs = Depends(jobs)):
    """A job's status, progress (0 … 1), stage, and, when done, its result URLs with their provenance."""
    return job_out(queue.get(job_id))


@router.get("/jobs/{job_id}/results/{index}", response_class=FileResponse, responses=READ_ERRORS, dependencies=PRIVATE)
def job_result(job_id: str, index: int, queue: Jobs = Depends(jobs)):
    """Download one result image (PNG with its provenance in a ``p2pz`` text chunk)."""
    path = queue.result_file(job_id, index)
    return FileResponse(path, media_type="image/png", filename=path.name)


@router.get("/jobs/{job_id}/input", response_class=FileResponse, responses=READ_ERRORS, dependencies=PRIVATE)
def job_input(job_id: str, queue: Jobs = Depends(jobs)):
    """The image a job edits, as uploaded."""
    job = queue.get(job_id)
    if job.kind != "edit" or not job.params.get("input"):
        raise NotFound(f"job {job_id} is a {job.kind} job: it has no uploaded image")
    path = queue.input_file(job_id)
    if not path.is_file():
        raise NotFound(f"the uploaded image of job {job_id} was cleaned (a server keeps its newest "
                       f"{queue.keep_jobs} finished jobs' files, none older than {queue.keep_jobs_days:g} days)")
    return FileResponse(path, filename=path.name)
