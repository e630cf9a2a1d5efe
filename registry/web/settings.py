"""The web app's configuration (``p2pz serve`` options), one dataclass."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path

from p2pz.store.paths import data_home

from p2pz.registry.library.records import RegistryError


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@dataclass
class Settings:
    db_url: str | None = None  # the registry (default: $P2PZ_DB_URL or $P2PZ_HOME/registry.db)
    work_dir: Path | None = None  # jobs' inputs and results (default: $P2PZ_HOME/web)
    token: str | None = None  # writes need "Authorization: Bearer <token>" when set
    read_only: bool = False  # refuse every write (403)
    host: str = "127.0.0.1"
    model: str | None = None  # SD model for edits (default: the one the directions were built with)
    device: str | None = None
    dtype: str | None = None
    captioner: str | None = None  # BLIP model for captions (default: the editor's)
    max_upload_bytes: int = 20 * 2**20  # an image upload
    max_pixels: int = 25_000_000  # width × height of an uploaded image (checked from its header)
    max_library_bytes: int = 512 * 2**20  # a .p2pz library upload
    preview_steps: int = 50  # steps of a preview rendered from the gallery's "render preview"
    per_page: int = 24
    worker: bool = True  # run queued jobs in a background thread
    allowed_hosts: tuple[str, ...] = ()  # Host names answered besides loopback and `host` (--allowed-host; "*": any)
    job_lease_s: float = 30.0  # a running job without a heartbeat for this long: failed at start-up, re-queued live
    heavy_requests: int = 2  # exports built at once (an uncached pair search: one at a time); more get 429
    export_budget: int = 20  # new export-cache entries anonymous callers may add per window; past it: uncached
    export_budget_window_s: float = 60.0
    retry_after_s: int = 5  # what a 429 tells the client to wait
    pair_cache_size: int = 256  # word-pair query keys kept (a repeated pair search encodes nothing)
    pair_process: bool = True  # encode word pairs in a worker process (web/pairs.py), not a request thread
    pair_timeout_s: float = 600.0  # an encoding taking longer is stopped (503)
    max_queued: int = 100  # jobs waiting at once; more submissions get 429
    keep_jobs: int = 200  # finished jobs whose files are kept; older ones' files are deleted (0: keep all)
    keep_jobs_days: float = 30.0  # and files of jobs finished longer ago than this (0: no age limit)

    def __post_init__(self):
        self.allowed_hosts = tuple(h.strip() for h in self.allowed_hosts if h.strip())
        for h in self.allowed_hosts:
            if h != "*" and (any(c in h for c in "/@ \t\\?#") or "://" in h or len(h) > 255):
                raise RegistryError(f"--allowed-host takes a host name or address (like gallery.example.org), "
                                    f"not {h[:80]!r}")
        if self.token is not None and len(self.token) < 8:
            raise RegistryError("the token must be at least 8 characters; generate one with: "
                                "python -c 'import secrets; print(secrets.token_urlsafe())'")
        if not is_loopback(self.host) and not self.token and not self.read_only:
            raise RegistryError(f"binding {self.host} exposes the registry beyond this machine: set a token "
                                "($P2PZ_TOKEN or --token-file) or serve --read-only")

    def resolved_work_dir(self) -> Path:
        return Path(self.work_dir) if self.work_dir else data_home() / "web"
