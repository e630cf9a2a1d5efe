"""Registry to registry (issue #23, architecture §13): ``p2pz pull http(s)://HOST[:PORT]`` and ``p2pz push URL NAME…``
against another registry's ``p2pz serve``, through its ``/api/directions``, ``/api/export`` and ``/api/import``.

The same rules as the Hub: idempotent (content addressing), versions kept, a version the other side holds with
other content refused (unless ``--renumber``), all or nothing (every library downloaded and checked before one
transaction stores them; a push is one ``/api/import``, one transaction there). The bearer token comes from
``P2PZ_TOKEN`` and is sent only in the ``Authorization`` header, never printed; a URL's own credentials are
refused so that they never reach a log, an origin record or an error.

The other side is not trusted (issue #35): every answer is checked at this edge (status, content type, shape:
:class:`Listing`, :class:`Imported`) and refused in one line naming the server and what it answered (status,
content type, a short excerpt without control characters); every body is read in chunks against a byte budget
(:data:`MAX_JSON_BYTES` per JSON answer, the library cap per download, ``$P2PZ_REMOTE_MAX_BYTES`` for the whole
pull or push); a listing may claim at most :data:`MAX_LIST_PAGES` pages; and the whole pull or push has one
deadline, ``$P2PZ_REMOTE_TIMEOUT`` seconds (:data:`DEADLINE_S`), however slowly the other side drips.
"""

from __future__ import annotations

import json
import os
import re
import socket
import tempfile
import threading
import time
import unicodedata
from pathlib import Path
from urllib.parse import quote, urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from p2pz.registry.library.records import RegistryError, printable

MAX_REFS_PER_EXPORT = 200  # names per /api/export request
# /api/export takes the names in its query string: at most 10,000 characters there (decoded), and uvicorn (h11)
# refuses request heads over 16 KB; chunks stay under both, whatever the names (percent-encoding only grows them)
MAX_EXPORT_QUERY = 8_000
TIMEOUT_S = 120.0  # one connect, read or write
DEADLINE_S = 3600.0  # a whole pull or push: $P2PZ_REMOTE_TIMEOUT
MAX_BYTES = 32 << 30  # everything one pull or push receives: $P2PZ_REMOTE_MAX_BYTES
MAX_JSON_BYTES = 16 << 20  # one JSON answer (a listing page of 200 directions is well under 1 MB)
MAX_ERROR_BYTES = 64 << 10  # what is read of a refusal's body
MAX_LIST_PAGES = 10_000  # 2,000,000 directions at 200 a page
EXCERPT = 80  # characters of a foreign answer quoted in an error
ZIP_TYPES = ("application/zip", "application/octet-stream")


def base_url(url: str) -> str:
    """``http(s)://HOST[:PORT][/PREFIX]`` without a trailing slash; credentials, queries and fragments refused."""
    try:
        parts = urlsplit(url.strip())
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number from 0 to 65535
    except ValueError:
        parts = None
    if any(c.isspace() or unicodedata.category(c)[0] == "C" for c in url.strip()):
        parts = None  # it would reach errors and origin records
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        shown = clean(ascii(re.sub(r"//[^/?#]*@", "//...@", url)), 200)  # what looks like credentials stays out
        raise RegistryError(f"malformed registry address {shown}: write http://HOST:PORT (a p2pz serve)")
    if parts.username or parts.password:
        raise RegistryError("the registry address holds credentials; drop them from the URL and set P2PZ_TOKEN")
    if parts.query or parts.fragment:
        raise RegistryError("the registry address must not have a query or fragment: write http://HOST:PORT")
    return f"{parts.scheme}://{parts.netloc}{parts.path.rstrip('/')}"


def clean(text: str, limit: int = EXCERPT) -> str:
    """Foreign text fit for one line of a terminal: :func:`printable` (escapes and control characters gone), then
    line breaks and invisible characters turned into spaces, whitespace collapsed, at most ``limit`` characters
    (``…`` when cut)."""
    text = printable(str(text)[:4 * limit], keep="\t\n\r")
    text = "".join(" " if unicodedata.category(c)[0] == "C" or unicodedata.category(c) in ("Zl", "Zp") else c
                   for c in text)
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit - 1] + "…"


def export_chunks(refs: list[str], max_chars: int = MAX_EXPORT_QUERY,
                  max_count: int = MAX_REFS_PER_EXPORT) -> list[list[str]]:
    """``refs`` in order, in groups of at most ``max_count`` whose percent-encoded, comma-joined names (the
    ``names`` of one ``/api/export``) take at most ``max_chars`` characters; a ref longer than that on its own
    (only a malformed one can be) goes alone, for the server to refuse."""
    chunks: list[list[str]] = []
    size = 0
    for ref in refs:
        n = len(_quoted(ref))
        if chunks and len(chunks[-1]) < max_count and size + 1 + n <= max_chars:
            chunks[-1].append(ref)
            size += 1 + n
        else:
            chunks.append([ref])
            size = n
    return chunks


def _quoted(names: str) -> str:
    return quote(names, safe="@,")


class _Answer(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)


class Listed(_Answer):
    ref: str


class Listing(_Answer):
    """What this client needs of a ``/api/directions`` page."""
    pages: int = Field(ge=1)
    items: list[Listed]


class Added(_Answer):
    directions: int = Field(ge=0)
    embeddings: int = Field(ge=0)
    banks: int = Field(ge=0)


class Renumbered(_Answer):
    name: str
    from_: int = Field(alias="from")
    to: int
    reason: str
    content_sha256: str


class Imported(_Answer):
    """What this client needs of a ``/api/import`` answer."""
    added: Added
    directions: list[str]
    renumbered: list[Renumbered] = []


class _Session:
    """One pull or push against one registry: its address, deadline and byte budget. :meth:`run` runs the
    network part in a worker thread and stops waiting at the deadline, whatever a read is blocked on; the
    worker stops at its next chunk (every request's timeouts are capped by what is left)."""

    def __init__(self, base: str, what: str):
        self.base, self.what = base, what
        self.seconds = _setting("P2PZ_REMOTE_TIMEOUT", DEADLINE_S, float, "seconds")
        self.budget = self.left_bytes = _setting("P2PZ_REMOTE_MAX_BYTES", MAX_BYTES, int, "bytes")
        self.end = time.monotonic() + self.seconds
        self.stopped = threading.Event()

    def run(self, fn):
        box: dict = {}

        def work():
            try:
                box["out"] = fn()
            except BaseException as exc:  # noqa: BLE001 - handed to the waiting thread
                box["exc"] = exc
        worker = threading.Thread(target=work, name=f"p2pz {self.what}", daemon=True)
        worker.start()
        worker.join(max(0.0, self.end - time.monotonic()))
        if worker.is_alive():
            self.stopped.set()
            raise self.too_slow()
        if "exc" in box:
            raise box["exc"]
        return box["out"]

    def too_slow(self) -> RegistryError:
        return RegistryError(f"the registry at {self.base} did not finish the {self.what} within {self.seconds:g} s "
                             "(set P2PZ_REMOTE_TIMEOUT for a slower link)")

    def timeout(self):
        """Every timeout of one request: at most :data:`TIMEOUT_S`, and never past the deadline."""
        import httpx  # lazy

        left = self.end - time.monotonic()
        if left <= 0 or self.stopped.is_set():
            raise self.too_slow()
        return httpx.Timeout(min(TIMEOUT_S, left))

    def take(self, n: int) -> None:
        """Count ``n`` more bytes received; past the budget or the deadline, stop."""
        self.left_bytes -= n
        if self.left_bytes < 0:
            raise RegistryError(f"the registry at {self.base} sent more than {self.budget} bytes in one "
                                f"{self.what} (set P2PZ_REMOTE_MAX_BYTES to allow more, or {self.what} fewer "
                                "directions at a time)")
        if self.stopped.is_set() or time.monotonic() > self.end:
            raise self.too_slow()

    def call(self, fn):
        import httpx  # lazy

        try:
            return fn()
        except (httpx.HTTPError, httpx.InvalidURL, httpx.StreamError) as exc:
            if self.stopped.is_set() or time.monotonic() > self.end:
                raise self.too_slow() from None
            raise RegistryError(f"cannot reach the registry at {self.base} ({type(exc).__name__}); is p2pz serve "
                                "running there?") from None

    def read(self, resp, cap: int, too_big: str) -> bytes:
        """The body in chunks, at most ``cap`` bytes (else ``too_big``), counted against the budget."""
        body = bytearray()
        for chunk in resp.iter_raw():
            self.take(len(chunk))
            if len(body) + len(chunk) > cap:
                raise RegistryError(too_big)
            body += chunk
        return bytes(body)

    def foreign(self, path: str, resp, head: bytes, why: str = "") -> RegistryError:
        """The other side answered something that is not a p2pz serve's answer."""
        said = clean(head.decode("utf-8", "replace"))
        return RegistryError(f"the registry at {self.base} answered {path} with {resp.status_code} "
                             f"{_ctype(resp) or 'and no content type'}{f' ({why})' if why else ''}: {said!r}; "
                             "is it a p2pz serve?")

    def refusal(self, path: str, resp, writing: bool) -> RegistryError:
        head = _head(self, resp, MAX_ERROR_BYTES)
        try:
            said = json.loads(head.decode("utf-8")).get("error")
            said = clean(said, 300) if isinstance(said, str) else ""
        except (ValueError, AttributeError, RecursionError):
            said = ""
        code = resp.status_code
        if code == 401:
            return RegistryError(f"the registry at {self.base} refused the request (401): set P2PZ_TOKEN to its "
                                 "token")
        if code == 403 and writing:
            return RegistryError(f"the registry at {self.base} refused the write (403): {said or 'it is read-only'}")
        if code == 429:
            wait = resp.headers.get("Retry-After", "")
            return RegistryError(f"the registry at {self.base} is busy (429); try again in "
                                 f"{wait if wait.isascii() and wait.isdigit() and len(wait) < 8 else 'a few'} s")
        if said:
            return RegistryError(f"the registry at {self.base} answered {code}: {said}")
        return self.foreign(path, resp, head)

    def json(self, client, method: str, path: str, model, what: str, writing: bool = False, **kw):
        """One JSON answer, checked against ``model`` (its status, content type, size and shape)."""
        def go():
            with client.stream(method, self.base + path, timeout=self.timeout(), **kw) as resp:
                if resp.status_code != 200:
                    raise self.refusal(path, resp, writing)
                if _ctype(resp) != "application/json" or _encoded(resp):
                    raise self.foreign(path, resp, _head(self, resp, 2 * EXCERPT), _encoded(resp))
                return resp, self.read(resp, MAX_JSON_BYTES, f"the registry at {self.base} answered {path} with "
                                       f"over {MAX_JSON_BYTES} bytes of JSON; is it a p2pz serve?")
        resp, body = self.call(go)
        try:
            return model.model_validate(json.loads(body.decode("utf-8")))
        except (ValueError, RecursionError) as exc:  # bad UTF-8, bad JSON, another shape (ValidationError)
            why = f"not {what}" if isinstance(exc, ValidationError) else "not JSON"
            if isinstance(exc, ValidationError):
                err = exc.errors()[0]
                where = ".".join(str(p) for p in err["loc"]) or "the answer"
                why += f": {clean(where, 40)}: {clean(err['msg'][:1].lower() + err['msg'][1:], 60)}"
            raise self.foreign(path, resp, body[:4 * EXCERPT], why) from None

    def download(self, client, refs: list[str], dest: Path, limit: int) -> None:
        """``/api/export`` of ``refs`` streamed to ``dest``, at most ``limit`` bytes."""
        path = f"/api/export?names={_quoted(','.join(refs))}"
        too_big = (f"the library from {self.base} is over {limit >> 20} MB; {self.what} fewer directions at a "
                   "time")

        def go():
            with client.stream("GET", self.base + path, timeout=self.timeout()) as resp:
                if resp.status_code != 200:
                    raise self.refusal("/api/export", resp, writing=False)
                if _ctype(resp) not in ZIP_TYPES or _encoded(resp):
                    raise self.foreign("/api/export", resp, _head(self, resp, 2 * EXCERPT), _encoded(resp))
                length = resp.headers.get("Content-Length", "")
                if length.isascii() and length.isdigit() and int(length) > limit:
                    raise RegistryError(too_big)
                size = 0
                with open(dest, "wb") as out:
                    for chunk in resp.iter_raw():  # as it arrives: every read checked against the deadline
                        self.take(len(chunk))
                        size += len(chunk)
                        if size > limit:
                            raise RegistryError(too_big)
                        out.write(chunk)
        self.call(go)


def _setting(env: str, default, kind, unit: str):
    raw = os.environ.get(env, "").strip()
    if not raw:
        return default
    try:
        value = kind(raw)
    except ValueError:
        value = None
    if value is None or not 0 < value < float("inf"):
        raise RegistryError(f"{env} must be a positive {'whole ' if kind is int else ''}number of {unit}, not "
                            f"{clean(raw, 40)!r}")
    return value


def _ctype(resp) -> str:
    return clean(resp.headers.get("Content-Type", "").split(";")[0].strip().lower(), 60)


def _encoded(resp) -> str:
    """Why a compressed body (this client asks for none) is refused: its size says nothing of what it unpacks
    to; "" for a plain one."""
    coding = resp.headers.get("Content-Encoding", "identity").strip().lower()
    return "" if coding in ("", "identity") else f"compressed ({clean(coding, 20)}), which this client refuses"


def _head(session: _Session, resp, cap: int) -> bytes:
    """At most ``cap`` bytes of a body, for an error message."""
    head = bytearray()
    for chunk in resp.iter_raw():
        session.take(len(chunk))
        head += chunk[:cap - len(head)]
        if len(head) >= cap:
            break
    return bytes(head)


def _client():
    import httpx  # lazy: httpx (installed with huggingface_hub)

    token = os.environ.get("P2PZ_TOKEN")
    headers = {"User-Agent": "p2pz", "Accept-Encoding": "identity"}
    headers |= {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.Client(headers=headers, timeout=TIMEOUT_S, follow_redirects=False)


def _all_refs(session: _Session, client) -> list[str]:
    from p2pz.registry.library.naming import RefError, parse_ref

    refs, page, pages = {}, 1, None
    while True:
        listing = session.json(client, "GET", "/api/directions", Listing, "a page of directions",
                               params={"deprecated": "true", "per_page": 200, "page": page})
        if pages is None:
            pages = listing.pages
            if pages > MAX_LIST_PAGES:
                raise RegistryError(f"the registry at {session.base} lists {pages} pages of directions, over this "
                                    f"client's limit of {MAX_LIST_PAGES}; pull the directions by name")
        for item in listing.items:
            try:
                if item.ref != item.ref.strip() or parse_ref(item.ref)[1] is None:
                    raise RefError("no version")
            except RefError:
                raise RegistryError(f"the registry at {session.base} listed a malformed direction reference "
                                    f"{clean(ascii(item.ref))}; is it a p2pz serve?") from None
            refs[item.ref] = None
        if page >= pages:
            return list(refs)
        page += 1


def pull(reg, url: str, refs: list[str], *, renumber: bool = False, progress: bool = False) -> dict:
    """Pull ``refs`` (default: every direction version there) from another registry, all or nothing."""
    from .archive import store_libraries

    base = base_url(url)
    session = _Session(base, "pull")
    libraries = session.run(lambda: _fetch(session, list(refs), progress))
    out = store_libraries(reg.db, libraries, source=base, renumber=renumber)
    return {"registry": base, **out}


def _fetch(session: _Session, refs: list[str], progress: bool) -> list:
    """Every library to pull, downloaded and checked (the network part of :func:`pull`, in its worker)."""
    from p2pz.store.progress import progress_bar

    from .archive import MAX_TENSOR_BYTES, read_archive

    base = session.base
    with _client() as client, tempfile.TemporaryDirectory(ignore_cleanup_errors=True) as tmp:
        refs = refs or _all_refs(session, client)
        if not refs:
            raise RegistryError(f"the registry at {base} holds no directions")
        chunks = export_chunks(refs)
        libraries = []
        with progress_bar(len(chunks), f"pull {base}", enabled=progress, unit="library") as bar:
            for n, chunk in enumerate(chunks):
                path = Path(tmp) / f"{n}.p2pz"
                session.download(client, chunk, path, MAX_TENSOR_BYTES)
                try:
                    libraries.append(read_archive(path))  # every field, hash and tensor checked before any write
                except RegistryError as exc:
                    said = " ".join(str(exc).replace(str(path), "the library").split())
                    raise RegistryError(f"the registry at {base} sent a library that is not valid: {said}") from None
                bar.update()
    return libraries


def push(reg, url: str, refs: list[str], *, renumber: bool = False) -> dict:
    """Push ``refs`` to another registry (one ``/api/import``: one transaction there)."""
    from .archive import export_library

    base = base_url(url)
    if not refs:
        raise RegistryError("name the directions to push: p2pz push URL NAME[@V]…")
    session = _Session(base, "push")
    with tempfile.TemporaryDirectory(ignore_cleanup_errors=True) as tmp:
        path = Path(tmp) / "push.p2pz"
        info = export_library(reg.db, list(refs), path)
        params = {"renumber": "true" if renumber else "false", "source": f"p2pz push from {socket.gethostname()}"}

        def send():
            with _client() as client, open(path, "rb") as fh:
                return session.json(client, "POST", "/api/import", Imported, "an import's result", writing=True,
                                    params=params, files={"file": ("push.p2pz", fh, "application/zip")})
        answer = session.run(send)
    return {"registry": base, "bytes": info["bytes"], **answer.model_dump(by_alias=True)}
