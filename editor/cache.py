"""The editor's disk cache: inversions (x_T) and reference passes (attention maps + reconstruction latents).

Entries are safetensors files under ``<root>/<kind>/<key[:2]>/<key>.safetensors``; a key is the content hash of
every input that changes the entry (image pixels, model fingerprint, caption, every parameter), so a hit is
always valid. Writes are atomic; a truncated or corrupt file is a miss.
"""

from __future__ import annotations

from pathlib import Path

import torch

from store.files import atomic_write


class TensorCache:
    def __init__(self, root: str | Path | None):
        self.root = Path(root) if root else None

    def path(self, kind: str, key: str) -> Path | None:
        return self.root / kind / key[:2] / f"{key}.safetensors" if self.root else None

    def load(self, kind: str, key: str) -> dict[str, torch.Tensor] | None:
        path = self.path(kind, key)
        if path is None or not path.is_file():
            return None
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception:  # a truncated or corrupt cache file is a miss
            return None

    def save(self, kind: str, key: str, tensors: dict[str, torch.Tensor], metadata: dict | None = None) -> None:
        path = self.path(kind, key)
        if path is None:
            return
        from safetensors.torch import save_file

        data = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
        atomic_write(path, writer=lambda tmp: save_file(data, str(tmp), metadata=metadata or {}))
