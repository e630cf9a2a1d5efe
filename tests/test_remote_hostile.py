"""``p2pz pull/push http://…`` against servers that are not a p2pz serve, or that misbehave on purpose (issue #35,
items 9-10): real HTTP servers on 127.0.0.1 (stdlib ``http.server`` in a thread). Every case ends in exit status
1 and one line on stderr naming the server; none depends on how fast the machine is (small budgets, bounded
drips, request counts)."""

import http.server
import json
import threading
import time
from urllib.parse import urlsplit

import pytest
from click.testing import CliRunner

from p2pz.registry import Registry
from p2pz.registry.cli import main
from p2pz.registry.exchange import remote

ESC = "\x1b[31m"
HTML = f"<!doctype html><html><title>{ESC}Welcome\x07</title>\n<body>nginx\r\n</body></html>".encode()
LISTING_ONE = json.dumps({"total": 1, "page": 1, "per_page": 200, "pages": 1, "items": [{"ref": "a@1"}]}).encode()


class Server:
    """``routes``: path → fn(handler) writing the answer; ``hits`` counts requests per path; ``sent`` the body
    bytes that reached the socket; ``done`` (set at teardown) ends whatever still drips."""

    def __init__(self, routes: dict):
        self.routes, self.hits, self.sent, self.done = routes, {}, 0, threading.Event()
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _any(self):
                path = urlsplit(self.path).path
                outer.hits[path] = outer.hits.get(path, 0) + 1
                if self.command == "POST":
                    self.rfile.read(int(self.headers.get("Content-Length", 0)))
                route = outer.routes.get(path)
                if route is None:
                    return answer(404, "text/plain", b"no such page")(self)
                try:
                    route(self)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up: what these tests want

            do_GET = do_POST = _any

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.httpd.block_on_close = False
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.where = f"127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True).start()

    def close(self):
        self.done.set()
        self.httpd.shutdown()
        self.httpd.server_close()


def answer(status: int, ctype: str | None, body: bytes, length: bool = True):
    def route(h):
        h.send_response(status)
        if ctype:
            h.send_header("Content-Type", ctype)
        if length:
            h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        h.wfile.write(body)
    return route


@pytest.fixture
def serve():
    servers = []

    def start(routes):
        servers.append(Server(routes))
        return servers[-1]
    yield start
    for s in servers:
        s.close()


@pytest.fixture(scope="module")
def db(tmp_path_factory):
    url = f"sqlite:///{tmp_path_factory.mktemp('hostile') / 'here.db'}"
    Registry.open(url).close()
    return url


@pytest.fixture(scope="module")
def mine(tmp_path_factory, tiny_model):
    """A registry with a direction to push."""
    url = f"sqlite:///{tmp_path_factory.mktemp('hostile') / 'mine.db'}"
    with Registry.open(url) as reg:
        reg.build_direction("cat", "dog", str(tiny_model), n=4)
    return url


def fails_in_one_line(r, server_or_text, *words):
    """Exit status 1, one ``error:`` line on stderr naming the server (host:port), no terminal escapes."""
    assert r.exit_code == 1, (r.exit_code, r.output, repr(r.exception))
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    where = server_or_text.where if isinstance(server_or_text, Server) else server_or_text
    assert where in lines[0], lines[0]
    assert not any(c in lines[0] for c in "\x1b\x07\r"), repr(lines[0])
    for w in words:
        assert w in lines[0], (w, lines[0])
    return lines[0]


def pull(db, url, *args, env=None):
    return CliRunner().invoke(main, ["--db", db, "pull", url, *args], env=env)


@pytest.mark.parametrize("status, ctype, body, said", [
    (200, "text/html; charset=utf-8", HTML, ["200 text/html", "Welcome", "nginx"]),  # a web site
    (200, "application/json", b'{"hello":1}', ["not a page of directions", "pages", '{"hello":1}']),
    (200, "application/json", b"[1]", ["not a page of directions"]),
    (200, "application/json", b'{"pages": "many", "items": "x"}', ["not a page of directions", "pages"]),
    (200, "application/json", b'{"pages": 1, "items": [{"ref": 5}]}', ["items.0.ref"]),
    (200, "application/json", b'{"pages": 1, "items": [{"ref": "a@1,b"}]}', ["malformed direction reference"]),
    (200, "application/json", b'{"pages": 1, "items": [{"ref": "no-version"}]}', ["malformed direction reference"]),
    (200, "application/json", b'{"pages": 1, "items": [{"ref": "\\u001b]0;pwned\\u0007a@1"}]}', ["malformed direction reference '\\x1b]0;pwned\\x07a@1'"]),
    (200, "application/json", b'{"pages": 1, "items": []}', ["holds no directions"]),
    (200, "application/json", b'{"pages": 1, "items": [', ["not JSON"]),
    (200, "application/json", b"[" * 100_000 + b"]" * 100_000, ["not JSON"]),  # nested too deeply
    (200, None, b"hello", ["no content type"]),
    (404, "text/html", HTML, ["404 text/html", "Welcome"]),
    (500, "application/json", b'{"error": "boom\\n\\u001b[2Jagain"}', ["answered 500: boom again"]),
    (301, "text/html", b"moved", ["301 text/html"]),
])
def test_pull_from_a_server_that_is_not_p2pz_fails_in_one_line(serve, db, status, ctype, body, said):
    s = serve({"/api/directions": answer(status, ctype, body)})
    fails_in_one_line(pull(db, s.url), s, *said)


def test_a_compressed_answer_is_refused(serve, db):
    """A gzip body's size says nothing of what it unpacks to: this client asks for none and takes none."""
    import gzip

    def route(h):
        body = gzip.compress(LISTING_ONE)
        h.send_response(200)
        for k, v in (("Content-Type", "application/json"), ("Content-Encoding", "gzip"),
                     ("Content-Length", str(len(body)))):
            h.send_header(k, v)
        h.end_headers()
        h.wfile.write(body)
    s = serve({"/api/directions": route})
    fails_in_one_line(pull(db, s.url), s, "compressed (gzip)")


@pytest.mark.parametrize("export", [
    answer(200, "text/html", HTML),  # a listing, then a web page instead of a library
    answer(200, "application/zip", b"PK\x03\x04 not really a zip"),
    answer(404, "application/json", b'{"detail": "Not Found"}'),
])
def test_pull_of_a_bad_library_fails_in_one_line(serve, db, export):
    s = serve({"/api/directions": answer(200, "application/json", LISTING_ONE), "/api/export": export})
    line = fails_in_one_line(pull(db, s.url), s)
    assert "/tmp" not in line and ".p2pz" not in line, line  # the temporary file is not the point


@pytest.mark.parametrize("body", [b"[1]", b'{"hello":1}', b'{"added": {"directions": "1"}, "directions": []}',
                                  (b'{"added": {"directions": 1, "embeddings": 0, "banks": 0}, "directions": [], '
                                   b'"renumbered": [{"name": "a"}]}')])
def test_push_to_a_server_answering_another_shape_fails_in_one_line(serve, mine, body):
    s = serve({"/api/import": answer(200, "application/json", body)})
    r = CliRunner().invoke(main, ["--db", mine, "push", s.url, "cat-to-dog"])
    fails_in_one_line(r, s, "/api/import", "not an import's result")
    assert s.hits == {"/api/import": 1}


@pytest.mark.parametrize("url, shown", [("http://[::1", "http://[::1"), ("http://user:pw@[::1", "http://...@[::1"),
                                        ("http://127.0.0.1:notaport", "127.0.0.1:notaport"),
                                        ("http://127.0.0.1:99999", "127.0.0.1:99999"),
                                        (f"http://127.0.0.1{ESC}:8000", "127.0.0.1\\x1b[31m:8000")])
def test_a_malformed_address_fails_in_one_line(db, url, shown):
    line = fails_in_one_line(pull(db, url), shown, "malformed registry address")
    assert "pw" not in line


def test_a_listing_claiming_endless_pages_is_refused_at_once(serve, db):
    page = {"total": 10**14, "page": 1, "per_page": 200, "pages": 10**12, "items": [{"ref": "a@1"}]}
    s = serve({"/api/directions": answer(200, "application/json", json.dumps(page).encode())})
    fails_in_one_line(pull(db, s.url), s, "1000000000000 pages", "by name")
    assert s.hits == {"/api/directions": 1}


def test_pages_within_the_limit_are_followed_then_stop(serve, db, monkeypatch):
    """A listing claiming 3 pages gets 3 requests (each answering page 1 again: no endless loop either)."""
    page = {"total": 600, "page": 1, "per_page": 200, "pages": 3, "items": [{"ref": "a@1"}]}
    s = serve({"/api/directions": answer(200, "application/json", json.dumps(page).encode()),
               "/api/export": answer(200, "application/zip", b"x")})
    fails_in_one_line(pull(db, s.url), s)
    assert s.hits == {"/api/directions": 3, "/api/export": 1}
    monkeypatch.setattr(remote, "MAX_LIST_PAGES", 2)
    fails_in_one_line(pull(db, s.url), s, "3 pages", "limit of 2")


def _drip(server, headers_first: bool):
    """A JSON body (or the status line itself) one byte every 0.1 s, for at most 30 s."""
    def route(h):
        if headers_first:
            h.send_response(200)
            h.send_header("Content-Type", "application/json")
            h.send_header("Content-Length", "300")
            h.end_headers()
        for _ in range(300):
            if server[0].done.is_set():
                return
            h.wfile.write(b" " if headers_first else b"H")
            h.wfile.flush()
            server[0].sent += 1
            time.sleep(0.1)
    return route


@pytest.mark.parametrize("headers_first", [True, False], ids=["body", "head"])
def test_a_server_dripping_bytes_is_cut_at_the_deadline(serve, db, headers_first):
    box = []
    s = serve({"/api/directions": _drip(box, headers_first)})
    box.append(s)
    line = fails_in_one_line(pull(db, s.url, env={"P2PZ_REMOTE_TIMEOUT": "0.8"}), s, "within 0.8 s",
                             "P2PZ_REMOTE_TIMEOUT")
    assert "did not finish the pull" in line
    assert s.sent < 300  # the pull ended long before the drip did


def test_a_silent_server_is_cut_at_the_deadline(serve, db):
    """It reads the request, then says nothing for 10 s; only then (unless the test is over) a valid, empty
    listing, which a pull without a deadline would take (and fail on with another message)."""
    box, empty = [], answer(200, "application/json", b'{"pages": 1, "items": []}')
    s = serve({"/api/directions": lambda h: box[0].done.wait(10) or empty(h)})
    box.append(s)
    fails_in_one_line(pull(db, s.url, env={"P2PZ_REMOTE_TIMEOUT": "0.5"}), s, "within 0.5 s")


def _flood(server, path_ctype: str, total: int):
    """``total`` bytes in 64 KB writes, no Content-Length (HTTP/1.0: the body ends when the connection does)."""
    def route(h):
        h.send_response(200)
        h.send_header("Content-Type", path_ctype)
        h.end_headers()
        if path_ctype == "application/json":
            h.wfile.write(b'{"pages": 1, "items": [], "pad": "')
        while server[0].sent < total:
            h.wfile.write(b"x" * (1 << 16))
            server[0].sent += 1 << 16
    return route


def test_an_oversized_listing_is_cut_at_the_pull_budget(serve, db):
    box = []
    s = serve({"/api/directions": _flood(box, "application/json", 400 << 20)})
    box.append(s)
    fails_in_one_line(pull(db, s.url, env={"P2PZ_REMOTE_MAX_BYTES": "1000000"}), s, "more than 1000000 bytes",
                      "P2PZ_REMOTE_MAX_BYTES")
    assert s.sent < 400 << 20


def test_an_oversized_json_answer_is_cut_at_the_answer_cap(serve, db, monkeypatch):
    monkeypatch.setattr(remote, "MAX_JSON_BYTES", 200_000)
    box = []
    s = serve({"/api/directions": _flood(box, "application/json", 400 << 20)})
    box.append(s)
    fails_in_one_line(pull(db, s.url), s, "over 200000 bytes of JSON")
    assert s.sent < 400 << 20


def test_an_oversized_library_is_cut_at_the_budget_while_it_streams_to_disk(serve, db):
    box = []
    s = serve({"/api/directions": answer(200, "application/json", LISTING_ONE),
               "/api/export": _flood(box, "application/zip", 400 << 20)})
    box.append(s)
    fails_in_one_line(pull(db, s.url, env={"P2PZ_REMOTE_MAX_BYTES": "2000000"}), s, "more than 2000000 bytes")
    assert s.sent < 400 << 20


@pytest.mark.parametrize("name, value", [("P2PZ_REMOTE_TIMEOUT", "soon"), ("P2PZ_REMOTE_TIMEOUT", "-1"),
                                         ("P2PZ_REMOTE_MAX_BYTES", "1.5"), ("P2PZ_REMOTE_TIMEOUT", "nan")])
def test_bad_limits_fail_in_one_line(db, name, value):
    fails_in_one_line(pull(db, "http://127.0.0.1:9", env={name: value}), name, "must be a positive")


def test_export_chunks_fit_the_servers_character_cap_and_count():
    long = [f"{i:02d}-" + "x" * 191 + "@1" for i in range(60)]  # item 11: 60 names of 194 characters
    wide = [f"{i}-caf\u00e9 au lait " * 10 + "@2" for i in range(100)]  # percent-encoding grows these
    for refs in (long, wide, [f"d{i}@1" for i in range(1000)], long + wide):
        chunks = remote.export_chunks(refs)
        assert [r for c in chunks for r in c] == refs
        for c in chunks:
            assert len(c) <= remote.MAX_REFS_PER_EXPORT
            assert len(remote._quoted(",".join(c))) <= remote.MAX_EXPORT_QUERY < 10_000
    assert len(remote.export_chunks(long)) == 2
    assert remote.export_chunks(["x" * 9000]) == [["x" * 9000]]  # too long alone: the server says why
