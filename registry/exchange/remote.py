"""Registry to registry (issue #23, architecture §13): ``p2pz pull http(s)://HOST[:PORT]`` and ``p2pz push URL NAME…``
against another registry's ``p2pz serve``, through its ``/api/directions``, ``/api/export`` and ``/api/import``.

The same rules as the Hub: idempotent (content addressing), versions kept, a version the other side holds with
other content refused (unless ``--renumber``), all or nothing (every library downloaded and checked before one
transaction stores them; a push is one ``/api/import``, one transaction there). The bearer token comes from
``P2PZ_TOKEN`` and is sent only in the ``Authorization`` header, never printed; a URL's own credentials are
refused so that they never reach a log, an origin record or an error.
"""

from __future__ import annotations

import os
import socket
import tempfile
from pathlib import Path
from urllib.parse import quote, urlsplit

from p2pz.registry.library.records import RegistryError

MAX_REFS_PER_EXPORT = 200  # /api/export takes names in its query string (≤ 10,000 characters)
TIMEOUT_S = 120.0


def base_url(url: str) -> str:
    """``http(s)://HOST[:PORT][/PREFIX]`` without a trailing slash; credentials, queries and fragments refused."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise RegistryError(f"malformed registry address {url!r}: write http://HOST:PORT (a p2pz serve)")
    if parts.username or parts.password:
        raise RegistryError("the registry address holds credentials; drop them from the URL and set P2PZ_TOKEN")
    if parts.query or parts.fragment:
        raise RegistryError("the registry address must not have a query or fragment: write http://HOST:PORT")
    return f"{parts.scheme}://{parts.netloc}{parts.path.rstrip('/')}"


def _client():
    import httpx  # lazy: httpx (installed with huggingface_hub)

    token = os.environ.get("P2PZ_TOKEN")
    headers = {"User-Agent": "p2pz"} | ({"Authorization": f"Bearer {token}"} if token else {})
    return httpx.Client(headers=headers, timeout=TIMEOUT_S, follow_redirects=False)


def _refusal(resp, base: str, writing: bool) -> RegistryError:
    try:
        said = str(resp.json().get("error", "")).splitlines()[0][:300]
    except (ValueError, AttributeError, IndexError):
        said = ""
    if resp.status_code == 401:
        return RegistryError(f"the registry at {base} refused the request (401): set P2PZ_TOKEN to its token")
    if resp.status_code == 403 and writing:
        return RegistryError(f"the registry at {base} refused the write (403): {said or 'it is read-only'}")
    if resp.status_code == 429:
        wait = resp.headers.get("Retry-After", "a few")
        return RegistryError(f"the registry at {base} is busy (429); try again in {wait} s")
    return RegistryError(f"the registry at {base} answered {resp.status_code}: {said or resp.reason_phrase}")


def _call(fn, base: str):
    import httpx  # lazy

    try:
        return fn()
    except httpx.HTTPError as exc:
        raise RegistryError(f"cannot reach the registry at {base} ({type(exc).__name__}); is p2pz serve running "
                            "there?") from None


def _all_refs(client, base: str) -> list[str]:
    refs, page = [], 1
    while True:
        resp = _call(lambda: client.get(f"{base}/api/directions", params={"deprecated": "true", "per_page": 200,
                                                                          "page": page}), base)
        if resp.status_code != 200:
            raise _refusal(resp, base, writing=False)
        body = resp.json()
        refs += [d["ref"] for d in body["items"]]
        if page >= body["pages"]:
            return refs
        page += 1


def _download(client, base: str, refs: list[str], dest: Path, limit: int) -> None:
    url = f"{base}/api/export?names={quote(','.join(refs), safe='@,')}"

    def fetch():
        with client.stream("GET", url) as resp:
            if resp.status_code != 200:
                resp.read()
                raise _refusal(resp, base, writing=False)
            size = 0
            with open(dest, "wb") as out:
                for chunk in resp.iter_bytes(1 << 20):
                    size += len(chunk)
                    if size > limit:
                        raise RegistryError(f"the library from {base} is over {limit >> 20} MB; pull fewer "
                                            "directions at a time")
                    out.write(chunk)
    _call(fetch, base)


def pull(reg, url: str, refs: list[str], *, renumber: bool = False, progress: bool = False) -> dict:
    """Pull ``refs`` (default: every direction version there) from another registry, all or nothing."""
    from p2pz.store.progress import progress_bar

    from .archive import MAX_TENSOR_BYTES, read_archive, store_libraries

    base = base_url(url)
    with _client() as client, tempfile.TemporaryDirectory() as tmp:
        refs = list(refs) or _all_refs(client, base)
        if not refs:
            raise RegistryError(f"the registry at {base} holds no directions")
        chunks = [refs[i:i + MAX_REFS_PER_EXPORT] for i in range(0, len(refs), MAX_REFS_PER_EXPORT)]
        libraries = []
        with progress_bar(len(chunks), f"pull {base}", enabled=progress, unit="library") as bar:
            for n, chunk in enumerate(chunks):
                path = Path(tmp) / f"{n}.p2pz"
                _download(client, base, chunk, path, MAX_TENSOR_BYTES)
                libraries.append(read_archive(path))  # every field, hash and tensor checked before any write
                bar.update()
    out = store_libraries(reg.db, libraries, source=base, renumber=renumber)
    return {"registry": base, **out}


def push(reg, url: str, refs: list[str], *, renumber: bool = False) -> dict:
    """Push ``refs`` to another registry (one ``/api/import``: one transaction there)."""
    from .archive import export_library

    base = base_url(url)
    if not refs:
        raise RegistryError("name the directions to push: p2pz push URL NAME[@V]…")
    with _client() as client, tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "push.p2pz"
        info = export_library(reg.db, list(refs), path)
        params = {"renumber": "true" if renumber else "false", "source": f"p2pz push from {socket.gethostname()}"}

        def send():
            with open(path, "rb") as fh:
                return client.post(f"{base}/api/import", params=params,
                                   files={"file": ("push.p2pz", fh, "application/zip")})
        resp = _call(send, base)
    if resp.status_code != 200:
        raise _refusal(resp, base, writing=True)
    return {"registry": base, "bytes": info["bytes"], **resp.json()}
