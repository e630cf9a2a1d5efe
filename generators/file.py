"""``file`` generator: one sentence per line from a user's text file (algorithm §1.1 bank format)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from .base import BankDraft, GeneratorError, normalize_sentences

MAX_FILE_BYTES = 64 * 1024 * 1024


@dataclass
class FileGenerator:
    path: str | Path
    kind: str = "file"

    def generate(self, concept: str, n: int | None = None, *, seed: int = 0) -> BankDraft:
        """Read the file; blank lines and duplicates are dropped and counted. ``n`` caps the count."""
        path = Path(self.path)
        if not path.is_file():
            raise GeneratorError(f"sentence file {str(path)!r} does not exist; give a text file, one sentence per line")
        if path.stat().st_size > MAX_FILE_BYTES:
            raise GeneratorError(f"sentence file {path} is over {MAX_FILE_BYTES >> 20} MiB; split it")
        data = path.read_bytes()
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError:
            raise GeneratorError(f"sentence file {path} is not UTF-8 text; re-save it as UTF-8") from None
        sentences, counts = normalize_sentences(text.splitlines())
        if not sentences:
            raise GeneratorError(f"sentence file {path} holds no sentences; put one sentence per line")
        if n is not None and n > 0:
            sentences = sentences[:n]
        params = {"file": path.name, "file_sha256": hashlib.sha256(data).hexdigest(), **counts}
        return BankDraft(sentences=sentences, params=params)
