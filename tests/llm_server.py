"""A real HTTP server on 127.0.0.1 speaking the OpenAI chat-completions protocol, for the LLM generator's tests.

Nothing in the client is mocked: the openai library talks HTTP to this server. ``mode`` picks the behaviour.
"""

from __future__ import annotations

import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PLACES = ["on a beach", "in a garden", "on a sofa", "in the snow", "under a tree", "by a window", "in a field",
          "on a rooftop", "in a kitchen", "near a lake"]


def captions(concept: str, count: int, seed: int) -> list[str]:
    return [f"A photo of a {concept} number {seed * 1000 + i} resting {PLACES[i % len(PLACES)]}." for i in range(count)]


class FakeLLM:
    def __init__(self, mode: str = "normal"):
        self.mode = mode
        self.requests: list[dict] = []
        self.auth_headers: list[str] = []
        self.lock = threading.Lock()
        self.plain_seen = 0
        handler = self._handler()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()

    def _handler(self):
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def _send(self, status: int, body, headers=None):
                data = body if isinstance(body, bytes) else json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json" if not isinstance(body, bytes) else "text/html")
                self.send_header("Content-Length", str(len(data)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self):
                length = int(self.headers.get("Content-Length", 0))
                body = json.loads(self.rfile.read(length) or b"{}")
                with fake.lock:
                    fake.requests.append(body)
                    fake.auth_headers.append(self.headers.get("Authorization", ""))
                    count = len(fake.requests)
                if not self.path.endswith("/chat/completions"):
                    return self._send(404, {"error": {"message": "not found"}})
                mode = fake.mode
                quick = {"retry-after-ms": "5"}
                if mode == "401":
                    key = self.headers.get("Authorization", "").removeprefix("Bearer ")
                    return self._send(401, {"error": {"message": f"Incorrect API key provided: {key}.",
                                                      "type": "invalid_request_error", "code": "invalid_api_key"}})
                if mode == "500":
                    return self._send(500, {"error": {"message": "the model is overloaded"}}, quick)
                if mode == "429x2" and count <= 2:
                    return self._send(429, {"error": {"message": "rate limited"}}, quick)
                if mode == "slow":
                    time.sleep(3)
                if mode == "garbage":
                    return self._send(200, b"<html>definitely not json</html>")
                if mode in ("no_schema", "no_schema_429") and "response_format" in body:
                    return self._send(400, {"error": {"message": "response_format json_schema is not supported",
                                                      "type": "invalid_request_error"}})
                if mode == "no_schema_422" and "response_format" in body:  # FastAPI-style validation error
                    return self._send(422, {"detail": [{"loc": ["body", "response_format"],
                                                        "msg": "extra fields not permitted"}]})
                if mode == "no_schema_429":
                    with fake.lock:
                        fake.plain_seen += 1
                        first = fake.plain_seen == 1
                    if first:
                        return self._send(429, {"error": {"message": "rate limited"}}, quick)
                prompt = body["messages"][-1]["content"]
                concept = re.search(r'contain the words? "([^"]+)"', prompt).group(1)
                n = int(re.search(r"Write (\d+)", prompt).group(1))
                seed = int(body.get("seed", 0))
                lines = captions(concept, n, seed)
                if mode == "messy":
                    lines = self._mess(lines, concept)
                if mode == "off_topic":
                    lines = [f"A photo of something else number {seed * 100 + i}." for i in range(n)]
                if "response_format" in body and mode not in ("messy",):
                    content = json.dumps({"captions": lines})
                else:
                    content = "\n".join(lines)
                return self._send(200, {
                    "id": f"chatcmpl-{count}", "object": "chat.completion", "created": 0, "model": body["model"],
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                                 "finish_reason": "stop"}],
                    "usage": {"prompt_tokens": 40, "completion_tokens": 15 * n, "total_tokens": 40 + 15 * n},
                })

            @staticmethod
            def _mess(lines, concept):
                out = ["Here are your captions:", ""]
                for i, line in enumerate(lines):
                    style = i % 6
                    if style == 0:
                        out.append(f"{i + 1}. {line}")
                    elif style == 1:
                        out.append(f"- \"{line}\"")
                    elif style == 2:
                        out.append(f"Caption {i + 1}: {line}")
                    elif style == 3:
                        out.append(f"* {line}")
                        out.append(f"{i + 1}) {line}")  # duplicate after cleaning
                    elif style == 4:
                        out.append("A lovely sunset over the sea with no subject at all.")  # no concept
                    else:
                        out.append(f"A {concept} number {i} " + "and a very long winding road " * 12 + ".")  # > 75 tokens
                return out

        return Handler
