"""``p2pz serve`` (the web gallery and HTTP API) and ``p2pz preview build`` (the gallery's preview renders)."""

from __future__ import annotations

import errno
import os
import socket
from pathlib import Path

import click
from click.core import ParameterSource

from . import P2PZError, P2PZGroup, echo_json, echo_table, engine_options, json_option, main, pass_state


@main.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to bind; anything but loopback needs --token or --read-only.")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True)
@click.option("--token", envvar="P2PZ_TOKEN", help="Writes and job reads need 'Authorization: Bearer TOKEN'. "
              "Prefer $P2PZ_TOKEN or --token-file: a value on the command line is visible to every local user "
              "in ps [$P2PZ_TOKEN].")
@click.option("--token-file", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Read the token from this file (first line; keep it chmod 600: a world-readable file is refused).")
@click.option("--allowed-host", "allowed_hosts", multiple=True, metavar="NAME",
              help="Also answer requests for this Host name (repeatable; e.g. the name a reverse proxy uses). "
              "Loopback names and --host are always allowed; other Host headers get 400 (DNS rebinding).")
@click.option("--read-only", is_flag=True, help="Refuse every write (build, tag, import, edits).")
@click.option("--model", envvar="P2PZ_MODEL", help="SD model for edits and builds (hub id or folder) "
              "[default: the model the directions were built with].")
@click.option("--device", help="cpu or cuda (default: cuda when available).")
@click.option("--dtype", type=click.Choice(["float32", "float16", "bfloat16"]), default=None)
@click.option("--captioner", default=None, help="BLIP model [default: Salesforce/blip-image-captioning-base].")
@click.option("--work-dir", type=click.Path(file_okay=False), help="Jobs' inputs and results "
              "[default: $P2PZ_HOME/web].")
@click.option("--max-upload-mb", type=click.FloatRange(0.01), default=20.0, show_default=True)
@click.option("--max-pixels", type=click.IntRange(1), default=25_000_000, show_default=True)
@click.option("--preview-steps", type=click.IntRange(1, 1000), default=50, show_default=True,
              help="Steps of previews rendered from the gallery.")
@click.option("--max-queued", type=click.IntRange(0), default=100, show_default=True,
              help="Jobs waiting at once; more submissions get 429 with Retry-After (0: no limit).")
@click.option("--keep-jobs", type=click.IntRange(0), default=200, show_default=True,
              help="Keep the files of this many newest finished jobs; older ones' are deleted (0: no count limit).")
@click.option("--keep-jobs-days", type=click.FloatRange(0), default=30.0, show_default=True,
              help="Delete the files of jobs finished longer ago than this (0: no age limit).")
@click.option("--heavy-requests", type=click.IntRange(1, 64), default=2, show_default=True,
              help="Exports built at once (an uncached word-pair search: one at a time); more get 429.")
@click.option("--export-budget", type=click.IntRange(0), default=20, show_default=True,
              help="New export-cache entries callers without the token may add per --export-budget-window; past "
                   "it their exports are built for that answer only and deleted.")
@click.option("--export-budget-window", type=click.FloatRange(1), default=60.0, show_default=True, metavar="SECONDS",
              help="The window of --export-budget, in seconds.")
@pass_state
@click.pass_context
def serve(ctx, state, host, port, token, token_file, allowed_hosts, read_only, model, device, dtype, captioner,
          work_dir, max_upload_mb, max_pixels, preview_steps, max_queued, keep_jobs, keep_jobs_days, heavy_requests,
          export_budget, export_budget_window):
    """Serve the web gallery and the HTTP API (OpenAPI at /docs) over this registry.

    Edits submitted through the API or the apply page run in one background worker, in order; queued jobs
    survive a restart. The address is bound before anything else starts: a port already in use is refused with
    no job taken. With a token, writes and reading jobs (their uploads and results) need it; the library
    stays public. The server answers only for loopback names, --host and --allowed-host, and refuses writes
    that another web page (another origin) sends. The token is never printed or logged.

    \b
    Examples:
      p2pz serve
      (umask 077; python -c 'import secrets; print(secrets.token_urlsafe())' > ~/.p2pz-token)
      p2pz serve --host 0.0.0.0 --token-file ~/.p2pz-token --allowed-host gallery.example.org
      P2PZ_TOKEN=$(cat ~/.p2pz-token) p2pz serve
      p2pz serve --read-only --host 0.0.0.0 --port 8080
    """
    from ..web import Settings, create_app  # lazy: PIL

    if token_file:
        if token and ctx.get_parameter_source("token") == ParameterSource.COMMANDLINE:
            raise P2PZError("give the token once: --token or --token-file, not both")
        path = Path(token_file)
        if os.name == "posix" and path.stat().st_mode & 0o004:
            raise P2PZError(f"{token_file} is readable by every user; restrict it first: chmod 600 {token_file}")
        lines = path.read_text(encoding="utf-8", errors="replace").strip().splitlines()
        token = lines[0].strip() if lines else ""
        if not token:
            raise P2PZError(f"{token_file} holds no token; write one line, e.g. python -c 'import secrets; "
                            "print(secrets.token_urlsafe())'")
    elif token and ctx.get_parameter_source("token") == ParameterSource.COMMANDLINE:
        click.echo("warning: --token on the command line is visible to every local user (ps); use "
                   "--token-file PATH or $P2PZ_TOKEN instead", err=True)
    settings = Settings(db_url=state.db, work_dir=Path(work_dir) if work_dir else None, token=token or None,
                        read_only=read_only, host=host, model=model, device=device, dtype=dtype,
                        captioner=captioner, allowed_hosts=tuple(allowed_hosts),
                        max_upload_bytes=int(max_upload_mb * 2**20), max_pixels=max_pixels,
                        preview_steps=preview_steps, max_queued=max_queued, keep_jobs=keep_jobs,
                        keep_jobs_days=keep_jobs_days, heavy_requests=heavy_requests, export_budget=export_budget,
                        export_budget_window_s=export_budget_window)
    # bind first: a server that cannot listen must not start its job worker (which would claim a queued job
    # and leave it running, owned by a process about to exit)
    sockets = _listen(host, port)
    try:
        app = create_app(settings)
        if sockets:
            port = sockets[0].getsockname()[1]  # --port 0: the one the system chose
        shown = f"[{host}]" if ":" in host else host
        state.info(f"p2pz serving {_masked(state.db) if state.db else 'the default registry'} on "
                   f"http://{shown}:{port}/ "
                   f"({'read-only' if read_only else 'writes need the token' if token else 'writes open to loopback'})")
        _run(app, sockets, host=host, port=port, log_level="warning" if state.quiet else "info",
             server_header=False, access_log=not state.quiet)
    finally:
        for sock in sockets:
            sock.close()


def _listen(host: str, port: int) -> list[socket.socket]:
    """Listening sockets for every address ``host`` resolves to (as uvicorn's own bind would make) → or a
    one-line :class:`P2PZError` naming the address and the fix."""
    shown = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise P2PZError(f"cannot resolve --host {host} ({exc.strerror}); give an address such as 127.0.0.1") \
            from None
    sockets: list[socket.socket] = []
    seen = set()
    try:
        for family, kind, proto, _, address in infos:
            if (family, address) in seen:
                continue
            seen.add((family, address))
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6 and hasattr(socket, "IPPROTO_IPV6"):
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                sock.bind(address)
            except OSError as exc:  # as asyncio does: an address family this machine lacks is skipped
                if exc.errno != errno.EADDRNOTAVAIL or len(infos) == 1:
                    raise
                sockets.pop().close()
                continue
            sock.listen(2048)  # listening now: no second server can bind this port from here on
            sock.set_inheritable(True)
        if not sockets:
            raise OSError(errno.EADDRNOTAVAIL, os.strerror(errno.EADDRNOTAVAIL))
    except OSError as exc:
        for sock in sockets:
            sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise P2PZError(f"address already in use: {shown} has another server listening; stop it or choose "
                            "another --port") from None
        raise P2PZError(f"cannot listen on {shown} ({exc.strerror or exc}); choose another --host or --port") \
            from None
    return sockets


def _run(app, sockets: list[socket.socket], **config) -> None:
    """uvicorn on the sockets :func:`_listen` bound."""
    import uvicorn  # lazy: uvicorn

    uvicorn.Server(uvicorn.Config(app, **config)).run(sockets=sockets)


def _masked(url: str) -> str:
    """A database URL without its password, as the CLI's database errors show it (SQLAlchemy's masking)."""
    from sqlalchemy.engine import make_url  # lazy: sqlalchemy

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 — not a URL: say nothing about it
        return "the registry given by --db"


@main.group(cls=P2PZGroup)
def preview():
    """Preview renders shown by the web gallery: build.

    \b
    Example:
      p2pz preview build cat-to-dog
    """


@preview.command("build")
@click.argument("refs", nargs=-1, metavar="[NAME[@V]]...")
@click.option("--images", type=click.Path(exists=True), help="A folder (or one image) of preview images "
              "[default: the bundled sample].")
@click.option("--model", help="SD model (default: the one each direction was built with; $P2PZ_MODEL does not override it).")
@click.option("--steps", type=click.IntRange(1, 1000), default=50, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--device", help="cpu or cuda (default: cuda when available).")
@click.option("--dtype", type=click.Choice(["float32", "float16", "bfloat16"]), default=None)
@click.option("--captioner", default=None, help="BLIP model [default: Salesforce/blip-image-captioning-base].")
@click.option("--caption", default=None, help="Use this caption for every preview image instead of BLIP's (no "
              "captioner is loaded).")
@click.option("--force", is_flag=True, help="Render again even when a preview with these settings exists.")
@engine_options
@json_option
@pass_state
def preview_build(state, refs, images, model, steps, seed, device, dtype, captioner, caption, force, engine, as_json):
    """Render what each direction (default: every one) does to the preview images.

    Previews are content-addressed (direction content, image, model, steps, seed) in $P2PZ_HOME/previews:
    rerunning skips what exists, and the same Δ under another name shares its preview.

    \b
    Examples:
      p2pz preview build
      p2pz preview build cat-to-dog day-to-night@2 --images previews/ --steps 50
      p2pz preview build cat-to-dog --images cat.png --caption "a photo of a cat"
      p2pz preview build --engine ray --workers 4 --gpus-per-worker 1
    """
    from p2pz.registry.library.previews import build_previews  # lazy: PIL

    paths = None
    if images:
        p = Path(images)
        exts = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff"}
        paths = sorted(x for x in p.iterdir() if x.suffix.lower() in exts) if p.is_dir() else [p]
        if not paths:
            raise P2PZError(f"no images in {images}; give a folder of PNG/JPEG/WebP files")
    reg = state.registry()

    def report(r):
        if not as_json:
            state.info(f"{r['direction']} on {r['image']}: {r['status']}" + (f" ({r['error']})" if r.get("error") else ""))

    done = build_previews(reg, list(refs) or None, paths, model=model, device=device, dtype=dtype,
                          captioner=captioner, caption=caption, steps=steps, engine=engine,
                          seed=seed, force=force, report=report, progress=state.progress)
    if as_json:
        echo_json(done)
    else:
        echo_table([[r["direction"], r["image"], r["status"], r["key"][:12]] for r in done],
                   ["direction", "image", "status", "key"])
    if any(r["status"] == "failed" for r in done):
        raise SystemExit(1)

