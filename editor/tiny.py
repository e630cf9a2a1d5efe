"""Tiny random-weight Stable Diffusion snapshots for tests, the demo and outside checks (docs/architecture.md §8).

The snapshot is written with the real classes' ``save_pretrained`` into a folder laid out like a hub
snapshot (``model_index.json``, ``text_encoder/``, ``tokenizer/``, ``unet/``, ``vae/``, ``scheduler/``),
so it is loaded back through exactly the ``from_pretrained`` path a user's real model takes.

**The weights are random.** Images and directions made with this model are meaningless; it exists so that
every code path can run offline in seconds.

Tokenizer: the real CLIP BPE vocabulary (``bpe_simple_vocab_16e6.txt.gz``, MIT) when it can be had — from
``$P2PZ_CLIP_BPE``, from the p2pz cache, or fetched once from the ``open_clip_torch`` wheel on PyPI with
``pip download`` (the wheel is only unzipped, never installed). Otherwise a small byte-level BPE is trained
here on built-in text, with all 512 byte and byte+``</w>`` base tokens so that any string tokenizes.
"""

from __future__ import annotations

import collections
import gzip
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from p2pz.store.files import atomic_write
from p2pz.store.hashing import sha256_file
from p2pz.store.paths import cache_dir

RANDOM_WEIGHTS_NOTICE = (
    "THIS MODEL HAS RANDOM WEIGHTS. It is a tiny test model: its embeddings, directions and images are "
    "meaningless. Use a real Stable Diffusion model (e.g. CompVis/stable-diffusion-v1-4) for real work."
)

CLIP_BPE_WHEEL = "open_clip_torch==3.3.0"
CLIP_BPE_MEMBER = "open_clip/bpe_simple_vocab_16e6.txt.gz"
CLIP_BPE_SHA256 = "924691ac288e54409236115652ad4aa250f48203de50a9e4722a6ecd48d6804a"
BOS, EOS = "<|startoftext|>", "<|endoftext|>"


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible map from the 256 byte values to printable unicode characters."""
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    chars = printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return dict(zip(printable, (chr(c) for c in chars)))


def _sha256_file(path: Path) -> str:
    return sha256_file(path)


def fetch_clip_bpe(timeout: float = 120.0) -> Path | None:
    """Return the path of the real CLIP BPE merges file, or None when it cannot be had.

    Looks at ``$P2PZ_CLIP_BPE``, then the p2pz cache, then downloads the ``open_clip_torch`` wheel
    (no dependencies, not installed) and extracts the one file. The file's sha256 is checked.
    """
    env = os.environ.get("P2PZ_CLIP_BPE")
    if env and Path(env).is_file():
        return Path(env)
    target = cache_dir() / "clip-bpe" / "bpe_simple_vocab_16e6.txt.gz"
    if target.is_file() and _sha256_file(target) == CLIP_BPE_SHA256:
        return target
    with tempfile.TemporaryDirectory() as tmp:
        try:
            subprocess.run(
                [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", tmp, CLIP_BPE_WHEEL],
                check=True, timeout=timeout, capture_output=True,
            )
            wheel = next(Path(tmp).glob("open_clip_torch-*.whl"))
            with zipfile.ZipFile(wheel) as zf:
                data = zf.read(CLIP_BPE_MEMBER)
        except (subprocess.SubprocessError, OSError, StopIteration, KeyError, zipfile.BadZipFile):
            return None
    if hashlib.sha256(data).hexdigest() != CLIP_BPE_SHA256:
        return None
    atomic_write(target, data)
    return target


def clip_vocab_from_bpe(bpe_gz: Path) -> tuple[dict[str, int], list[str]]:
    """Convert OpenAI's ``bpe_simple_vocab_16e6.txt.gz`` to a vocab dict and merge list (49408 ids)."""
    lines = gzip.open(bpe_gz).read().decode("utf-8").split("\n")
    merges = lines[1 : 49152 - 256 - 2 + 1]  # the slice OpenAI's SimpleTokenizer takes
    base = list(bytes_to_unicode().values())
    tokens = base + [b + "</w>" for b in base] + ["".join(m.split()) for m in merges] + [BOS, EOS]
    return {t: i for i, t in enumerate(tokens)}, merges


_TRAIN_TEXT = """
a photo of a cat dog horse zebra car tree house lion tiger bird fish kitten puppy on a sunny beach in a
garden at night during the day painting drawing sketch oil pastel watercolor style with glasses hat the
an is are sitting sleeping standing running walking near under over beside in front of behind old new
small large big tiny red blue green yellow black white brown fluffy cute majestic portrait close up view
of city street forest mountain river lake field snow rain picture image render artwork by from
""".split()


def train_small_bpe(num_merges: int = 1500) -> tuple[dict[str, int], list[str]]:
    """Train a small byte-level BPE in CLIP's format (fallback when the real vocabulary is unavailable)."""
    b2u = bytes_to_unicode()
    words = collections.Counter()
    for w in _TRAIN_TEXT:
        chars = [b2u[b] for b in w.encode("utf-8")]
        chars[-1] += "</w>"
        words[tuple(chars)] += 1
    merges: list[str] = []
    for _ in range(num_merges):
        pairs = collections.Counter()
        for word, freq in words.items():
            for a, b in zip(word, word[1:]):
                pairs[(a, b)] += freq
        if not pairs:
            break
        (a, b), _count = max(pairs.items(), key=lambda kv: (kv[1], kv[0]))
        merges.append(f"{a} {b}")
        merged = collections.Counter()
        for word, freq in words.items():
            out, i = [], 0
            while i < len(word):
                if i < len(word) - 1 and word[i] == a and word[i + 1] == b:
                    out.append(a + b)
                    i += 2
                else:
                    out.append(word[i])
                    i += 1
            merged[tuple(out)] += freq
        words = merged
    base = list(b2u.values())
    tokens = base + [t + "</w>" for t in base]
    seen = set(tokens)
    for m in merges:
        t = m.replace(" ", "")
        if t not in seen:
            tokens.append(t)
            seen.add(t)
    tokens += [BOS, EOS]
    return {t: i for i, t in enumerate(tokens)}, merges


def write_clip_tokenizer(folder: Path, vocab_source: str = "auto", pad_token: str = EOS) -> str:
    """Write a CLIP tokenizer folder; returns which vocabulary was used ("clip" or "trained"). ``pad_token``:
    EOS as OpenAI's CLIP (SD's ``tokenizer``), or ``"!"`` as SDXL's ``tokenizer_2`` (OpenCLIP pads with id 0)."""
    folder.mkdir(parents=True, exist_ok=True)
    bpe = fetch_clip_bpe() if vocab_source in ("auto", "clip") else None
    if bpe is not None:
        vocab, merges = clip_vocab_from_bpe(bpe)
        used = "clip"
    elif vocab_source == "clip":
        raise RuntimeError("the real CLIP BPE vocabulary could not be fetched (set P2PZ_CLIP_BPE to its .txt.gz)")
    else:
        vocab, merges = train_small_bpe()
        used = "trained"
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    config = {
        "tokenizer_class": "CLIPTokenizer",
        "model_max_length": 77,
        "bos_token": BOS,
        "eos_token": EOS,
        "unk_token": EOS,
        "pad_token": pad_token,
        "do_lower_case": True,
    }
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2))
    (folder / "special_tokens_map.json").write_text(
        json.dumps({"bos_token": BOS, "eos_token": EOS, "unk_token": EOS, "pad_token": pad_token}, indent=2)
    )
    return used


TINY_MODEL_INDEX = {
    "_class_name": "StableDiffusionPipeline",
    "_diffusers_version": "0.42.1",
    "feature_extractor": [None, None],
    "requires_safety_checker": False,
    "safety_checker": [None, None],
    "scheduler": ["diffusers", "DDIMScheduler"],
    "text_encoder": ["transformers", "CLIPTextModel"],
    "tokenizer": ["transformers", "CLIPTokenizer"],
    "unet": ["diffusers", "UNet2DConditionModel"],
    "vae": ["diffusers", "AutoencoderKL"],
}


def _empty_folder(folder: Path, overwrite: bool) -> None:
    if folder.exists() and any(folder.iterdir()):
        if not overwrite:
            raise FileExistsError(f"{folder} is not empty; pass overwrite=True (CLI: --force) to replace it")
        shutil.rmtree(folder)
    folder.mkdir(parents=True, exist_ok=True)


def _tiny_text_encoder(folder: Path, vocab_map: dict, hidden_size: int, layers: int, *,
                       projection_dim: int | None = None, pad: str = EOS, hidden_act: str = "quick_gelu") -> None:
    """A ``CLIPTextModel`` (or, with ``projection_dim``, SDXL's ``CLIPTextModelWithProjection``)."""
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection  # heavy: tiny models only

    config = CLIPTextConfig(vocab_size=len(vocab_map), hidden_size=hidden_size, intermediate_size=37,
                            num_attention_heads=4, num_hidden_layers=layers, max_position_embeddings=77,
                            projection_dim=projection_dim or hidden_size, bos_token_id=vocab_map[BOS],
                            eos_token_id=vocab_map[EOS], pad_token_id=vocab_map[pad], hidden_act=hidden_act)
    cls = CLIPTextModelWithProjection if projection_dim else CLIPTextModel
    cls(config).eval().save_pretrained(folder)


def _tiny_unet_vae_scheduler(folder: Path, seed: int, hidden_size: int, prediction_type: str) -> None:
    import torch  # heavy: only when a tiny model is built
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel  # lazy: torch

    torch.manual_seed(seed + 1)
    UNet2DConditionModel(block_out_channels=(32, 64), layers_per_block=2, sample_size=32, in_channels=4,
                         out_channels=4, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                         up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
                         cross_attention_dim=hidden_size).save_pretrained(folder / "unet")
    torch.manual_seed(seed + 2)
    AutoencoderKL(block_out_channels=[32, 64], in_channels=3, out_channels=3,
                  down_block_types=["DownEncoderBlock2D", "DownEncoderBlock2D"],
                  up_block_types=["UpDecoderBlock2D", "UpDecoderBlock2D"],
                  latent_channels=4).save_pretrained(folder / "vae")
    DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                  set_alpha_to_one=False, steps_offset=1,
                  prediction_type=prediction_type).save_pretrained(folder / "scheduler")


TINY_SDXL_INDEX = {
    "_class_name": "StableDiffusionXLPipeline",
    "_diffusers_version": "0.42.1",
    "force_zeros_for_empty_prompt": True,
    "scheduler": ["diffusers", "EulerDiscreteScheduler"],
    "text_encoder": ["transformers", "CLIPTextModel"],
    "text_encoder_2": ["transformers", "CLIPTextModelWithProjection"],
    "tokenizer": ["transformers", "CLIPTokenizer"],
    "tokenizer_2": ["transformers", "CLIPTokenizer"],
    "unet": ["diffusers", "UNet2DConditionModel"],
    "vae": ["diffusers", "AutoencoderKL"],
}
# The published SDXL base 1.0 UNet layout (2.6 B parameters; transformer depths 1/2/10, 2048-wide context, 70 attn2
# layers): for meta-device tests of the layer sets and for benchmarks on SDXL-sized random weights (bench/edit_sdxl.py)
SDXL_BASE_UNET = dict(sample_size=128, in_channels=4, out_channels=4, layers_per_block=2,
                      block_out_channels=(320, 640, 1280), attention_head_dim=(5, 10, 20), use_linear_projection=True,
                      down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
                      up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
                      transformer_layers_per_block=(1, 2, 10), cross_attention_dim=2048,
                      addition_embed_type="text_time", addition_time_embed_dim=256,
                      projection_class_embeddings_input_dim=2816)
SDXL_TEXT = (32, 48, 40)  # tiny widths: text_encoder D₁, text_encoder_2 D₂, its projection P (real: 768, 1280, 1280)


def _tiny_sdxl(folder: Path, seed: int, vocab: str, text_layers: int) -> tuple[str, int]:
    """SDXL's layout with tiny widths (as diffusers' SDXL fast tests): two text encoders and tokenizers, a UNet with
    ``addition_embed_type="text_time"`` and transformer depths rising with depth (1, 1, 2; the real one 1, 2, 10),
    a VAE with SDXL's scaling factor and ``force_upcast``, and SDXL's scheduler config (Euler, which p2pz loads as
    DDIM as it does a real SDXL snapshot's). Returns (the vocabulary used, its size)."""
    import torch  # heavy: only when a tiny model is built
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, UNet2DConditionModel  # lazy: torch

    d1, d2, proj = SDXL_TEXT
    used = write_clip_tokenizer(folder / "tokenizer", vocab)
    write_clip_tokenizer(folder / "tokenizer_2", "trained" if used == "trained" else vocab, pad_token="!")
    vocab_map = json.loads((folder / "tokenizer" / "vocab.json").read_text())
    torch.manual_seed(seed)
    _tiny_text_encoder(folder / "text_encoder", vocab_map, d1, text_layers)
    _tiny_text_encoder(folder / "text_encoder_2", vocab_map, d2, text_layers, projection_dim=proj, pad="!",
                       hidden_act="gelu")
    torch.manual_seed(seed + 1)
    UNet2DConditionModel(block_out_channels=(32, 64, 64), layers_per_block=1, sample_size=32, in_channels=4,
                         out_channels=4,
                         down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
                         up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
                         attention_head_dim=(2, 4, 4), use_linear_projection=True, transformer_layers_per_block=(1, 1, 2),
                         addition_embed_type="text_time", addition_time_embed_dim=8,
                         projection_class_embeddings_input_dim=6 * 8 + proj,
                         cross_attention_dim=d1 + d2).save_pretrained(folder / "unet")
    torch.manual_seed(seed + 2)
    AutoencoderKL(block_out_channels=[32, 64], in_channels=3, out_channels=3,
                  down_block_types=["DownEncoderBlock2D", "DownEncoderBlock2D"],
                  up_block_types=["UpDecoderBlock2D", "UpDecoderBlock2D"], latent_channels=4,
                  scaling_factor=0.13025, force_upcast=True).save_pretrained(folder / "vae")
    EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", steps_offset=1,
                           timestep_spacing="leading").save_pretrained(folder / "scheduler")
    config_path = folder / "scheduler" / "scheduler_config.json"  # as SDXL ships it: DDIM's keys too
    config = json.loads(config_path.read_text())
    config.update(clip_sample=False, set_alpha_to_one=False, skip_prk_steps=True, sample_max_value=1.0)
    config_path.write_text(json.dumps(config, indent=2))
    (folder / "model_index.json").write_text(json.dumps(TINY_SDXL_INDEX, indent=2))
    return used, len(vocab_map)


def build_tiny_model(
    folder: str | os.PathLike,
    *,
    seed: int = 0,
    vocab: str = "auto",
    prediction_type: str = "epsilon",
    hidden_size: int = 32,
    text_layers: int = 5,
    family: str = "sd",
    overwrite: bool = False,
) -> dict:
    """Write a tiny random-weight SD snapshot to ``folder`` and return a summary dict.

    Component sizes follow diffusers' own fast tests (docs/architecture.md §8). ``prediction_type="v_prediction"`` gives
    an SD-2.x-like snapshot; ``family="sdxl"`` an SDXL-shaped one (:func:`_tiny_sdxl`; ``hidden_size`` and
    ``prediction_type`` are then SDXL's: D = 32 + 48, ε). ``vocab`` is "auto" (real CLIP BPE if it can be fetched,
    else trained), "clip" or "trained".
    """
    if family not in ("sd", "sdxl"):
        raise ValueError(f"unknown model family {family!r}; use sd or sdxl")
    import torch  # heavy: only when a tiny model is built
    from diffusers.utils import logging as df_logging  # lazy: torch
    from transformers.utils import logging as hf_logging  # lazy: transformers

    hf_logging.disable_progress_bar()
    df_logging.disable_progress_bar()
    folder = Path(folder)
    _empty_folder(folder, overwrite)
    if family == "sdxl":
        used_vocab, size = _tiny_sdxl(folder, seed, vocab, text_layers)
        build_tiny_captioner(folder / "captioner", seed=seed + 3)
        (folder / "RANDOM_WEIGHTS.txt").write_text(RANDOM_WEIGHTS_NOTICE + "\n")
        return {"path": str(folder), "vocab": used_vocab, "vocab_size": size, "hidden_size": sum(SDXL_TEXT[:2]),
                "pooled_size": SDXL_TEXT[2], "prediction_type": "epsilon", "seed": seed, "family": family}
    used_vocab = write_clip_tokenizer(folder / "tokenizer", vocab)
    vocab_map = json.loads((folder / "tokenizer" / "vocab.json").read_text())
    torch.manual_seed(seed)
    _tiny_text_encoder(folder / "text_encoder", vocab_map, hidden_size, text_layers)
    _tiny_unet_vae_scheduler(folder, seed, hidden_size, prediction_type)
    (folder / "model_index.json").write_text(json.dumps(TINY_MODEL_INDEX, indent=2))
    build_tiny_captioner(folder / "captioner", seed=seed + 3)
    (folder / "RANDOM_WEIGHTS.txt").write_text(RANDOM_WEIGHTS_NOTICE + "\n")
    return {"path": str(folder), "vocab": used_vocab, "vocab_size": len(vocab_map), "hidden_size": hidden_size,
            "prediction_type": prediction_type, "seed": seed, "family": family}


_BLIP_WORDS = ("a an the of on in with and is photo picture cat dog sitting standing lying grass table bench "
               "field sofa white black brown small large red blue green next to near front room street tree").split()


def build_tiny_captioner(folder: str | os.PathLike, *, seed: int = 0) -> Path:
    """A tiny random-weight BLIP captioner (``BlipForConditionalGeneration`` + ``BlipProcessor``) in ``folder``."""
    import torch  # lazy: torch
    from transformers import (BertTokenizerFast, BlipConfig, BlipForConditionalGeneration, BlipProcessor,  # lazy: torch
                              BlipTextConfig, BlipVisionConfig)
    from transformers.models.blip.image_processing_pil_blip import BlipImageProcessorPil  # lazy: torch

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[DEC]"] + list(_BLIP_WORDS) + [".", ","]
    # transformers 5 trap: BertTokenizerFast(vocab_file=…) silently builds an empty tokenizer; pass the dict.
    tokenizer = BertTokenizerFast(vocab={t: i for i, t in enumerate(vocab)}, do_lower_case=True)
    tokenizer.add_special_tokens({"bos_token": "[DEC]"})
    image_processor = BlipImageProcessorPil(size={"height": 32, "width": 32})
    BlipProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(folder)
    ids = {t: i for i, t in enumerate(vocab)}
    text = BlipTextConfig(vocab_size=len(vocab), hidden_size=32, encoder_hidden_size=32, intermediate_size=37,
                          num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=64,
                          bos_token_id=ids["[DEC]"], eos_token_id=ids["[SEP]"], sep_token_id=ids["[SEP]"],
                          pad_token_id=ids["[PAD]"])
    vision = BlipVisionConfig(hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
                              image_size=32, patch_size=8)
    torch.manual_seed(seed)
    config = BlipConfig(text_config=text.to_dict(), vision_config=vision.to_dict(), projection_dim=32,
                        image_text_hidden_size=32)
    BlipForConditionalGeneration(config).eval().save_pretrained(folder)
    return folder


def is_random_weights(folder: str | os.PathLike) -> bool:
    """True when ``folder`` is a snapshot written by :func:`build_tiny_model`."""
    return (Path(folder) / "RANDOM_WEIGHTS.txt").is_file()

