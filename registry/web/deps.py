"""Dependencies shared by the routers: the registry, the job queue, the settings and write authorization."""

from __future__ import annotations

import threading

from fastapi import Depends, Header, Request

from registry.library import previews
from registry.library.api import Registry
from registry.library.encoding import registry_model
from registry.library.records import RegistryError

from .errors import HTTPError
from .guard import has_token, write_refusal
from .jobs import Jobs
from .settings import Settings


class State:
    """What one app instance holds: settings, the registry, the job queue, a search lock and caches."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.registry = Registry.open(settings.db_url)
        self.jobs = Jobs(self.registry, settings.resolved_work_dir())
        # one search at a time: a stale FAISS index is rebuilt by the first search that sees it, not by several
        self.search_lock = threading.Lock()
        self.diagnostics: dict[str, dict] = {}  # ref → inspect() result (immutable per direction version)

    def sample_image(self):
        """The sample image for "try it without an upload": a shapes-world image when the server's model (or the
        registry's one model) is the shapes model, else the bundled photo."""
        try:
            model = registry_model(self.registry.db, self.settings.model)
        except RegistryError:  # several models: the photo
            model = self.settings.model
        return previews.default_images(model)[0]


def state(request: Request) -> State:
    return request.app.state.p2pz


def registry(st: State = Depends(state)) -> Registry:
    return st.registry


def jobs(st: State = Depends(state)) -> Jobs:
    return st.jobs


def settings(st: State = Depends(state)) -> Settings:
    return st.settings


def require_write(st: State = Depends(state), authorization: str | None = Header(
        None, description="Bearer TOKEN; needed for writes when the server has a token.")) -> None:
    """Writes: refused on a read-only server (403); with a token set, only with ``Authorization: Bearer TOKEN``
    (401 otherwise). The comparison takes constant time. The app's gate (``guard.py``) applies the same rule
    before the request body is read; this dependency keeps it for any other way in and for the OpenAPI page."""
    refused = write_refusal(st.settings, authorization)
    if refused:
        raise HTTPError(*refused)


def require_token_for_private_reads(st: State = Depends(state), authorization: str | None = Header(
        None, description="Bearer TOKEN; needed to read jobs when the server has a token.")) -> None:
    """Jobs are their submitter's: with a token set, reading a job, its input or its results needs it (401);
    the library (directions, banks, previews) stays public."""
    if not has_token(st.settings, authorization):
        raise HTTPError(401, "this server needs Authorization: Bearer TOKEN to read jobs, their uploads and "
                             "results (the token given to p2pz serve)")
