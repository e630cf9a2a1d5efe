"""A small, real Hugging Face Hub-compatible HTTP server on 127.0.0.1, for tests.

Nothing in huggingface_hub is mocked: point it here with ``HfApi(endpoint=hub.url)``,
``hf_hub_download(..., endpoint=hub.url)`` or ``HF_ENDPOINT`` and it talks HTTP to this server, which keeps
what is pushed in memory. Model and dataset repos are supported. Written against huggingface_hub 2.4.0.

Endpoints (``{type}`` is ``models`` or ``datasets``; ``{rev}`` a branch, a tag or a full 40-hex commit sha)::

    POST      /api/repos/create                          create_repo (409 + "url" when it exists, for exist_ok)
    POST      /api/validate-yaml                         README.md check made by create_commit: always valid
    GET       /api/{type}/{ns}/{name}[/revision/{rev}]   repo_info / model_info / dataset_info: sha, siblings
    GET       /api/{type}/{ns}/{name}/tree/{rev}[/{dir}] list_repo_tree / list_repo_files (one page, no Link)
    GET       /api/{type}/{ns}/{name}/refs               list_repo_refs
    POST      /api/{type}/{ns}/{name}/preupload/{branch} uploadMode "lfs" by the real Hub's rules (``wants_lfs``:
                                                         the default .gitattributes suffixes, ≥ 10 MiB, or a
                                                         binary sample), else "regular"; ``lfs=False``: all regular
    POST      /[datasets/]{ns}/{name}.git/info/lfs/objects/batch    git-lfs batch API (upload, basic transfer):
                                                         a signed storage PUT + verify per object not yet stored
    POST      /[datasets/]{ns}/{name}.git/info/lfs/objects/verify   the object is stored with that size
    POST      /api/{type}/{ns}/{name}/commit/{branch}    NDJSON commit: file (base64), lfsFile (a stored sha256),
                                                         deletedFile, deletedFolder
    POST      /api/{type}/{ns}/{name}/branch/{branch}    create_branch (startingPoint: any rev; default main)
    POST      /api/{type}/{ns}/{name}/tag/{rev}          create_tag
    HEAD/GET  /[datasets/]{ns}/{name}/resolve/{rev}/{path}   hf_hub_download / snapshot_download (Range honoured)

LFS storage is a second server on another port (another origin, as S3 and the CDN are for the real Hub), reached
only through URLs signed by the Hub: ``PUT /upload/...`` checks the content against its sha256 and size, ``GET
/blobs/...`` serves an LFS file at a commit. Resolving an LFS file answers 302 to its storage URL with
``X-Linked-Etag`` (its sha256) and ``X-Linked-Size``, so huggingface_hub downloads it from storage and drops the
Authorization header on the way (``Request.authorization`` records whether one arrived).

Resolve answers of regular files carry ``X-Repo-Commit`` (the resolved commit), ``ETag`` (the quoted git blob
sha1) and ``Content-Length``; errors carry ``X-Error-Code`` (``RepoNotFound``, ``RevisionNotFound``, ``EntryNotFound``) and
``X-Error-Message`` so huggingface_hub raises its own exception classes. Commits get a 40-hex sha and form a
linear history per branch; ``parentCommit`` that is not the branch head is refused with 412.

Not implemented, compared with the real Hub: Xet (no ``xet-write-token`` endpoint and no ``X-Xet-Hash`` header:
tests set ``huggingface_hub.constants.HF_HUB_DISABLE_XET``, since with ``hf_xet`` installed the client would
upload LFS files through Xet), LFS multipart transfers and download of LFS objects by the batch API, pull requests (``create_pr`` gets 400),
``.gitignore`` rules (``shouldIgnore`` is always false), copies between repos, deleting repos/branches/tags,
commit listings, pagination, users/orgs/whoami, gating, spaces, and real git objects (shas are not git's).
A new repo starts with one empty "initial commit" (the real Hub adds a ``.gitattributes``).

Auth: with ``tokens`` given, writes need ``Authorization: Bearer <one of them>`` (else 401 "Invalid credentials
in Authorization header"), and a private repo is invisible without one (401 ``RepoNotFound``, as the Hub answers
for a missing repo). A wrong token is refused on every request. Tokens are never logged or echoed.

huggingface_hub 2.4.0 quirks for tests:
- Offline mode is read once at import into ``huggingface_hub.constants.HF_HUB_OFFLINE`` (tests/conftest.py sets
  ``HF_HUB_OFFLINE=1`` before that), and every request checks ``constants.is_offline_mode()``, which returns that
  global: toggle it in-process with ``monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", ...)``.
- The server chooses which files go out of band (preupload's "lfs"); the client chooses how: Xet when ``hf_xet``
  is installed and ``HF_HUB_DISABLE_XET`` is off, else the git-lfs batch API. Only a resolve answer with
  ``X-Xet-Hash`` triggers a Xet download.
- The preupload answer's ``oid`` (git blob sha1 of a regular file already on the branch, sha256 of an LFS one)
  makes the client drop unchanged files from the commit, and the batch API's answer without actions skips the
  upload of content storage already holds: an incremental push only sends new or changed content.
- A download cut short is retried after one second, up to 5 times without progress, then ``httpx2``'s
  ``RemoteProtocolError`` escapes (not an ``HfHubHTTPError``). It writes by 10 MiB chunks, so a smaller file is
  fetched again from the start; only past a full chunk does the retry send ``Range: bytes=N-`` (answered 206).
  A 500 on the GET is not retried: ``HfHubHTTPError`` at once, and no partial blob is left in the cache.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Iterable
from urllib.parse import parse_qs, quote, unquote, urlsplit

INVALID_CREDENTIALS = "Invalid credentials in Authorization header"
_API = re.compile(r"/api/(?P<type>model|dataset)s/(?P<repo>[^/]+/[^/]+)"
                  r"(?:/(?P<action>[a-z]+)(?:/(?P<rev>[^/]+)(?P<rest>/.+)?)?)?")
_RESOLVE = re.compile(r"/(?:(?P<type>dataset)s/)?(?P<repo>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<rest>.+)")
_LFS = re.compile(r"/(?:(?P<type>dataset)s/)?(?P<repo>[^/]+/[^/]+)\.git/info/lfs/objects/(?P<action>batch|verify)")
_RANGE = re.compile(r"bytes=(\d+)-(\d*)")


def git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True)
class Blob:
    data: bytes
    oid: str  # git blob sha1 of what git stores (the content, or an LFS file's pointer); tamper() keeps it
    lfs: str | None = None  # an LFS file's sha256 (its content sits in the repo's LFS storage)


def lfs_pointer(sha256: str, size: int) -> bytes:
    """The git-lfs pointer file git stores in place of an LFS file's content (git-lfs spec v1)."""
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()


# The LFS rules of a new repo on the real Hub: its default .gitattributes (the weight and archive suffixes), plus
# any file of 10 MiB or more and any file whose first bytes are not text.
LFS_SUFFIXES = (".7z", ".arrow", ".bin", ".bz2", ".ckpt", ".ftz", ".gz", ".h5", ".joblib", ".mlmodel", ".model",
                ".msgpack", ".npy", ".npz", ".onnx", ".ot", ".parquet", ".pb", ".pickle", ".pkl", ".pt", ".pth",
                ".rar", ".safetensors", ".tar", ".tflite", ".tgz", ".wasm", ".xz", ".zip", ".zst")
LFS_MIN_SIZE = 10 * 2**20


def wants_lfs(path: str, size: int, sample: bytes) -> bool:
    return path.lower().endswith(LFS_SUFFIXES) or size >= LFS_MIN_SIZE or b"\0" in sample


@dataclass
class Commit:  # only tamper() mutates one, through its tree
    sha: str
    parent: str | None
    message: str
    tree: dict[str, Blob]
    added: tuple[str, ...]
    deleted: tuple[str, ...]
    date: datetime


@dataclass
class Repo:
    repo_type: str
    repo_id: str
    private: bool
    created: datetime = field(default_factory=lambda: datetime.now(timezone.utc))
    commits: dict[str, Commit] = field(default_factory=dict)
    branches: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    lfs_objects: dict[str, bytes] = field(default_factory=dict)  # sha256 → content uploaded to LFS storage

    def resolve(self, revision: str) -> Commit | None:
        sha = self.branches.get(revision) or self.tags.get(revision) or revision
        return self.commits.get(sha)

    def commit(self, branch: str, message: str, tree: dict[str, Blob], added=(), deleted=()) -> Commit:
        parent = self.branches.get(branch)
        seed = json.dumps([parent, message, sorted((p, b.oid) for p, b in tree.items()), time.time_ns()])
        new = Commit(hashlib.sha1(seed.encode()).hexdigest(), parent, message, tree, tuple(added), tuple(deleted),
                     datetime.now(timezone.utc))
        self.commits[new.sha] = new
        self.branches[branch] = new.sha
        return new


@dataclass(frozen=True)
class Request:
    """One logged request: no headers. ``uploaded``: paths whose content travelled inline (commit requests), or
    the sha256 of an object PUT to LFS storage. ``host``: ``hub`` or ``storage`` (the LFS/CDN server);
    ``authorization``: whether the request carried an Authorization header (never its value)."""
    method: str
    path: str
    status: int
    uploaded: tuple[str, ...] = ()
    host: str = "hub"
    authorization: bool = False


@dataclass
class _Response:
    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    cut: int | None = None  # send only this many body bytes, then drop the connection


def _lfs_info(blob: Blob) -> dict:
    if blob.lfs is None:
        return {}
    return {"lfs": {"oid": blob.lfs, "size": len(blob.data), "pointerSize": len(lfs_pointer(blob.lfs,
                                                                                             len(blob.data)))}}


def _json(obj, status: int = 200) -> _Response:
    return _Response(status, json.dumps(obj).encode(), {"Content-Type": "application/json"})


class HubError(Exception):
    def __init__(self, status: int, message: str, code: str | None = None, headers=None, extra=None):
        super().__init__(message)
        self.status, self.message, self.code = status, message, code
        self.headers, self.extra = headers or {}, extra or {}

    def response(self) -> _Response:
        response = _json({"error": self.message, **self.extra}, self.status)
        header_safe = self.message.encode("ascii", "backslashreplace").decode()  # headers are latin-1 only
        response.headers.update({"X-Error-Message": header_safe, **self.headers})
        if self.code:
            response.headers["X-Error-Code"] = self.code
        return response


class HubServer:
    """In-memory Hub. Use as ``with HubServer(tokens={"tok"}) as hub:`` or call ``start()``/``stop()``."""

    def __init__(self, tokens: Iterable[str] | None = None, lfs: bool = True):
        self.tokens = frozenset(tokens) if tokens is not None else None
        self.lfs = lfs  # False: every file "regular" (inline in the commit), as before LFS was implemented
        self._secret = hashlib.sha256(repr((id(self), time.time_ns())).encode()).hexdigest()  # signs storage URLs
        self._storage: ThreadingHTTPServer | None = None
        self.log: list[Request] = []
        self._repos: dict[tuple[str, str], Repo] = {}
        self._failures: dict[tuple[str, str, str], list] = {}  # (type, repo, path) -> [mode, remaining]
        self._lock = threading.RLock()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> HubServer:
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), type("Handler", (_Handler,), {"hub": self}))
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="hub-server", daemon=True)
        self._thread.start()
        # LFS storage, the real Hub's S3/CDN: another origin (port), reached through signed URLs, no token
        self._storage = ThreadingHTTPServer(("127.0.0.1", 0), type("Storage", (_StorageHandler,), {"hub": self}))
        self._storage.daemon_threads = True
        self._storage_thread = threading.Thread(target=self._storage.serve_forever, kwargs={"poll_interval": 0.05},
                                                name="hub-storage", daemon=True)
        self._storage_thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            for server, thread in ((self._httpd, self._thread), (self._storage, self._storage_thread)):
                server.shutdown()
                server.server_close()
                thread.join()
            self._httpd = self._thread = self._storage = self._storage_thread = None

    def __enter__(self) -> HubServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    @property
    def storage_url(self) -> str:
        return f"http://127.0.0.1:{self._storage.server_address[1]}"

    def _sign(self, path: str) -> str:
        import hmac

        return hmac.new(self._secret.encode(), path.encode(), hashlib.sha256).hexdigest()

    def _signed(self, path: str) -> str:
        return f"{self.storage_url}{quote(path)}?sig={self._sign(path)}"

    # -- test helpers ---------------------------------------------------------------------------------------

    def repo(self, repo_id: str, repo_type: str = "model") -> Repo:
        with self._lock:
            return self._repos[(repo_type, repo_id)]

    def files(self, repo_id: str, revision: str = "main", repo_type: str = "model") -> dict[str, bytes]:
        with self._lock:
            commit = self.repo(repo_id, repo_type).resolve(revision)
            if commit is None:
                raise KeyError(revision)
            return {path: blob.data for path, blob in sorted(commit.tree.items())}

    def commits(self, repo_id: str, branch: str = "main", repo_type: str = "model") -> list[Commit]:
        """The branch's history, oldest first (the empty "initial commit" included)."""
        with self._lock:
            repo = self.repo(repo_id, repo_type)
            history, sha = [], repo.branches[branch]
            while sha is not None:
                history.append(repo.commits[sha])
                sha = repo.commits[sha].parent
            return history[::-1]

    def tamper(self, repo_id: str, path: str, new_bytes: bytes, branch: str = "main", repo_type: str = "model"):
        """Rewrite a file in place at the branch head, no new commit: same commit sha, same ETag (the original
        blob sha1), new bytes and Content-Length. huggingface_hub does not hash downloads; a client must."""
        with self._lock:
            commit = self.repo(repo_id, repo_type).resolve(branch)
            old = commit.tree[path]
            commit.tree[path] = Blob(bytes(new_bytes), old.oid, old.lfs)

    def fail_download(self, repo_id: str, path: str, *, mode: str = "truncate", times: int | None = 1,
                      repo_type: str = "model") -> None:
        """Make the next ``times`` GETs of ``path`` (None: all of them) fail. ``"truncate"``: announce the full
        Content-Length, send the bytes up to the file's middle, then drop the connection (huggingface_hub retries,
        and gives up after 5 tries 1 s apart: ``times=None`` costs ~5 s). ``"error"``: answer 500."""
        if mode not in ("truncate", "error"):
            raise ValueError(mode)
        with self._lock:
            self._failures[(repo_type, repo_id, path)] = [mode, times]

    def _take_failure(self, key: tuple[str, str, str]) -> str | None:
        failure = self._failures.get(key)
        if failure is None:
            return None
        mode, remaining = failure
        if remaining is not None:
            failure[1] -= 1
            if failure[1] <= 0:
                del self._failures[key]
        return mode


class _Handler(BaseHTTPRequestHandler):
    hub: HubServer  # set on the per-server subclass

    def log_message(self, format, *args):  # quiet, and never prints headers
        pass

    def do_GET(self):
        self._dispatch()

    do_HEAD = do_POST = do_PUT = do_GET
    host = "hub"

    # -- plumbing -------------------------------------------------------------------------------------------

    def _dispatch(self) -> None:
        hub = self.hub
        self._payload = self._read_body()  # read before answering
        url = urlsplit(self.path)
        self._query = parse_qs(url.query)
        self._uploaded: tuple[str, ...] = ()
        try:
            with hub._lock:
                response = self._route(url.path)
        except HubError as error:
            response = error.response()
        except Exception as error:  # a bug here: answer 500 rather than drop the connection
            response = _json({"error": f"test hub failed: {error!r}"}, 500)
        with hub._lock:
            hub.log.append(Request(self.command, self.path.split("?")[0], response.status, self._uploaded, self.host,
                                   "Authorization" in self.headers))
        self.send_response(response.status)
        headers = {"Content-Type": "application/octet-stream", "Content-Length": str(len(response.body)),
                   **response.headers}
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(response.body[:response.cut])
        if response.cut is not None:
            self.close_connection = True

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() != "chunked":
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))
        body = bytearray()
        while size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16):
            body += self.rfile.read(size)
            self.rfile.readline()
        while self.rfile.readline().strip():  # trailers
            pass
        return bytes(body)

    def _flag(self, name: str) -> bool:
        return self._query.get(name, [""])[0].lower() in ("1", "true")

    def _body_json(self) -> dict:
        try:
            return json.loads(self._payload or b"{}")
        except ValueError:
            raise HubError(400, "Invalid JSON body") from None

    def _authenticated(self) -> bool:
        if self.hub.tokens is None:
            return True
        auth = self.headers.get("Authorization")
        if not auth:
            return False
        scheme, _, token = auth.partition(" ")
        if scheme.lower() != "bearer" or token not in self.hub.tokens:
            raise HubError(401, INVALID_CREDENTIALS)
        return True

    def _repo(self, repo_type: str, repo_id: str, *, write: bool = False) -> Repo:
        authenticated = self._authenticated()
        if write and not authenticated:
            raise HubError(401, INVALID_CREDENTIALS)
        repo = self.hub._repos.get((repo_type, repo_id))
        if repo is None or (repo.private and not authenticated):
            raise HubError(404 if authenticated else 401, "Repository not found", "RepoNotFound")
        return repo

    def _repo_url(self, repo: Repo) -> str:
        return f"{self.hub.url}/{'datasets/' if repo.repo_type == 'dataset' else ''}{repo.repo_id}"

    @staticmethod
    def _commit_at(repo: Repo, revision: str) -> Commit:
        commit = repo.resolve(revision)
        if commit is None:
            raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
        return commit

    @staticmethod
    def _branch(repo: Repo, branch: str) -> Commit:
        if branch not in repo.branches:
            raise HubError(404, f"Branch not found: {branch}", "RevisionNotFound")
        return repo.commits[repo.branches[branch]]

    def _route(self, path: str) -> _Response:
        method = self.command
        if method == "POST" and path == "/api/repos/create":
            return self._create_repo()
        if method == "POST" and path == "/api/validate-yaml":
            return _json({"errors": [], "warnings": []})
        if match := _API.fullmatch(path):
            action = match["action"] or "revision"
            handler = {("GET", "revision"): self._repo_info, ("GET", "tree"): self._tree, ("GET", "refs"): self._refs,
                       ("POST", "preupload"): self._preupload, ("POST", "commit"): self._commit,
                       ("POST", "branch"): self._create_branch, ("POST", "tag"): self._create_tag}.get((method, action))
            if handler is not None:
                repo = self._repo(match["type"], match["repo"], write=method == "POST")
                return handler(repo, unquote(match["rev"] or "main"), unquote(match["rest"] or "").strip("/"))
        elif (match := _LFS.fullmatch(path)) and method == "POST":
            repo = self._repo(match["type"] or "model", match["repo"], write=True)
            return self._lfs_batch(repo) if match["action"] == "batch" else self._lfs_verify(repo)
        elif (match := _RESOLVE.fullmatch(path)) and method in ("GET", "HEAD"):
            repo = self._repo(match["type"] or "model", match["repo"])
            return self._resolve(repo, unquote(match["rev"]), unquote(match["rest"]))
        raise HubError(404, f"{method} {path} is not implemented by this test Hub")

    # -- endpoints ------------------------------------------------------------------------------------------

    def _create_repo(self) -> _Response:
        if not self._authenticated():
            raise HubError(401, INVALID_CREDENTIALS)
        body = self._body_json()
        repo_type = body.get("type") or "model"
        if repo_type not in ("model", "dataset") or not body.get("organization") or not body.get("name"):
            raise HubError(400, "This test Hub needs a model or dataset repo id of the form 'namespace/name'")
        repo = Repo(repo_type, f"{body['organization']}/{body['name']}", body.get("visibility") == "private")
        existing = self.hub._repos.get((repo_type, repo.repo_id))
        if existing is not None:
            raise HubError(409, f"You already created this {repo_type} repo", extra={"url": self._repo_url(existing)})
        repo.commit("main", "initial commit", {})
        self.hub._repos[(repo_type, repo.repo_id)] = repo
        return _json({"url": self._repo_url(repo), "name": repo.repo_id})

    def _repo_info(self, repo: Repo, revision: str, _rest: str) -> _Response:
        commit = self._commit_at(repo, revision)
        blobs = self._flag("blobs")
        siblings = [{"rfilename": path, **({"size": len(blob.data), "blobId": blob.oid, **_lfs_info(blob)}
                                           if blobs else {})}
                    for path, blob in sorted(commit.tree.items())]
        return _json({"id": repo.repo_id, "author": repo.repo_id.split("/")[0], "sha": commit.sha,
                      "private": repo.private, "disabled": False, "gated": False, "tags": [],
                      "createdAt": _iso(repo.created), "lastModified": _iso(commit.date), "siblings": siblings})

    def _tree(self, repo: Repo, revision: str, folder: str) -> _Response:
        commit = self._commit_at(repo, revision)
        recursive, prefix = self._flag("recursive"), f"{folder}/" if folder else ""
        entries: dict[str, dict] = {}
        for path, blob in commit.tree.items():
            if not path.startswith(prefix):
                continue
            parts = path[len(prefix):].split("/")
            for depth in range(1, len(parts) if recursive else min(len(parts), 2)):
                folder_path = prefix + "/".join(parts[:depth])
                oid = hashlib.sha1(f"tree {commit.sha} {folder_path}".encode()).hexdigest()
                entries.setdefault(folder_path, {"type": "directory", "oid": oid, "size": 0, "path": folder_path})
            if recursive or len(parts) == 1:
                entries[path] = {"type": "file", "oid": blob.oid, "size": len(blob.data), "path": path,
                                 **_lfs_info(blob)}
        if folder and not entries:
            raise HubError(404, f"Entry not found: {folder}", "EntryNotFound", {"X-Repo-Commit": commit.sha})
        return _json([entries[path] for path in sorted(entries)])

    def _refs(self, repo: Repo, _revision: str, _rest: str) -> _Response:
        def refs(names: dict[str, str], kind: str) -> list[dict]:
            return [{"name": n, "ref": f"refs/{kind}/{n}", "targetCommit": sha} for n, sha in sorted(names.items())]
        return _json({"branches": refs(repo.branches, "heads"), "tags": refs(repo.tags, "tags"),
                      "converts": [], "pullRequests": []})

    def _preupload(self, repo: Repo, branch: str, _rest: str) -> _Response:
        if self._flag("create_pr"):
            raise HubError(400, "Pull requests are not supported by this test Hub")
        head = self._branch(repo, branch)
        files = []
        for f in self._body_json().get("files", []):
            sample = base64.b64decode(f.get("sample") or "")
            lfs = self.hub.lfs and wants_lfs(f["path"], int(f.get("size") or 0), sample)
            blob = head.tree.get(f["path"])
            # the oid the client compares with its own: sha256 for an LFS file, the git blob sha1 otherwise
            oid = None if blob is None else (blob.lfs or blob.oid)
            files.append({"path": f["path"], "uploadMode": "lfs" if lfs else "regular", "shouldIgnore": False,
                          "oid": oid})
        return _json({"files": files, "commitOid": head.sha})

    def _lfs_batch(self, repo: Repo) -> _Response:
        """The git-lfs batch API (upload only, basic transfer): an upload action (a signed PUT to storage) and a
        verify action per object the repo's storage lacks; none for those it holds."""
        body = self._body_json()
        if body.get("operation") != "upload" or "basic" not in (body.get("transfers") or ["basic"]):
            raise HubError(400, "This test Hub implements LFS uploads with the basic transfer only")
        prefix = "datasets/" if repo.repo_type == "dataset" else ""
        objects = []
        for obj in body.get("objects", []):
            oid, size = str(obj.get("oid")), obj.get("size")
            if not re.fullmatch(r"[0-9a-f]{64}", oid) or not isinstance(size, int) or size < 0:
                objects.append({"oid": oid, "size": size if isinstance(size, int) else 0,
                                "error": {"code": 422, "message": "oid must be a sha256 and size an integer"}})
                continue
            entry = {"oid": oid, "size": size, "authenticated": True}
            if len(repo.lfs_objects.get(oid, b"")) != size or oid not in repo.lfs_objects:
                put = f"/upload/{repo.repo_type}/{repo.repo_id}/{oid}/{size}"
                entry["actions"] = {"upload": {"href": self.hub._signed(put), "expires_in": 3600},
                                    "verify": {"href": f"{self.hub.url}/{prefix}{repo.repo_id}.git/info/lfs/objects/"
                                                       "verify"}}
            objects.append(entry)
        return _json({"transfer": "basic", "objects": objects, "hash_algo": "sha256"})

    def _lfs_verify(self, repo: Repo) -> _Response:
        body = self._body_json()
        data = repo.lfs_objects.get(str(body.get("oid")))
        if data is None or len(data) != body.get("size"):
            raise HubError(404, f"LFS object {body.get('oid')} of {body.get('size')} bytes was not uploaded")
        return _json({"success": True})

    def _commit(self, repo: Repo, branch: str, _rest: str) -> _Response:
        if self._flag("create_pr"):
            raise HubError(400, "Pull requests are not supported by this test Hub")
        try:
            lines = [json.loads(line) for line in self._payload.splitlines() if line.strip()]
        except ValueError:
            raise HubError(400, "Invalid NDJSON commit payload") from None
        self._uploaded = tuple(line["value"]["path"] for line in lines if line.get("key") == "file")
        header = next((line["value"] for line in lines if line.get("key") == "header"), None)
        if header is None:
            raise HubError(400, "The commit payload has no header line")
        head = self._branch(repo, branch)
        if header.get("parentCommit") not in (None, head.sha):
            raise HubError(412, "A commit has happened since. Please refresh and try again.")
        tree, added, deleted = dict(head.tree), [], []
        for line in lines:
            key, value = line.get("key"), line.get("value", {})
            if key == "file":
                content = value["content"]
                data = base64.b64decode(content) if value.get("encoding") == "base64" else content.encode()
                tree[value["path"]] = Blob(data, git_blob_sha1(data))
                added.append(value["path"])
            elif key in ("deletedFile", "deletedFolder"):
                path = value["path"].rstrip("/")
                gone = [p for p in tree if p == path] if key == "deletedFile" else \
                       [p for p in tree if p.startswith(path + "/")]
                if not gone:
                    raise HubError(404, f"A file with this name doesn't exist: {path}", "EntryNotFound")
                for p in gone:
                    del tree[p]
                deleted.extend(gone)
            elif key == "lfsFile":
                oid = value.get("oid")
                data = repo.lfs_objects.get(oid)
                if value.get("algo", "sha256") != "sha256" or data is None:
                    raise HubError(422, f"Your push was rejected because an LFS pointer pointed to a file that "
                                        f"does not exist: {value.get('path')} ({oid})")
                tree[value["path"]] = Blob(data, git_blob_sha1(lfs_pointer(oid, len(data))), oid)
                added.append(value["path"])
            elif key != "header":
                raise HubError(400, f"Unknown commit operation: {key}")
        commit = repo.commit(branch, header.get("summary", ""), tree, added, deleted)
        return _json({"success": True, "commitOid": commit.sha, "hookOutput": "",
                      "commitUrl": f"{self._repo_url(repo)}/commit/{commit.sha}"})

    def _create_branch(self, repo: Repo, branch: str, _rest: str) -> _Response:
        start = self._commit_at(repo, self._body_json().get("startingPoint") or "main")
        if branch in repo.branches or branch in repo.tags:
            raise HubError(409, f"Reference already exists: {branch}")
        repo.branches[branch] = start.sha
        return _json({})

    def _create_tag(self, repo: Repo, revision: str, _rest: str) -> _Response:
        commit, tag = self._commit_at(repo, revision), self._body_json().get("tag")
        if not tag:
            raise HubError(400, "Missing tag name")
        if tag in repo.tags or tag in repo.branches:
            raise HubError(409, f"Tag already exists: {tag}")
        repo.tags[tag] = commit.sha
        return _json({})

    def _resolve(self, repo: Repo, revision: str, path: str) -> _Response:
        commit = self._commit_at(repo, revision)
        blob = commit.tree.get(path)
        if blob is None:
            raise HubError(404, f"Entry not found: {path}", "EntryNotFound", {"X-Repo-Commit": commit.sha})
        if blob.lfs is not None:  # as the real Hub: a redirect to storage, the file's facts on the redirect
            prefix = "datasets/" if repo.repo_type == "dataset" else ""
            where = self.hub._signed(f"/blobs/{repo.repo_type}/{repo.repo_id}/{commit.sha}/{path}")
            return _Response(302, b"", {"Location": where, "X-Repo-Commit": commit.sha, "ETag": f'"{blob.oid}"',
                                        "X-Linked-Etag": f'"{blob.lfs}"', "X-Linked-Size": str(len(blob.data)),
                                        "Content-Type": "text/plain", "X-Resolved-From": f"/{prefix}{repo.repo_id}"})
        return self._serve(repo, commit, path, blob)

    def _serve(self, repo: Repo, commit: Commit, path: str, blob: Blob) -> _Response:
        """A file's bytes (``Range`` honoured; the failures of :meth:`HubServer.fail_download` injected)."""
        headers = {"X-Repo-Commit": commit.sha, "ETag": f'"{blob.lfs or blob.oid}"', "Accept-Ranges": "bytes"}
        data, start, status = blob.data, 0, 200
        if self.command == "GET" and (requested := self.headers.get("Range")):
            match = _RANGE.fullmatch(requested.strip())
            if match is None or int(match[1]) >= len(data):
                raise HubError(416, f"Range not satisfiable: {requested}", headers={"Content-Range": f"*/{len(data)}"})
            start, end = int(match[1]), min(int(match[2] or len(data) - 1), len(data) - 1)
            status, data = 206, data[start:end + 1]
            headers["Content-Range"] = f"bytes {start}-{end}/{len(blob.data)}"
        failure = self.hub._take_failure((repo.repo_type, repo.repo_id, path)) if self.command == "GET" else None
        if failure == "error":
            raise HubError(500, "Internal Error (injected by fail_download)")
        cut = max(len(blob.data) // 2 - start, 0) if failure == "truncate" else None
        return _Response(status, data, headers, cut)


class _StorageHandler(_Handler):
    """LFS storage (the real Hub's S3 and CDN): signed URLs only, no token expected or needed.

        PUT  /upload/{type}/{ns}/{name}/{sha256}/{size}?sig=   an LFS object (basic transfer), hash and size checked
        GET  /blobs/{type}/{ns}/{name}/{commit}/{path}?sig=    an LFS file's bytes at a commit (Range honoured)
    """
    host = "storage"

    def _route(self, path: str) -> _Response:
        path = unquote(path)
        if self._query.get("sig", [""])[0] != self.hub._sign(path):
            raise HubError(403, "Request has expired or the signature does not match")
        parts = path.strip("/").split("/")
        if self.command == "PUT" and len(parts) == 6 and parts[0] == "upload":
            _, repo_type, ns, name, oid, size = parts
            repo = self.hub._repos.get((repo_type, f"{ns}/{name}"))
            if repo is None:
                raise HubError(404, "No such bucket")
            if len(self._payload) != int(size) or hashlib.sha256(self._payload).hexdigest() != oid:
                raise HubError(400, "The uploaded content does not match its announced sha256 and size")
            repo.lfs_objects[oid] = self._payload
            self._uploaded = (oid,)
            return _Response(200, b"", {"ETag": f'"{hashlib.md5(self._payload).hexdigest()}"'})
        if self.command in ("GET", "HEAD") and len(parts) >= 6 and parts[0] == "blobs":
            repo_type, repo_id, sha, file_path = parts[1], f"{parts[2]}/{parts[3]}", parts[4], "/".join(parts[5:])
            repo = self.hub._repos.get((repo_type, repo_id))
            commit = repo.commits.get(sha) if repo else None
            blob = commit.tree.get(file_path) if commit else None
            if blob is None:
                raise HubError(404, "The specified key does not exist")
            return self._serve(repo, commit, file_path, blob)
        raise HubError(404, f"{self.command} {path} is not a storage operation")
