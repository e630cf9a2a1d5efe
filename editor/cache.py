"""The editor's disk cache: inversions (x_T) and, on request, reference cross-attention maps.

Layout under ``<root>`` (``$P2PZ_HOME/cache``; see :mod:`store.cache` for sizes, the cap and eviction):

* ``inversions/<key[:2]>/<key>.safetensors`` — x_T;
* ``maps/<key[:2]>/<key>/t<t>.safetensors`` — every ``attn2`` map of one timestep, float16, written as the
  reference pass goes (never a second copy of all steps in memory), and ``latents.safetensors`` — the
  reconstruction latents, written last: only an entry that has it is complete.

A key is the content hash of every input that changes the entry (image pixels, model fingerprint, captions,
every parameter). Writes are atomic; a truncated or corrupt file is a miss, and so is a file that loads but does
not hold what its key promises (another shape or dtype, NaN or Inf — a file edited, swapped or damaged in place):
every read is checked against the caller's expectation (:class:`Expected`), and a mismatch is recomputed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch

from p2pz.store import cache as cache_dir
from p2pz.store.files import atomic_write

MAP_DTYPE = torch.float16  # maps on disk: half the bytes; the in-memory fp32 path is unchanged without the cache


class StaleEntry(Exception):
    """A cached entry loaded but does not hold what was expected; the caller drops it and recomputes."""


@dataclass(frozen=True)
class Expected:
    """What a cached tensor must be: its shape (None: any) and dtype (None: any floating type); always finite."""

    shape: tuple[int, ...] | None = None
    dtype: torch.dtype | None = None

    def check(self, name: str, tensor: torch.Tensor | None) -> None:
        if tensor is None:
            raise StaleEntry(f"{name} is missing")
        if self.shape is not None and tuple(tensor.shape) != tuple(self.shape):
            raise StaleEntry(f"{name} has shape {tuple(tensor.shape)}, not {tuple(self.shape)}")
        if self.dtype is not None and tensor.dtype != self.dtype:
            raise StaleEntry(f"{name} is {tensor.dtype}, not {self.dtype}")
        if not tensor.is_floating_point():
            raise StaleEntry(f"{name} is {tensor.dtype}, not a floating type")
        if not torch.isfinite(tensor).all():
            raise StaleEntry(f"{name} holds NaN or Inf")


def _valid(tensors: dict[str, torch.Tensor], expect: dict[str, Expected] | None) -> bool:
    try:
        for name, spec in (expect or {}).items():
            spec.check(name, tensors.get(name))
    except StaleEntry:
        return False
    return True


def _load(path: Path) -> dict[str, torch.Tensor] | None:
    if not path.is_file():
        return None
    from safetensors.torch import load_file  # lazy: safetensors

    try:
        return load_file(str(path))
    except Exception:  # a truncated or corrupt cache file is a miss
        return None


def _save(path: Path, tensors: dict[str, torch.Tensor], metadata: dict | None = None) -> None:
    from safetensors.torch import save_file  # lazy: safetensors

    data = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    atomic_write(path, writer=lambda tmp: save_file(data, str(tmp), metadata=metadata or {}))


class StoredMaps(Mapping):
    """The reference maps of one cached entry, read one timestep at a time: {t: {layer: map}} (float32).

    With ``layers``, each timestep read is checked: exactly those layers, finite maps of one consistent layout
    (a 3-D map per layer); a damaged or foreign file raises :class:`StaleEntry` (the editor then recomputes
    the reference pass). Each map's shape is checked against the live map where it is used
    (:class:`editor.attention.AttentionMaps`)."""

    def __init__(self, folder: Path, timesteps: list[int], layers: list[str] | None = None):
        self.folder = folder
        self.timesteps = timesteps
        self.layers = set(layers) if layers is not None else None
        self._t: int | None = None
        self._layers: dict[str, torch.Tensor] | None = None

    def __getitem__(self, t: int) -> dict[str, torch.Tensor]:
        if t != self._t:
            if t not in self.timesteps:
                raise KeyError(t)
            loaded = _load(self.folder / f"t{t}.safetensors")
            if loaded is None:
                raise StaleEntry(f"the maps of timestep {t} are unreadable")
            if self.layers is not None and set(loaded) != self.layers:
                raise StaleEntry(f"the maps of timestep {t} are for other layers")
            for name, tensor in loaded.items():
                if tensor.dim() != 3:
                    raise StaleEntry(f"map {name} at timestep {t} has shape {tuple(tensor.shape)}")
                Expected().check(f"map {name} at timestep {t}", tensor)
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
    def load(self, kind: str, key: str, expect: dict[str, Expected] | None = None) -> dict[str, torch.Tensor] | None:
        """The entry's tensors, or None (a miss) when absent, unreadable or not as ``expect`` says."""
        path = self.path(kind, key)
        found = _load(path) if path is not None else None
        if found is not None and not _valid(found, expect):
            found = None  # recomputed and overwritten by the caller
        if found is not None:
            cache_dir.touch(path)
        return found

    def save(self, kind: str, key: str, tensors: dict[str, torch.Tensor], metadata: dict | None = None) -> None:
        path = self.path(kind, key)
        if path is not None:
            _save(path, tensors, metadata)
            cache_dir.evict(self.root, keep=path)

    # --- reference maps ---------------------------------------------------------------------------------
    def load_maps(self, key: str, latents: Expected | None = None, timesteps: list[int] | None = None,
                  layers: list[str] | None = None) -> tuple[StoredMaps, torch.Tensor] | None:
        """(maps read per timestep, reconstruction latents) of a complete entry, or None: absent, or not as
        expected (the latents as ``latents`` says, exactly ``timesteps``; the maps of each timestep are checked
        against ``layers`` as they are read — see :class:`StoredMaps`)."""
        folder = self.path("maps", key)
        if folder is None:
            return None
        done = _load(folder / "latents.safetensors")
        if done is None or not _valid(done, {"latents": latents or Expected()}):
            return None
        stored = sorted((int(p.stem[1:]) for p in folder.glob("t*.safetensors") if p.stem[1:].isdigit()),
                        reverse=True)
        if timesteps is not None and set(stored) != set(timesteps):
            return None
        cache_dir.touch(folder)
        return StoredMaps(folder, stored, layers), done["latents"]

    def drop_maps(self, key: str) -> None:
        """Forget a maps entry found damaged (its latents go first: the entry is incomplete from then on)."""
        folder = self.path("maps", key)
        if folder is not None:
            (folder / "latents.safetensors").unlink(missing_ok=True)

    def save_map_step(self, key: str, t: int, layers: dict[str, torch.Tensor]) -> None:
        folder = self.path("maps", key)
        if folder is not None:
            _save(folder / f"t{t}.safetensors", {k: v.to(MAP_DTYPE) for k, v in layers.items()})

    def finish_maps(self, key: str, latents: torch.Tensor) -> None:
        folder = self.path("maps", key)
        if folder is not None:
            _save(folder / "latents.safetensors", {"latents": latents})
            cache_dir.evict(self.root, keep=folder)
