"""The editor's disk cache: inversions (x_T) and, on request, reference cross-attention maps.

Layout under ``<root>`` (``$P2PZ_HOME/cache``; see :mod:`store.cache` for sizes, the cap and eviction):

* ``inversions/<key[:2]>/<key>.safetensors`` — x_T;
* ``maps/<key[:2]>/<key>/t<t>.safetensors`` — every ``attn2`` map of one timestep, float16, written as the
  reference pass goes (never a second copy of all steps in memory), and ``latents.safetensors`` — the
  reconstruction latents, written last: only an entry that has it is complete.

A key is the content hash of every input that changes the entry (image pixels, model fingerprint, captions,
every parameter), so a hit is always valid. Writes are atomic; a truncated or corrupt file is a miss.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch

from store import cache as cache_dir
from store.files import atomic_write

MAP_DTYPE = torch.float16  # maps on disk: half the bytes; the in-memory fp32 path is unchanged without the cache


def _load(path: Path) -> dict[str, torch.Tensor] | None:
    if not path.is_file():
        return None
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except Exception:  # a truncated or corrupt cache file is a miss
        return None


def _save(path: Path, tensors: dict[str, torch.Tensor], metadata: dict | None = None) -> None:
    from safetensors.torch import save_file

    data = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    atomic_write(path, writer=lambda tmp: save_file(data, str(tmp), metadata=metadata or {}))


class StoredMaps(Mapping):
    """The reference maps of one cached entry, read one timestep at a time: {t: {layer: map}} (float32)."""

    def __init__(self, folder: Path, timesteps: list[int]):
        self.folder = folder
        self.timesteps = timesteps
        self._t: int | None = None
        self._layers: dict[str, torch.Tensor] | None = None

    def __getitem__(self, t: int) -> dict[str, torch.Tensor]:
        if t != self._t:
            loaded = _load(self.folder / f"t{t}.safetensors")
            if loaded is None:
                raise KeyError(t)
            self._t, self._layers = t, {k: v.float() for k, v in loaded.items()}
        return self._layers

    def __contains__(self, t) -> bool:
        return t in self.timesteps

    def __iter__(self):
        return iter(self.timesteps)

    def __len__(self) -> int:
        return len(self.timesteps)


class TensorCache:
    def __init__(self, root: str | Path | None):
        self.root = Path(root) if root else None

    def path(self, kind: str, key: str) -> Path | None:
        if self.root is None:
            return None
        return self.root / kind / key[:2] / (key if kind == "maps" else f"{key}.safetensors")

    # --- inversions -------------------------------------------------------------------------------------
    def load(self, kind: str, key: str) -> dict[str, torch.Tensor] | None:
        path = self.path(kind, key)
        found = _load(path) if path is not None else None
        if found is not None:
            cache_dir.touch(path)
        return found

    def save(self, kind: str, key: str, tensors: dict[str, torch.Tensor], metadata: dict | None = None) -> None:
        path = self.path(kind, key)
        if path is not None:
            _save(path, tensors, metadata)
            cache_dir.evict(self.root, keep=path)

    # --- reference maps ---------------------------------------------------------------------------------
    def load_maps(self, key: str) -> tuple[StoredMaps, torch.Tensor] | None:
        """(maps read per timestep, reconstruction latents) of a complete entry, or None."""
        folder = self.path("maps", key)
        if folder is None:
            return None
        done = _load(folder / "latents.safetensors")
        if done is None:
            return None
        timesteps = sorted((int(p.stem[1:]) for p in folder.glob("t*.safetensors")), reverse=True)
        cache_dir.touch(folder)
        return StoredMaps(folder, timesteps), done["latents"]

    def save_map_step(self, key: str, t: int, layers: dict[str, torch.Tensor]) -> None:
        folder = self.path("maps", key)
        if folder is not None:
            _save(folder / f"t{t}.safetensors", {k: v.to(MAP_DTYPE) for k, v in layers.items()})

    def finish_maps(self, key: str, latents: torch.Tensor) -> None:
        folder = self.path("maps", key)
        if folder is not None:
            _save(folder / "latents.safetensors", {"latents": latents})
            cache_dir.evict(self.root, keep=folder)
