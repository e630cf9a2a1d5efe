"""``llm`` generator: sentence banks from a chat model through the ``openai`` client (architecture §4, algorithm §1.1).

The paper builds its banks with GPT-3 ("Provide many captions for images containing {word}"), the reference demo
with Flan-T5; the authors use about 1000 sentences per concept. Here any OpenAI-compatible chat-completions
server works (OpenAI, vLLM, Ollama, llama.cpp, LM Studio): ``base_url`` selects it, the key comes from
``OPENAI_API_KEY`` (a local server may need none).

How a bank is collected:

* requests ask for ``batch`` captions each, as structured output (a JSON schema) when the server accepts it,
  else as plain lines; request *i* carries seed ``seed + i`` so batches differ yet re-runs are reproducible;
* every reply is cleaned: list numbering, bullets, "Caption 3:" prefixes and quotes stripped, near-empty lines
  dropped, sentences without the concept (case-insensitive, word boundaries, simple plurals) dropped,
  duplicates dropped after normalization, and sentences longer than the CLIP tokenizer's 75 content tokens
  dropped — each drop counted;
* requests continue, up to ``concurrency`` at a time, until ``n`` sentences exist, with hard caps on requests
  and tokens that fail clearly instead of looping forever; results are taken in request order, so the bank
  does not depend on concurrency;
* each raw reply goes to the caller's ``cache`` (an object with ``get(key)`` and ``put(key, reply)``; the
  registry's keeps them on disk), keyed by a hash of the request (never of the key), so the same command again
  is free, works offline and gives the same bank.

The API key is never written anywhere: not to the bank parameters, the cache, logs or error messages.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Callable, Protocol
from urllib.parse import urlparse

from .base import BankDraft, GeneratorError, check_concept, contains_concept
from .prompts import JSON_SUFFIX, PROMPTS, SCHEMA, TEXT_SUFFIX, article, clean_line, estimate_tokens, normal_key
from .templates import choose_kind

DEFAULT_LLM_MODEL = os.environ.get("P2PZ_LLM_MODEL", "gpt-4.1-mini")
DEFAULT_BASE_URL = "https://api.openai.com/v1"
CLIP_CONTENT_TOKENS = 75  # 77 minus BOS and EOS

class ResponseCache(Protocol):
    """Where raw replies are kept: ``get(key) -> reply | None`` and ``put(key, reply)`` (replies are JSON objects)."""

    def get(self, key: str) -> dict | None: ...

    def put(self, key: str, value: dict) -> None: ...


@dataclass
class LLMGenerator:
    """Chat-completions caption generator. ``token_counter`` maps sentences to CLIP token counts (without
    BOS/EOS); without one a conservative estimate is used and recorded as such."""

    model: str = DEFAULT_LLM_MODEL
    base_url: str | None = None
    temperature: float = 1.0
    template_kind: str = "object"
    batch: int = 50
    concurrency: int = 4
    timeout: float = 60.0
    max_retries: int = 4
    max_requests: int | None = None
    max_total_tokens: int = 2_000_000
    use_cache: bool = True  # read cached replies; fresh replies are always written when a cache is given
    cache: ResponseCache | None = field(default=None, repr=False)  # the registry passes $P2PZ_HOME/cache/llm
    token_counter: Callable[[list[str]], list[int]] | None = None
    token_counter_name: str = "estimate"
    progress: Callable[[int], None] | None = field(default=None, repr=False)  # called with each count of new sentences
    api_key: str | None = field(default=None, repr=False)
    kind: str = "llm"

    def __post_init__(self):
        if self.template_kind not in PROMPTS and self.template_kind != "auto":
            raise GeneratorError(f"unknown prompt kind {self.template_kind!r}; choose one of {', '.join(PROMPTS)}")
        if not (0.0 <= self.temperature <= 2.0):
            raise GeneratorError("temperature must be between 0 and 2")
        if self.batch < 1 or self.concurrency < 1:
            raise GeneratorError("batch and concurrency must be at least 1")
        if self.timeout <= 0:
            raise GeneratorError("timeout must be positive")

    # --- the client --------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        """The server's URL as given (it may carry credentials: never print or store it; see ``safe_url``)."""
        return (self.base_url or os.environ.get("OPENAI_BASE_URL") or DEFAULT_BASE_URL).rstrip("/")

    @property
    def host(self) -> str:
        """host[:port] of the server, without credentials — what banks record."""
        parsed = urlparse(self.url)
        return f"{parsed.hostname or ''}{f':{parsed.port}' if parsed.port else ''}"

    @property
    def safe_url(self) -> str:
        """The URL without ``user:password@`` — what messages show."""
        parsed = urlparse(self.url)
        return parsed._replace(netloc=self.host).geturl() if parsed.netloc else self.url

    def _key(self) -> str:
        key = self.api_key if self.api_key is not None else os.environ.get("OPENAI_API_KEY", "")
        if not key and urlparse(self.url).hostname == "api.openai.com":
            raise GeneratorError("OPENAI_API_KEY is not set; export your OpenAI key, or pass --base-url for a "
                                 "local OpenAI-compatible server")
        return key or "no-key"  # local servers accept any placeholder

    def _client(self, key: str):
        from openai import OpenAI  # lazy: openai

        return OpenAI(api_key=key, base_url=self.url, timeout=self.timeout, max_retries=self.max_retries)

    def _redact(self, text: str, key: str) -> str:
        text = " ".join(str(text).split())
        text = text.replace(self.url, self.safe_url)
        parsed = urlparse(self.url)
        for secret in (key if key != "no-key" else None, parsed.password, parsed.username):
            if secret:
                text = text.replace(secret, "***")
        return re.sub(r"sk-[A-Za-z0-9_\-*]{6,}", "sk-***", text)[:300]

    # --- requests ----------------------------------------------------------------------------------
    def prompt(self, concept: str) -> str:
        return PROMPTS[self.template_kind].format(batch=self.batch, concept=concept, a_concept=article(concept))

    def _request(self, concept: str, index: int, seed: int, structured: bool) -> dict:
        text = self.prompt(concept) + (JSON_SUFFIX if structured else TEXT_SUFFIX)
        req = {
            "model": self.model,
            "messages": [{"role": "user", "content": text}],
            "temperature": self.temperature,
            "seed": seed + index,
            "max_tokens": 60 * self.batch + 200,
        }
        if structured:
            req["response_format"] = {"type": "json_schema", "json_schema": SCHEMA}
        return req

    def _cache_key(self, concept: str, index: int, seed: int) -> str:
        """What a reply answers, independent of how the server had to be asked (structured output or plain
        lines: the reply's own form is recognized when it is read) and of any credential."""
        ask = {"host": self.host, "path": urlparse(self.url).path, "model": self.model,
               "prompt": self.prompt(concept), "temperature": self.temperature, "seed": seed + index,
               "max_tokens": 60 * self.batch + 200}
        blob = json.dumps(ask, sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(blob.encode()).hexdigest()

    def _call(self, client, req: dict, key: str) -> dict:
        """One request → {"content", "usage", "cached"}; maps every failure to a one-line GeneratorError."""
        import openai  # lazy: openai

        host = self.safe_url
        try:
            resp = client.chat.completions.create(**req)
        except openai.AuthenticationError:
            raise GeneratorError(f"{host} refused the API key (401): OPENAI_API_KEY is missing or wrong") from None
        except openai.PermissionDeniedError as exc:
            raise GeneratorError(f"{host} denied access (403): {self._redact(exc.message, key)}") from None
        except openai.NotFoundError:
            raise GeneratorError(f"{host} does not know model {self.model!r} (404); pass --model with a model "
                                 "this server serves") from None
        except openai.RateLimitError:
            raise GeneratorError(f"{host} kept answering 429 (rate limited) after {self.max_retries} retries; "
                                 "wait, lower --concurrency, or raise --max-retries") from None
        except openai.APITimeoutError:
            raise GeneratorError(f"{host} did not answer within {self.timeout:g} s (tried {self.max_retries + 1} "
                                 "times); raise --timeout or check the server") from None
        except openai.APIConnectionError as exc:
            cause = self._redact(getattr(exc, "__cause__", None) or exc, key)
            raise GeneratorError(f"cannot connect to {host} ({cause}); check --base-url and that the server "
                                 "is running") from None
        except (openai.BadRequestError, openai.UnprocessableEntityError) as exc:
            # 400 (OpenAI, vLLM) or 422 (FastAPI-style servers) naming response_format: no structured output here
            if "response_format" in req and self._mentions_format(exc):
                raise _NoStructuredOutput() from None
            raise GeneratorError(f"{host} rejected the request ({exc.status_code}): "
                                 f"{self._redact(exc.message, key)}") from None
        except openai.APIStatusError as exc:
            raise GeneratorError(f"{host} failed with HTTP {exc.status_code} after {self.max_retries} retries: "
                                 f"{self._redact(exc.message, key)}") from None
        except (openai.APIResponseValidationError, ValueError, TypeError, KeyError) as exc:
            raise GeneratorError(f"{host} returned something that is not a chat completion "
                                 f"({type(exc).__name__}); is --base-url an OpenAI-compatible /v1 endpoint?") from None
        try:
            content = resp.choices[0].message.content
            if not isinstance(content, str):
                raise TypeError("no text content")
        except (AttributeError, IndexError, TypeError) as exc:
            raise GeneratorError(f"{host} returned a reply without text ({exc}); is it an OpenAI-compatible "
                                 "chat-completions server?") from None
        usage = getattr(resp, "usage", None)
        return {
            "content": content,
            "usage": {"prompt_tokens": int(getattr(usage, "prompt_tokens", 0) or 0),
                      "completion_tokens": int(getattr(usage, "completion_tokens", 0) or 0)},
            "model": getattr(resp, "model", None),
        }

    @staticmethod
    def _mentions_format(exc) -> bool:
        text = (str(getattr(exc, "message", "")) + str(getattr(exc, "body", ""))).lower()
        return any(w in text for w in ("response_format", "json_schema", "structured", "not supported"))

    # --- parsing -----------------------------------------------------------------------------------
    @staticmethod
    def lines(content: str) -> tuple[list[str], bool]:
        """Candidate sentences of one reply and whether it was JSON: the JSON captions when it parses, else
        its lines."""
        text = content.strip()
        fenced = re.match(r"^```(?:json)?\s*(.*?)\s*```$", text, re.S)
        if fenced:
            text = fenced.group(1)
        if text.startswith(("{", "[")):
            try:
                data = json.loads(text)
                items = data.get("captions") if isinstance(data, dict) else data
                if isinstance(items, list):
                    return [str(x) for x in items if isinstance(x, (str, int, float))], True
            except ValueError:
                pass
        return text.splitlines(), False

    # --- the loop ----------------------------------------------------------------------------------
    def generate(self, concept: str, n: int = 1000, *, seed: int = 0) -> BankDraft:
        """≈ ``n`` clean, distinct sentences for ``concept``: requests of ``batch`` captions, ``concurrency`` at a
        time, each reply cached, until ``n`` are kept or a limit (requests, tokens) is reached (an error saying
        which flag raises it)."""
        concept = check_concept(concept)
        if self.template_kind == "auto":  # the prompt kind the templates would choose (scene, attribute, …)
            draft = replace(self, template_kind=choose_kind(concept)).generate(concept, n, seed=seed)
            draft.params["prompt_kind_source"] = "auto"
            return draft
        if n < 1:
            raise GeneratorError("n must be at least 1")
        run = _Run(concept=concept, n=n, seed=seed, max_requests=self.max_requests or 3 * math.ceil(n / self.batch) + 5)
        self._formats: set[str] = set()
        try:
            with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
                while len(run.kept) < n:
                    self._check_limits(run)
                    window = min(self.concurrency, max(1, math.ceil((n - len(run.kept)) / self.batch)),
                                 run.max_requests - run.index)
                    keys = [self._cache_key(concept, run.index + j, seed) for j in range(window)]
                    results = self._replies(run, pool, keys, window)
                    if results is None:  # this server has no JSON schema support: plain lines from now on
                        run.structured = False
                        continue
                    self._record(run, keys, results)
                    run.index += window
        finally:
            if run.client is not None:
                run.client.close()
        return BankDraft(sentences=run.kept[:n], params=self._params(run))

    def _check_limits(self, run: "_Run") -> None:
        if run.index >= run.max_requests:
            raise GeneratorError(
                f"only {len(run.kept)} of {run.n} valid sentences for {run.concept!r} after {run.index} requests "
                "(the limit); raise --max-requests, lower -n, or check the model's answers")
        if run.usage["prompt_tokens"] + run.usage["completion_tokens"] >= self.max_total_tokens:
            raise GeneratorError(f"token budget of {self.max_total_tokens} used with {len(run.kept)} of {run.n} "
                                 "sentences; raise --max-tokens or lower -n")

    def _replies(self, run: "_Run", pool, keys: list[str], window: int) -> list[dict] | None:
        """The replies of the next ``window`` requests: cached ones read, the others sent concurrently (the key
        is checked only when a request must really be sent: a fully cached bank needs none); None when the server
        refused the JSON schema (the window is asked again as plain text)."""
        use_cache = self.use_cache and self.cache is not None
        results: list[dict | None] = []
        pending = []
        for j, ck in enumerate(keys):
            hit = self.cache.get(ck) if use_cache else None
            if hit is not None:
                results.append(dict(hit, cached=True))
                pending.append(None)
                continue
            if run.client is None:
                run.key = self._key()
                run.client = self._client(run.key)
            req = self._request(run.concept, run.index + j, run.seed, run.structured)
            results.append(None)
            pending.append(pool.submit(self._call, run.client, req, run.key))
        try:
            for j, fut in enumerate(pending):
                if fut is not None:
                    results[j] = dict(fut.result(), cached=False)
        except _NoStructuredOutput:
            for fut in pending:
                if fut is not None:
                    fut.cancel()
            return None
        return results

    def _record(self, run: "_Run", keys: list[str], results: list[dict]) -> None:
        """Count and cache the replies, and keep their new valid sentences."""
        for ck, res in zip(keys, results):
            if res["cached"]:
                run.cached += 1
            else:
                run.made += 1
                if self.cache is not None:
                    self.cache.put(ck, {k: res[k] for k in ("content", "usage", "model")})
            run.usage["prompt_tokens"] += res["usage"]["prompt_tokens"]
            run.usage["completion_tokens"] += res["usage"]["completion_tokens"]
            added = self._collect(run.concept, res["content"], run.kept, run.seen, run.drops, run.n)
            if self.progress is not None:
                self.progress(added)

    def _params(self, run: "_Run") -> dict:
        """What the bank records of how it was made (never the key, nor the credentials a URL may carry)."""
        usage = run.usage
        return {
            "model": self.model,
            "base_url_host": self.host,
            "prompt": self.prompt(run.concept),
            "prompt_kind": self.template_kind,
            "format": "+".join(sorted(self._formats)),  # how the replies came back: json_schema, text or both
            "temperature": self.temperature,
            "seed": run.seed,
            "n": run.n,
            "batch": self.batch,
            "requests": run.made + run.cached,
            "requests_sent": run.made,
            "requests_cached": run.cached,
            "usage": {**usage, "total_tokens": usage["prompt_tokens"] + usage["completion_tokens"]},
            "dropped": run.drops,
            "length_check": self.token_counter_name,
        }

    def _collect(self, concept: str, content: str, kept: list, seen: set, drops: dict, n: int) -> int:
        candidates = []
        raw_lines, was_json = self.lines(content)
        self._formats.add("json_schema" if was_json else "text")
        for raw in raw_lines:
            s = clean_line(raw)
            if len(s) < 10 or len(s.split()) < 3:
                drops["empty"] += 1 if raw.strip() else 0
                continue
            if not contains_concept(s, concept):
                drops["no_concept"] += 1
                continue
            k = normal_key(s)
            if k in seen:
                drops["duplicates"] += 1
                continue
            seen.add(k)
            candidates.append(s)
        if candidates:
            counts = self.token_counter(candidates) if self.token_counter else [estimate_tokens(s) for s in candidates]
            before = len(kept)
            for s, c in zip(candidates, counts):
                if c > CLIP_CONTENT_TOKENS:
                    drops["too_long"] += 1
                elif len(kept) < n:
                    kept.append(s)
            return len(kept) - before
        return 0


@dataclass
class _Run:
    """One ``generate`` call's progress: what was kept and dropped, the tokens used, the requests made."""

    concept: str
    n: int
    seed: int
    max_requests: int
    kept: list[str] = field(default_factory=list)
    seen: set[str] = field(default_factory=set)
    drops: dict = field(default_factory=lambda: {"empty": 0, "no_concept": 0, "duplicates": 0, "too_long": 0})
    usage: dict = field(default_factory=lambda: {"prompt_tokens": 0, "completion_tokens": 0})
    made: int = 0
    cached: int = 0
    index: int = 0
    structured: bool = True
    client: object = None
    key: str | None = None


class _NoStructuredOutput(Exception):
    """The server refused ``response_format``: fall back to plain text lines."""
