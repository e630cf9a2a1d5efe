"""The app's gate: one pure ASGI middleware that every request passes before any route (or body parser) runs.

A server on loopback is still reachable from every web page in the user's browser, so the gate

- answers only for the hosts the server is meant to be reached as (``Host``: loopback names, ``--host``, and
  ``--allowed-host`` values; 400 otherwise) — a DNS-rebinding page names its own host;
- refuses unsafe methods (POST, PUT, PATCH, DELETE) sent by another origin: an ``Origin`` (or, without one, a
  ``Referer``) that is not this server's own, or ``Sec-Fetch-Site`` other than ``same-origin``/``none`` (403). A
  request with none of these headers (curl, the CLI, scripts) is not a browser's cross-site request and passes;
- checks write authorization (read-only, token) for the write routes *before* the body is read: FastAPI parses a
  multipart form before it runs a route's dependencies;
- caps the body per endpoint while it streams, with or without ``Content-Length`` (413): ``/api/import`` at the
  library limit, ``/api/edits`` at the upload limit, every other request at :data:`JSON_BODY_LIMIT`;
- answers ``HEAD`` as ``GET`` without the body, on every route;
- adds the security headers: ``nosniff``, ``X-Frame-Options: DENY``, ``Referrer-Policy``, and a restrictive
  ``Content-Security-Policy`` on HTML (``/docs`` gets the hash of Swagger UI's one inline script, nothing more).
"""

from __future__ import annotations

import hmac
import json
from urllib.parse import urlsplit

from starlette.exceptions import HTTPException
from starlette.routing import Match

from .settings import Settings, is_loopback

UNSAFE = frozenset({"POST", "PUT", "PATCH", "DELETE"})
JSON_BODY_LIMIT = 2**20  # every request body but an upload's
FORM_OVERHEAD = 2**20  # multipart boundaries and the other form fields beside an upload
WILDCARD = {"0.0.0.0", "::", ""}
PAGE_CSP = ("default-src 'self'; img-src 'self' data: blob:; script-src 'self'; style-src 'self'; "
            "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")


def docs_csp(script_hash: str) -> str:
    """Swagger UI: its bundle and stylesheet from ``/docs-assets``, its one inline start-up script by hash."""
    return (f"default-src 'self'; img-src 'self' data:; script-src 'self' '{script_hash}'; "
            "style-src 'self' 'unsafe-inline'; object-src 'none'; base-uri 'none'; form-action 'self'; "
            "frame-ancestors 'none'")


def split_host(value: str) -> tuple[str, str | None]:
    """``Host`` (or an origin's netloc) → (lower-case host without brackets or trailing dot, port or None)."""
    value = value.strip().lower()
    if value.startswith("["):
        host, _, rest = value[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else None
    elif value.count(":") == 1:
        host, _, port = value.partition(":")
    else:  # a bare name, or a bare IPv6 address
        host, port = value, None
    return host.rstrip("."), port or None


def _netloc_key(netloc: str, scheme: str) -> tuple[str, str | None]:
    host, port = split_host(netloc)
    if port == {"http": "80", "https": "443"}.get(scheme):
        port = None
    return host, port


def has_token(settings: Settings, authorization: str | None) -> bool:
    """Whether ``Authorization`` is ``Bearer TOKEN`` with the server's token (compared in constant time); True
    when the server has no token."""
    if not settings.token:
        return True
    scheme, _, given = (authorization or "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), settings.token.encode())


def write_refusal(settings: Settings, authorization: str | None) -> tuple[int, str] | None:
    """Why a write is refused → (status, message), or None: 403 on a read-only server, 401 without
    ``Authorization: Bearer TOKEN`` when a token is set."""
    if settings.read_only:
        return 403, "this server is read-only (started with --read-only); writes are refused"
    if not has_token(settings, authorization):
        return 401, "this server needs Authorization: Bearer TOKEN for writes (the token given to p2pz serve)"
    return None


class Gate:
    """The ASGI middleware above. ``write_routes``: the routes that need write authorization; ``docs_hash``:
    the CSP hash of the inline script of ``/docs``."""

    def __init__(self, app, *, settings: Settings, write_routes=(), docs_hash: str | None = None):
        self.app = app
        self.settings = settings
        self.write_routes = list(write_routes)
        self.docs_csp = docs_csp(docs_hash) if docs_hash else PAGE_CSP
        bound = split_host(settings.host)[0] if settings.host not in WILDCARD else None
        self.hosts = {h for h in (split_host(a)[0] for a in settings.allowed_hosts)} | ({bound} if bound else set())
        # a wildcard bind answers for any name the machine has, unless --allowed-host names them
        self.any_host = "*" in settings.allowed_hosts or (bound is None and not settings.allowed_hosts)

    def host_allowed(self, host: str) -> bool:
        return self.any_host or host in self.hosts or is_loopback(host)

    def cap(self, path: str) -> int:
        s = self.settings
        return {"/api/import": s.max_library_bytes + FORM_OVERHEAD,
                "/api/edits": s.max_upload_bytes + FORM_OVERHEAD}.get(path.rstrip("/"), JSON_BODY_LIMIT)

    def _write_route(self, scope) -> bool:
        return any(route.matches(scope)[0] == Match.FULL for route in self.write_routes)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", ())}
        method = scope["method"].upper()
        head = method == "HEAD"
        if head:  # RFC 9110 §9.3.2: HEAD is GET without the body, wherever GET answers
            scope = {**scope, "method": "GET"}
        host_header = headers.get("host")
        if host_header is not None and not self.host_allowed(split_host(host_header)[0]):
            return await _refuse(send, 400, f"this server does not answer for host {host_header[:100]!r}; "
                                            "reach it by the address it serves on, or start it with "
                                            "--allowed-host NAME")
        if method in UNSAFE:
            why = self._cross_site(headers, scope.get("scheme", "http"), host_header)
            if why:
                return await _refuse(send, 403, why)
            if self._write_route(scope):
                refused = write_refusal(self.settings, headers.get("authorization"))
                if refused:
                    extra = [(b"www-authenticate", b"Bearer")] if refused[0] == 401 else []
                    return await _refuse(send, *refused, extra)
        cap = self.cap(scope["path"])
        length = headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > cap):
            return await _refuse(send, 413, f"the request body is over this endpoint's limit of {cap} bytes")
        seen = 0

        async def limited_receive():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > cap:  # raised inside the body parser: FastAPI answers it with its handler (413)
                    raise HTTPException(413, f"the request body is over this endpoint's limit of {cap} bytes")
            return message

        started = False
        is_docs = scope["path"] == "/docs"

        async def secured_send(message):
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                present = {k.lower() for k, _ in message.get("headers", ())}
                extra = [(b"x-content-type-options", b"nosniff"), (b"x-frame-options", b"DENY"),
                         (b"referrer-policy", b"same-origin")]
                ctype = dict((k.lower(), v) for k, v in message.get("headers", ())).get(b"content-type", b"")
                if ctype.startswith(b"text/html"):
                    extra.append((b"content-security-policy", (self.docs_csp if is_docs else PAGE_CSP).encode()))
                message = {**message, "headers": list(message.get("headers", ())) +
                           [(k, v) for k, v in extra if k not in present]}
            elif head and message["type"] == "http.response.body":
                message = {**message, "body": b""}
            await send(message)

        try:
            await self.app(scope, limited_receive, secured_send)
        except HTTPException as exc:  # over the cap outside a FastAPI route's body parsing
            if exc.status_code != 413 or started:
                raise
            await _refuse(send, 413, str(exc.detail))

    def _cross_site(self, headers: dict, scheme: str, host_header: str | None) -> str | None:
        """Why an unsafe request comes from another site → a message, or None."""
        site = headers.get("sec-fetch-site")
        if site is not None and site not in ("same-origin", "none"):
            return (f"cross-site request refused (Sec-Fetch-Site: {site}); writes come from this server's own "
                    "pages or from clients that send no Origin")
        for header in ("origin", "referer"):
            value = headers.get(header)
            if value is None:
                continue
            parts = urlsplit(value) if value != "null" else None
            own = _netloc_key(host_header, scheme) if host_header else None
            if (parts is None or parts.scheme not in ("http", "https") or own is None
                    or _netloc_key(parts.netloc, parts.scheme) != own):
                shown = "null" if parts is None else f"{parts.scheme}://{parts.netloc}"[:100]
                return (f"cross-origin request refused ({header.capitalize()}: {shown}); writes come from this "
                        "server's own pages or from clients that send no Origin")
            return None  # Origin decides when present; Referer only without it
        return None


async def _refuse(send, status: int, message: str, headers: list | None = None) -> None:
    body = json.dumps({"error": message}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"x-content-type-options", b"nosniff"), (b"x-frame-options", b"DENY"),
                            (b"connection", b"close")] + (headers or [])})
    await send({"type": "http.response.body", "body": body})
