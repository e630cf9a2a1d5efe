"""The one model loader of p2pz: the editor and the registry's encoding both load models through here.

A model is a hub id (``CompVis/stable-diffusion-v1-4``) or a local folder. A folder is either a diffusers
snapshot (``text_encoder/``, ``tokenizer/``, ``unet/`` …) or a plain transformers text-encoder folder
(``config.json`` + weights + tokenizer files in one place). A hub id is resolved to its local snapshot with
``huggingface_hub.snapshot_download`` (only the parts needed), then loaded from that folder with
``from_pretrained`` — the same path for every source.

Heavy imports (torch, transformers) happen inside the functions, never at module import.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path

from p2pz.store.files import atomic_write
from p2pz.store.paths import cache_dir

from .devices import default_device, resolve_device  # noqa: F401 (the loader's callers resolve devices too)
from .errors import ComponentLoadError, EditorError, ModelLoadError
from .shapes.model import ShapesModelError, snapshot
from .text import SD, SDXL, TextEncoder, TextEncoderPair, pair_fingerprint  # noqa: F401 (the loader returns them)

from p2pz.store.hashing import sha256_json

DEFAULT_MODEL = "CompVis/stable-diffusion-v1-4"
SHAPES_MODEL = "p2pz/shapes"  # the shapes-world model shipped in editor/shapes/weights (architecture §12)
MAX_LENGTH = 77


def default_model() -> str:
    """The model every entry point uses when none is named: ``$P2PZ_MODEL``, else :data:`DEFAULT_MODEL`.

    Read at call time, so setting the variable after import (a test, a notebook) takes effect."""
    return os.environ.get("P2PZ_MODEL") or DEFAULT_MODEL


@dataclass(frozen=True)
class ModelLocation:
    model: str  # what the user gave (hub id or path)
    folder: Path  # local root folder
    layout: str  # "diffusers" or "transformers"
    revision: str | None = None

    def part(self, name: str) -> Path:
        """Folder of a component (``text_encoder``, ``tokenizer``, ``unet``, …)."""
        if self.layout == "transformers":
            return self.folder
        return self.folder / name

    @property
    def family(self) -> str:
        """``sdxl`` for a snapshot with a second text encoder (``text_encoder_2/``), else ``sd`` (algorithm §12)."""
        return SDXL if self.layout == "diffusers" and self.part("text_encoder_2").is_dir() else SD


_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def looks_like_path(model: str) -> bool:
    """A hub id is ``owner/name``; anything else that does not exist is a missing local path."""
    return model.startswith((".", "~")) or not _HUB_ID.match(model)


TEXT_PARTS = ("text_encoder", "tokenizer", "text_encoder_2", "tokenizer_2")  # the last two: SDXL's, when shipped


def resolve_model(model: str, parts: tuple[str, ...] = TEXT_PARTS, local_only: bool = False) -> ModelLocation:
    """Find the local folder of ``model``, downloading the needed ``parts`` of a hub snapshot if allowed
    (``local_only``: only the Hugging Face cache is looked at)."""
    if not model or not model.strip():
        raise ModelLoadError("no model given; pass --model with a hub id or a local folder")
    if model.strip() == SHAPES_MODEL:  # the model p2pz trains and ships itself (architecture §12)

        try:
            return _classify_folder(model, snapshot())
        except ShapesModelError as exc:
            raise ModelLoadError(str(exc)) from None
    path = Path(model).expanduser()
    if path.exists():
        return _classify_folder(model, path)
    if looks_like_path(model):
        raise ModelLoadError(f"model folder {model!r} does not exist; give an existing folder or a hub id like "
                             "CompVis/stable-diffusion-v1-4")
    try:
        from huggingface_hub import snapshot_download  # lazy: huggingface_hub

        patterns = ["model_index.json"] + [f"{p}/*" for p in parts]
        folder = snapshot_download(model, allow_patterns=patterns, local_files_only=local_only)
    except Exception as exc:  # offline, unknown repo, gated, network
        offline = os.environ.get("HF_HUB_OFFLINE") in ("1", "true", "True")
        hint = ("HF_HUB_OFFLINE is set, so only the local Hugging Face cache is used; "
                if offline else "")
        raise ModelLoadError(
            f"cannot load model {model!r} from the Hugging Face hub ({type(exc).__name__}). {hint}"
            f"Download it once where the hub is reachable (huggingface-cli download {model}) or pass a local folder"
        ) from None
    return _classify_folder(model, Path(folder))


def _classify_folder(model: str, path: Path) -> ModelLocation:
    if not path.is_dir():
        raise ModelLoadError(f"model path {str(path)!r} is a file; give the model's folder")
    if (path / "text_encoder").is_dir():
        return ModelLocation(model, path.resolve(), "diffusers")
    if (path / "config.json").is_file():
        return ModelLocation(model, path.resolve(), "transformers")
    raise ModelLoadError(
        f"{str(path)!r} is neither a Stable Diffusion snapshot (no text_encoder/ folder) nor a transformers "
        "model folder (no config.json)"
    )


# --- fingerprints ---------------------------------------------------------------------------------

def _weights_stat(folder: Path) -> list:
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix in (".safetensors", ".bin", ".json"))
    return [[p.name, p.stat().st_size, p.stat().st_mtime_ns] for p in files]


_fp_lock = threading.Lock()
# One model load at a time in a process. diffusers' and transformers' lazy modules are not safe to import from two
# threads at once: a web server whose job worker loads the editor while a request thread loads a text encoder saw
# "Failed to import diffusers.models.autoencoders.autoencoder_kl" (bench/web_load.py). Re-entrant: loaders nest.
LOAD_LOCK = threading.RLock()


def serialized(load):
    """Run ``load`` under :data:`LOAD_LOCK`."""
    @functools.wraps(load)
    def wrapper(*args, **kwargs):
        with LOAD_LOCK:
            return load(*args, **kwargs)
    return wrapper


def _fingerprint_cache() -> Path:
    return cache_dir() / "fingerprints.json"


def cached_fingerprint(folder: Path) -> str | None:
    try:
        cache = json.loads(_fingerprint_cache().read_text())
    except (OSError, ValueError):
        return None
    entry = cache.get(str(folder))
    if entry and entry.get("stat") == _weights_stat(folder):
        return entry.get("fingerprint")
    return None


def _store_fingerprint(folder: Path, fingerprint: str) -> None:
    path = _fingerprint_cache()
    with _fp_lock:
        try:
            cache = json.loads(path.read_text())
        except (OSError, ValueError):
            cache = {}
        cache[str(folder)] = {"stat": _weights_stat(folder), "fingerprint": fingerprint}
        atomic_write(path, json.dumps(cache))


def folder_fingerprint(folder: Path, load_module) -> str:
    """The fingerprint of the model saved in ``folder``: from the cache while the folder's files are unchanged,
    else computed from ``load_module()`` (the loaded module) and cached."""
    fp = cached_fingerprint(folder)
    if fp is None:
        fp = compute_fingerprint(load_module())
        _store_fingerprint(folder, fp)
    return fp


def compute_fingerprint(model) -> str:
    """sha256 over a model's config (canonical JSON, without paths/versions) and every tensor of its state
    dict (name, shape, fp32 bytes), in name order. Independent of file format and of the dtype it was loaded
    in when that is exact (fp16 weights loaded as fp32)."""
    import torch  # lazy: torch

    h = hashlib.sha256()
    raw = model.config.to_dict() if hasattr(model.config, "to_dict") else dict(model.config)  # transformers / diffusers
    cfg = {k: v for k, v in raw.items()
           if not k.startswith("_") and k not in ("transformers_version", "torch_dtype", "dtype")}
    h.update(json.dumps(cfg, sort_keys=True, default=str).encode())
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().to("cpu")
        if t.is_floating_point():
            t = t.to(torch.float32)
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype}".encode())
        h.update(t.contiguous().numpy().tobytes())
    return h.hexdigest()


@serialized
def load_tokenizer(model: str | None = None, local_only: bool = False):
    """The tokenizer of an SD model (or plain encoder folder) alone — e.g. to check sentence lengths."""
    from transformers import AutoTokenizer, CLIPTokenizer  # lazy: torch

    location = resolve_model(model or default_model(), parts=("tokenizer",), local_only=local_only)
    tok_dir = location.part("tokenizer")
    try:
        if (tok_dir / "vocab.json").is_file() and (tok_dir / "merges.txt").is_file():
            return CLIPTokenizer.from_pretrained(tok_dir)
        return AutoTokenizer.from_pretrained(tok_dir)
    except Exception as exc:
        raise ModelLoadError(f"cannot load the tokenizer from {tok_dir}: {str(exc).splitlines()[0]}") from None


# --- text encoder ---------------------------------------------------------------------------------

_encoders: dict[tuple, TextEncoder | TextEncoderPair] = {}


@serialized
def load_text_encoder(model: str | None = None, device: str | None = None,
                      dtype: str = "float32") -> TextEncoder | TextEncoderPair:
    """Load (once per process) the tokenizer and text encoder of ``model`` — for an SDXL snapshot both of them,
    as one :class:`~editor.text.TextEncoderPair`."""
    import torch  # lazy: torch
    from transformers.utils import logging as hf_logging  # lazy: transformers

    hf_logging.disable_progress_bar()
    device = resolve_device(device)
    location = resolve_model(model or default_model())
    key = (str(location.folder), device, dtype)
    if key not in _encoders:
        load = _load_pair if location.family == SDXL else _load_single
        _encoders[key] = load(location, device, getattr(torch, dtype))
    return _encoders[key]


def _load_pair(location: ModelLocation, device: str, torch_dtype) -> TextEncoderPair:
    """SDXL's ``text_encoder`` (CLIPTextModel) and ``text_encoder_2`` (CLIPTextModelWithProjection) with their
    tokenizers, fingerprinted one by one (the pair's fingerprint combines them)."""
    import torch  # lazy: torch
    from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer  # lazy: torch

    tokenizers, models, fps = [], [], []
    for enc_name, tok_name, cls in (("text_encoder", "tokenizer", CLIPTextModel),
                                    ("text_encoder_2", "tokenizer_2", CLIPTextModelWithProjection)):
        enc_dir, tok_dir = location.part(enc_name), location.part(tok_name)
        try:
            tokenizer = CLIPTokenizer.from_pretrained(tok_dir)
            text_model = cls.from_pretrained(enc_dir, dtype=torch.float32)
        except Exception as exc:  # a model-loading boundary: one line naming the part
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise ModelLoadError(f"cannot load the SDXL {enc_name} from {enc_dir}: {first}") from None
        fps.append(folder_fingerprint(enc_dir, lambda text_model=text_model: text_model))
        tokenizers.append(tokenizer)
        models.append(text_model.requires_grad_(False).to(device=device, dtype=torch_dtype).eval())
    max_length = min(int(getattr(tokenizers[0], "model_max_length", MAX_LENGTH) or MAX_LENGTH), MAX_LENGTH)
    return TextEncoderPair(location=location, tokenizers=tuple(tokenizers), models=tuple(models),
                           fingerprints=tuple(fps),
                           hidden_size=sum(int(m.config.hidden_size) for m in models),
                           key_size=int(models[1].config.projection_dim), max_length=max_length,
                           pad_id=tokenizers[0].pad_token_id, device=device)


def _load_single(location: ModelLocation, device: str, torch_dtype) -> TextEncoder:
    import torch  # lazy: torch
    from transformers import AutoModel, AutoTokenizer, CLIPTextModel, CLIPTokenizer  # lazy: torch

    enc_dir, tok_dir = location.part("text_encoder"), location.part("tokenizer")
    try:
        config = json.loads((enc_dir / "config.json").read_text())
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"{enc_dir} has no readable config.json ({exc})") from None
    is_clip = config.get("model_type") in ("clip_text_model", "clip")
    try:
        if is_clip:
            tokenizer = CLIPTokenizer.from_pretrained(tok_dir)
            text_model = CLIPTextModel.from_pretrained(enc_dir, dtype=torch.float32)
        else:
            tokenizer = AutoTokenizer.from_pretrained(tok_dir)
            text_model = AutoModel.from_pretrained(enc_dir, dtype=torch.float32)
    except Exception as exc:
        raise ModelLoadError(f"cannot load the text encoder from {enc_dir}: {str(exc).splitlines()[0]}") from None
    if len(tokenizer) == 0:
        raise ModelLoadError(f"the tokenizer in {tok_dir} is empty (missing vocab.json/merges.txt?)")
    fingerprint = folder_fingerprint(enc_dir, lambda: text_model)
    text_model.requires_grad_(False)
    text_model = text_model.to(device=device, dtype=torch_dtype).eval()
    max_length = min(int(getattr(tokenizer, "model_max_length", MAX_LENGTH) or MAX_LENGTH), MAX_LENGTH)
    hidden = int(getattr(text_model.config, "hidden_size", 0) or text_model.config.to_dict().get("d_model", 0))
    enc = TextEncoder(
        location=location,
        tokenizer=tokenizer,
        model=text_model,
        fingerprint=fingerprint,
        architecture=type(text_model).__name__,
        hidden_size=hidden,
        max_length=max_length,
        pad_id=tokenizer.pad_token_id,
        is_clip=is_clip,
        device=device,
    )
    return enc


@dataclass
class SDComponents:
    """A Stable Diffusion snapshot's components, loaded in float32 on the CPU (the editor places them)."""

    folder: Path
    text: "TextEncoder"
    unet: object
    vae: object
    scheduler: object
    safety_checker: object | None
    feature_extractor: object | None
    model_fingerprint: str


def known_text_fingerprint(location) -> str | None:
    """The snapshot's text-encoder fingerprint from the cache alone (None unless every part is cached): the
    encoder's own, or for SDXL the pair's, combined from both parts' as the loaded pair combines them."""
    if location.family != SDXL:
        return cached_fingerprint(location.part("text_encoder"))
    parts = [cached_fingerprint(location.part(sub)) for sub in ("text_encoder", "text_encoder_2")]
    return None if None in parts else pair_fingerprint(parts)


@serialized
def load_sd_components(model: str, *, safety_checker: bool = True, check=None) -> SDComponents:
    """Every component of an SD snapshot (hub id or folder): the text encoder first — its parts alone for a hub
    snapshot — and ``check(fingerprint)`` on it (from the cached fingerprint when the encoder's files are
    unchanged, then from the loaded encoder), so that directions built with another encoder are refused before
    the UNet and VAE are fetched or loaded; then the UNet, VAE, DDIM scheduler and, when asked and shipped, the
    safety checker. Problems are one-line :class:`ModelLoadError` lines."""
    import torch  # lazy: torch
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel  # lazy: torch

    location = resolve_model(model, parts=TEXT_PARTS)  # SDXL's second encoder too, when shipped
    if location.layout != "diffusers":
        raise ModelLoadError(f"{model} is a plain text encoder, not a Stable Diffusion snapshot (no unet/, vae/); "
                             "give an SD model")
    known = known_text_fingerprint(location)
    if known and check:
        check(known)
    text = load_text_encoder(model, device="cpu")  # fp32: its fingerprint matches the registry's
    if check:
        check(text.fingerprint)
    location = resolve_model(model, parts=("text_encoder", "tokenizer", "unet", "vae", "scheduler", "safety_checker",
                                           "feature_extractor"))
    for part in ("unet", "vae", "scheduler"):
        if not location.part(part).is_dir():
            raise ModelLoadError(f"{location.folder} has no {part}/ folder; give a full Stable Diffusion snapshot")
    unet = UNet2DConditionModel.from_pretrained(location.part("unet"), torch_dtype=torch.float32)
    vae = AutoencoderKL.from_pretrained(location.part("vae"), torch_dtype=torch.float32)
    scheduler = DDIMScheduler.from_pretrained(location.part("scheduler"))
    checker = extractor = None
    if safety_checker and location.part("safety_checker").is_dir():
        from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker  # lazy: torch
        from transformers import CLIPImageProcessor  # lazy: torch

        checker = StableDiffusionSafetyChecker.from_pretrained(location.part("safety_checker"))
        extractor = CLIPImageProcessor.from_pretrained(location.part("feature_extractor"))
    fps = [folder_fingerprint(location.part(part), lambda module=module: module)
           for part, module in (("unet", unet), ("vae", vae))]
    sched = dict(scheduler.config)
    if "_use_default_values" in sched:  # diffusers lists the keys it filled in set order: random per process
        sched["_use_default_values"] = sorted(sched["_use_default_values"])
    model_fp = sha256_json({"text": text.fingerprint, "unet": fps[0], "vae": fps[1], "scheduler": sched})
    return SDComponents(folder=location.folder, text=text, unet=unet, vae=vae, scheduler=scheduler,
                        safety_checker=checker, feature_extractor=extractor, model_fingerprint=model_fp)


def _component_error(what: str, model_id: str, exc: BaseException, fix: str) -> str:
    """One line for a component that did not load: what, the id, the offline hint when it applies, the first
    line of the cause and the fix."""
    offline = (" (HF_HUB_OFFLINE is set, so only the local Hugging Face cache is used)"
               if os.environ.get("HF_HUB_OFFLINE") in ("1", "true", "True") else "")
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
    return f"cannot load {what} {model_id!r}{offline} ({first}); {fix}"


@serialized
def load_captioner(captioner_id: str | None, device: str):
    """The BLIP captioner (:class:`editor.caption.Captioner`) from a hub id or folder; a captioner that cannot load
    is one :class:`~editor.errors.ComponentLoadError` line with the offline hint and the fix."""
    from .caption import Captioner  # transformers' BLIP: loaded only when captioning

    fix = "pass --caption TEXT to skip captioning, or --captioner with a BLIP folder or hub id you have"
    if not captioner_id:
        raise ComponentLoadError("no captioner is configured; pass caption=… (--caption TEXT) or a captioner model "
                                 "(--captioner)")
    if not Path(captioner_id).expanduser().exists() and looks_like_path(captioner_id):
        raise ComponentLoadError(f"the captioner folder {captioner_id!r} does not exist; {fix}")
    try:
        return Captioner.from_pretrained(captioner_id, device=device)
    except Exception as exc:  # a model-loading boundary: any failure is this component's, reported in one line
        raise ComponentLoadError(_component_error("the captioner (BLIP)", captioner_id, exc, fix)) from None


@functools.lru_cache(maxsize=4)
@serialized
def load_clip(model_id: str, device: str = "cpu"):
    """The CLIP scorer (:class:`editor.metrics.ClipScorer`) from a hub id or folder, once per process and device
    (read-only, so shared); one :class:`~editor.errors.EditorError` line when it cannot load."""
    from transformers import CLIPModel, CLIPProcessor  # heavy: only the commands that score load it

    from .metrics import ClipScorer  # lazy: torch

    try:
        return ClipScorer(CLIPModel.from_pretrained(model_id), CLIPProcessor.from_pretrained(model_id), device)
    except Exception as exc:  # a model-loading boundary
        raise EditorError(_component_error("the CLIP model", model_id, exc,
                                           "pass --clip-model with a hub id or a folder")) from None


@functools.lru_cache(maxsize=4)
@serialized
def load_dino(model_id: str, device: str = "cpu"):
    """The DINO ViT structure scorer (:class:`editor.metrics.StructureDistance`), as :func:`load_clip`."""
    from transformers import ViTModel  # heavy: only the commands that score load it

    from .metrics import StructureDistance  # lazy: torch

    try:
        return StructureDistance(ViTModel.from_pretrained(model_id, add_pooling_layer=False), device=device)
    except Exception as exc:  # a model-loading boundary
        raise EditorError(_component_error("the DINO model", model_id, exc,
                                           "pass --dino-model with a hub id or a folder")) from None
