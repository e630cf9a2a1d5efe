"""Image metrics for judging edits: the paper's (PAPER §4.3) and PIE-Bench's (Ju et al., ICLR 2024).

Every metric compares a source image with its edit (or an edit with texts). Keys are contracts (``eval``'s JSON,
the ``evaluations`` table):

* ``clip_acc`` — 1 when CLIP finds the edit closer to "a photo of a TARGET" than to "a photo of a SOURCE" (the
  paper's CLIP-Acc is its mean over images);
* ``clip_score`` — 100 · max(cos(image, text), 0) of the edit and "a photo of a TARGET" (torchmetrics' CLIPScore);
* ``clip_directional`` — cos(E(edit) − E(source image), E(target text) − E(source text));
* ``structure_distance`` — DINO ViT (Tumanyan et al., "Splicing ViT Features"): the keys of the last block, all
  heads concatenated, their cosine self-similarity matrix over tokens; the MSE between the source's and the edit's;
* ``bg_lpips`` (Zhang et al., LPIPS: AlexNet or VGG features, unit-normalized per channel, weighted by the
  published linear layers), ``bg_psnr``, ``bg_ssim`` (data range 1), ``bg_mse`` — on the background: both images
  multiplied by ``1 − mask`` when a mask is given (PIE-Bench's "unedited part"), else the whole image.

Models load from hub ids or folders (CLIP: ``openai/clip-vit-large-patch14``; DINO: ``facebook/dino-vitb8``); the
LPIPS backbone from a torchvision-layout state dict (``--lpips-weights``) or, where torchvision imports, from
torchvision; the linear layers from the ``lpips`` wheel's files, read as plain state dicts (the ``lpips`` package
itself needs torchvision and is never imported).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image

from p2pz.store.repository import METRICS  # noqa: F401  (the contract: names of the metrics below)

from .errors import EditorError
from .loader import load_clip, load_dino

DEFAULT_CLIP = "openai/clip-vit-large-patch14"
DEFAULT_DINO = "facebook/dino-vitb8"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def to_tensor(image: Image.Image, size: int | None = None) -> torch.Tensor:
    """RGB PIL → [3, H, W] float in [0, 1] (optionally resized to size × size, bicubic)."""
    image = image.convert("RGB")
    if size is not None and image.size != (size, size):
        image = image.resize((size, size), Image.BICUBIC)
    return torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).permute(2, 0, 1)


def _pooled(out) -> torch.Tensor:
    return out if isinstance(out, torch.Tensor) else out.pooler_output


# --- CLIP ---------------------------------------------------------------------------------------------------

class ClipScorer:
    """CLIP image/text embeddings (transformers' ``CLIPModel``), L2-normalized."""

    def __init__(self, model, processor, device: str = "cpu"):
        self.model, self.processor, self.device = model.eval().requires_grad_(False).to(device), processor, device

    @classmethod
    def from_pretrained(cls, name_or_path: str = DEFAULT_CLIP, device: str = "cpu") -> "ClipScorer":
        """Through :func:`editor.loader.load_clip` (once per process and device)."""
        return load_clip(name_or_path, device)

    @torch.inference_mode()
    def image_embeds(self, images: list[Image.Image]) -> torch.Tensor:
        pixels = self.processor(images=[im.convert("RGB") for im in images], return_tensors="pt")["pixel_values"]
        e = _pooled(self.model.get_image_features(pixel_values=pixels.to(self.device)))
        return F.normalize(e.float(), dim=-1)  # [B, P]

    @torch.inference_mode()
    def text_embeds(self, texts: list[str]) -> torch.Tensor:
        tok = self.processor(text=list(texts), return_tensors="pt", padding=True, truncation=True)
        e = _pooled(self.model.get_text_features(input_ids=tok["input_ids"].to(self.device),
                                                 attention_mask=tok["attention_mask"].to(self.device)))
        return F.normalize(e.float(), dim=-1)  # [B, P]

    def all_scores(self, source: Image.Image, edit: Image.Image, source_text: str, target_text: str) -> dict:
        """clip_acc, clip_score and clip_directional of one edit from one batched image pass and one text pass
        (the same values as :meth:`accuracy`, :meth:`score` and :meth:`directional`)."""
        img = self.image_embeds([source, edit])  # [2, P]
        txt = self.text_embeds([source_text, target_text])  # [2, P]
        sims = img[1] @ txt.T
        d_img, d_txt = img[1] - img[0], txt[1] - txt[0]
        return {"clip_acc": float(sims[1] > sims[0]), "clip_score": float(100 * max(float(sims[1]), 0.0)),
                "clip_directional": float(F.cosine_similarity(d_img[None], d_txt[None], dim=-1)[0])}

    def score(self, images: list[Image.Image], texts: list[str]) -> list[float]:
        """100 · max(cos, 0) of each image with its text (torchmetrics' CLIPScore, per pair)."""
        cos = (self.image_embeds(images) * self.text_embeds(texts)).sum(-1)
        return [float(100 * max(c, 0.0)) for c in cos]

    def accuracy(self, images: list[Image.Image], source_text: str, target_text: str) -> list[float]:
        """1.0 where the image is closer to ``target_text`` than to ``source_text`` (CLIP-Acc per image)."""
        img = self.image_embeds(images)
        txt = self.text_embeds([source_text, target_text])
        sims = img @ txt.T  # [B, 2]
        return [float(s[1] > s[0]) for s in sims]

    def directional(self, sources: list[Image.Image], edits: list[Image.Image], source_text: str,
                    target_text: str) -> list[float]:
        """cos(E(edit) − E(source), E(target text) − E(source text)) per pair."""
        d_img = self.image_embeds(edits) - self.image_embeds(sources)
        txt = self.text_embeds([source_text, target_text])
        d_txt = (txt[1] - txt[0])[None]
        return [float(c) for c in F.cosine_similarity(d_img, d_txt.expand_as(d_img), dim=-1)]


# --- structure (DINO keys) ------------------------------------------------------------------------------------

class StructureDistance:
    """Splicing-ViT structure distance on a DINO ViT loaded with transformers' ``ViTModel``."""

    def __init__(self, model, size: int | None = None, device: str = "cpu"):
        self.model = model.eval().requires_grad_(False).to(device)
        self.size = size or int(model.config.image_size)
        self.device = device
        self.mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
        self.std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)

    @classmethod
    def from_pretrained(cls, name_or_path: str = DEFAULT_DINO, device: str = "cpu") -> "StructureDistance":
        """Through :func:`editor.loader.load_dino` (once per process and device)."""
        return load_dino(name_or_path, device)

    def key_module(self) -> nn.Module:
        """The last block's key projection: its output is every head's keys, concatenated [B, T, heads·d]."""
        blocks = self.model.layers if hasattr(self.model, "layers") else self.model.encoder.layer  # transformers 5 / 4
        attention = blocks[-1].attention
        return getattr(attention, "k_proj", None) or attention.attention.key

    @torch.inference_mode()
    def keys(self, images: list[Image.Image]) -> torch.Tensor:
        x = torch.stack([to_tensor(im, self.size) for im in images])
        x = ((x - self.mean) / self.std).to(self.device)
        seen = []
        handle = self.key_module().register_forward_hook(lambda m, i, o: seen.append(o))
        try:
            self.model(pixel_values=x)
        finally:
            handle.remove()
        return seen[-1].float()  # [B, T, heads·d], CLS token included

    @staticmethod
    def self_similarity(keys: torch.Tensor) -> torch.Tensor:
        k = F.normalize(keys, dim=-1)
        return k @ k.transpose(-1, -2)  # [B, T, T]

    def __call__(self, sources: list[Image.Image], edits: list[Image.Image]) -> list[float]:
        a = self.self_similarity(self.keys(sources))
        b = self.self_similarity(self.keys(edits))
        return [float(v) for v in ((a - b) ** 2).mean(dim=(1, 2))]


# --- LPIPS --------------------------------------------------------------------------------------------------------

def _alexnet_features() -> nn.Sequential:
    """torchvision's AlexNet ``features`` layout (same indices, so its state dict loads)."""
    return nn.Sequential(
        nn.Conv2d(3, 64, 11, 4, 2), nn.ReLU(), nn.MaxPool2d(3, 2),
        nn.Conv2d(64, 192, 5, padding=2), nn.ReLU(), nn.MaxPool2d(3, 2),
        nn.Conv2d(192, 384, 3, padding=1), nn.ReLU(),
        nn.Conv2d(384, 256, 3, padding=1), nn.ReLU(),
        nn.Conv2d(256, 256, 3, padding=1), nn.ReLU(), nn.MaxPool2d(3, 2))


def _vgg16_features() -> nn.Sequential:
    """torchvision's VGG-16 ``features`` layout."""
    layers, c = [], 3
    for v in (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"):
        if v == "M":
            layers.append(nn.MaxPool2d(2, 2))
        else:
            layers += [nn.Conv2d(c, v, 3, padding=1), nn.ReLU()]
            c = v
    return nn.Sequential(*layers)


LPIPS_NETS = {  # features, slice ends (after each LPIPS tap), channels per tap
    "alex": (_alexnet_features, (2, 5, 8, 10, 12), (64, 192, 384, 256, 256)),
    "vgg": (_vgg16_features, (4, 9, 16, 23, 30), (64, 128, 256, 512, 512)),
}


def lpips_linear_weights(net: str = "alex") -> Path | None:
    """The published linear-layer weights inside an installed ``lpips`` wheel (found without importing it)."""
    spec = importlib.util.find_spec("lpips")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / "weights" / "v0.1" / f"{net}.pth"
    return path if path.is_file() else None


def _load_state(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise EditorError(f"weights file {str(path)!r} does not exist")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file  # lazy: safetensors

        return load_file(str(path))
    try:
        return torch.load(path, map_location="cpu", weights_only=True)  # plain state dicts only, never pickle
    except Exception as exc:
        raise EditorError(f"{path} is not a plain state dict ({str(exc).splitlines()[0][:150]})") from None


class LPIPS(nn.Module):
    """LPIPS (Zhang et al., CVPR 2018) on [−1, 1] images: scaling layer, backbone taps, channel-unit-normalized
    feature differences weighted by 1×1 linear layers, spatial mean, sum over taps."""

    SHIFT = (-0.030, -0.088, -0.188)
    SCALE = (0.458, 0.448, 0.450)

    def __init__(self, net: str = "alex"):
        super().__init__()
        if net not in LPIPS_NETS:
            raise EditorError(f"LPIPS backbone must be one of {', '.join(LPIPS_NETS)}")
        make, ends, channels = LPIPS_NETS[net]
        self.net_name = net
        self.features = make()
        self.ends = ends
        self.lins = nn.ModuleList(nn.Conv2d(c, 1, 1, bias=False) for c in channels)
        self.register_buffer("shift", torch.tensor(self.SHIFT).view(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor(self.SCALE).view(1, 3, 1, 1))
        self.eval().requires_grad_(False)

    @classmethod
    def from_weights(cls, backbone: str | Path | None = None, linear: str | Path | None = None,
                     net: str = "alex") -> "LPIPS":
        """Backbone: a torchvision-layout state dict file (``features.*`` keys, e.g. torchvision's own
        alexnet-owt-….pth), else torchvision's pretrained weights when torchvision imports. Linear layers: a
        file (``lin{k}.model.1.weight``), else the ``lpips`` wheel's."""
        model = cls(net)
        if backbone is not None:
            state = _load_state(backbone)
        else:
            try:
                import torchvision  # optional: torchvision

                tv = getattr(torchvision.models, "alexnet" if net == "alex" else "vgg16")(weights="DEFAULT")
                state = tv.state_dict()
            except Exception:
                raise EditorError("LPIPS needs backbone weights: pass --lpips-weights FILE (a torchvision "
                                  f"{'AlexNet' if net == 'alex' else 'VGG-16'} state dict); torchvision cannot "
                                  "provide them here") from None
        feats = {k.removeprefix("features."): v for k, v in state.items() if k.startswith("features.")}
        missing, unexpected = model.features.load_state_dict(feats, strict=False)
        if missing:
            raise EditorError(f"the LPIPS backbone weights lack {missing[:3]}; give a torchvision {net} state dict")
        linear = linear or lpips_linear_weights(net)
        if linear is None:
            raise EditorError("LPIPS needs its linear-layer weights: pip install --no-deps lpips (the weights ship "
                              "in the wheel) or pass the .pth file")
        lin = _load_state(linear)
        for k, layer in enumerate(model.lins):
            layer.weight.data.copy_(lin[f"lin{k}.model.1.weight"])
        return model

    def taps(self, x: torch.Tensor) -> list[torch.Tensor]:
        out, start = [], 0
        h = (x - self.shift) / self.scale
        for end in self.ends:
            h = self.features[start:end](h)
            out.append(h)
            start = end
        return out

    @torch.inference_mode()
    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """a, b: [B, 3, H, W] in [−1, 1] → [B] distances."""
        return self.distance(a, b)

    def distance(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """The same, differentiable (a training loss: gradients flow to the images, never to the frozen weights)."""
        total = 0
        for fa, fb, lin in zip(self.taps(a), self.taps(b), self.lins):
            na = fa / (fa.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
            nb = fb / (fb.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
            total = total + lin((na - nb) ** 2).mean(dim=(2, 3))
        return total.view(-1)


# --- masks and background metrics -------------------------------------------------------------------------------

def decode_rle(rle: list[int], size: int = 512) -> np.ndarray:
    """PIE-Bench's mask: ``[start, length, …]`` over the flattened size × size image, then the border rows and
    columns set (as its reference code does) → bool [size, size]."""
    if len(rle) % 2:
        raise EditorError("an RLE mask is a flat list of start, length pairs")
    flat = np.zeros(size * size, dtype=bool)
    for start, length in zip(rle[0::2], rle[1::2]):
        flat[int(start): min(int(start) + int(length), flat.size)] = True
    mask = flat.reshape(size, size)
    mask[0, :] = mask[-1, :] = mask[:, 0] = mask[:, -1] = True
    return mask


def load_mask(path: str | Path, size: int | None = None) -> np.ndarray:
    """A PNG (or any image) mask: non-zero = the edited region → bool [H, W] (resized nearest to ``size``)."""
    with Image.open(path) as im:
        m = im.convert("L")
        if size is not None and m.size != (size, size):
            m = m.resize((size, size), Image.NEAREST)
        return np.asarray(m) > 0


def background_metrics(source: Image.Image, edit: Image.Image, mask: np.ndarray | None = None,
                       lpips: LPIPS | None = None) -> dict:
    """bg_mse, bg_psnr, bg_ssim (data range 1) and bg_lpips of the edit against the source, on ``1 − mask``
    (both images multiplied by it, as PIE-Bench) or on the whole image."""
    # lazy: transformers
    from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure

    a = to_tensor(source)
    b = to_tensor(edit.resize(source.size, Image.BICUBIC) if edit.size != source.size else edit)
    if mask is not None:
        if mask.shape != tuple(a.shape[1:]):
            mask = np.asarray(Image.fromarray(mask.astype(np.uint8) * 255).resize(source.size, Image.NEAREST)) > 0
        keep = torch.from_numpy(~mask).float()[None]  # [1, H, W]
        a, b = a * keep, b * keep  # PIE-Bench's "unedited part": the edited region zeroed in both
    mse = float(((a - b) ** 2).mean())
    out = {"bg_mse": mse,
           "bg_psnr": float(peak_signal_noise_ratio(b[None], a[None], data_range=1.0)) if mse > 0 else float("inf"),
           "bg_ssim": float(structural_similarity_index_measure(b[None], a[None], data_range=1.0))}
    if lpips is not None:
        out["bg_lpips"] = float(lpips(a[None] * 2 - 1, b[None] * 2 - 1)[0])
    return out
