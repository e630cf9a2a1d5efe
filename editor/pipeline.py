"""The pix2pix-zero editor (Parmar et al., SIGGRAPH 2023), written out stage by stage (docs/algorithm.md).

1. ``caption``   — BLIP caption of the input (PAPER §4; algorithm §2).
2. ``invert``    — VAE latent, then DDIM inversion under the caption with noise regularization
                   (PAPER §3.1; algorithm §3–§5) → x_T.
3. ``reference`` — DDIM sampling from x_T with prompt = negative = caption, recording every cross-attention
                   map per timestep (PAPER §3.3 "reference cross-attention maps"; algorithm §6.2) → the
                   reconstruction.
4. ``edit``      — sampling again from x_T with c + scale·Δ in the conditional half; at each timestep one SGD
                   step of size ``xa_guidance`` on the doubled latent pulls its cross-attention maps toward the
                   reference maps, then a CFG step (PAPER §3.3 eq. 3; algorithm §6.3) → the edit.

Inversions and reference maps are cached on disk (safetensors) under keys covering every input that changes
them; ``edit(inv, [d1, d2, …])`` runs one inversion and one reference pass for all directions.

SDXL (algorithm §12): the same four stages with the pair of text encoders; every UNet call also gets the pooled
embeddings and ``time_ids`` (:mod:`editor.conditioning`), the edit adds Δ_pooled to the conditional half's pooled
rows, and guidance uses the ``xa_layers`` set with its loss normalised by layer count (:mod:`editor.attention`).
"""

from __future__ import annotations

import contextlib
import copy
import json
import time
from pathlib import Path

import torch

from p2pz.store.hashing import sha256_json
from p2pz.store.paths import cache_dir
from p2pz.store.progress import progress_bar

from .attention import loss_scale, select_layers
from .cache import StaleEntry, TensorCache
from .caption import SNAPSHOT_CAPTIONER, snapshot_captioner
from .config import EditConfig, InversionConfig, with_overrides
from .errors import EditorError
from .image import load_image, pixels_sha256, to_pil
from .inversion import image_latents, inversion_loop, latent_spec, synthetic_inversion
from .loader import (ModelLoadError, serialized, compute_fingerprint, default_model, load_captioner, load_sd_components,
                     resolve_device)
from .placement import placed_delta
from .records import (EditResult, Inversion, check_encoder, delta_tensor, direction_deltas,  # noqa: F401 (API)
                      is_vector_pair, torch_dtype)
from .safety import blank_flagged
from .conditioning import Conditioning, as_conditioning, encode_text, prompt_conditioning
from .reference import negative_prompts, reference_key, reference_pass, step_hook, stored_reference
from .sampler import edit_condition, guided_sample
from .text import SD, SDXL, pair_fingerprint
from .schedule import sampling_plan, to_epsilon


class Editor:
    """pix2pix-zero on a Stable Diffusion model: SD 1.x (ε-prediction), SD 2.x (v-prediction) or SDXL (two text
    encoders and added conditioning: pass ``text_encoder_2`` and ``tokenizer_2``; algorithm §12)."""

    def __init__(self, unet, vae, text_encoder, tokenizer, scheduler, *, captioner=None, safety_checker=None,
                 feature_extractor=None, device: str = "cpu", dtype=torch.float32,
                 text_encoder_fingerprint: str | None = None, model_fingerprint: str | None = None,
                 cache_dir: str | Path | None = None, model_id: str | None = None, captioner_id: str | None = None,
                 progress: bool = False, map_dtype: torch.dtype = torch.float32, cache_maps: bool = False,
                 text_encoder_2=None, tokenizer_2=None):
        self.device = torch.device(device)
        self.dtype = torch_dtype(dtype)
        self.family = SD if text_encoder_2 is None else SDXL
        self.unet, self.text_encoder = self._place(unet), self._place(text_encoder)
        # SDXL's VAE overflows in float16 (its config says force_upcast): it stays in float32, as diffusers keeps it
        upcast = self.dtype == torch.float16 and bool(getattr(vae.config, "force_upcast", False))
        self.vae = self._place(vae, torch.float32 if upcast else None)
        self.text_encoder_2 = None if text_encoder_2 is None else self._place(text_encoder_2)
        self.tokenizer, self.tokenizer_2 = tokenizer, tokenizer_2
        self.scheduler = scheduler
        self.prediction_type = scheduler.config.get("prediction_type", "epsilon")
        self._captioner = captioner
        self.captioner_id = captioner_id
        self.safety_checker = safety_checker
        self.feature_extractor = feature_extractor
        self.vae_factor = 2 ** (len(self.vae.config.block_out_channels) - 1)
        self.vae_scale = float(getattr(self.vae.config, "scaling_factor", 0.18215) or 0.18215)
        self.native_size = int(self.unet.config.sample_size) * self.vae_factor
        encoders = [m for m in (self.text_encoder, self.text_encoder_2) if m is not None]
        self.hidden_size = sum(int(m.config.hidden_size) for m in encoders)  # SDXL: 768 + 1280
        self.pooled_size = None if self.family == SD else int(self.text_encoder_2.config.projection_dim)
        self.text_encoder_fingerprint = text_encoder_fingerprint or (
            compute_fingerprint(self.text_encoder) if self.family == SD
            else pair_fingerprint([compute_fingerprint(m) for m in encoders]))
        self.model_fingerprint = model_fingerprint or self._fingerprint_components()
        self.cache = TensorCache(cache_dir)
        self.model_id = model_id
        self.progress = progress
        self._on_step = None  # on_step(stage, done, total) after every denoising step: see reporting()
        self.map_dtype = map_dtype
        self.cache_maps = cache_maps  # keep reference maps in the disk cache (float16) for later directions
        self.stats = {"inversions": 0, "inversions_cached": 0, "reference_passes": 0, "reference_cached": 0,
                      "edit_passes": 0}

    @property
    def cache_dir(self) -> Path | None:
        """Where inversions and reference maps are cached (None: no disk cache)."""
        return self.cache.root

    @cache_dir.setter
    def cache_dir(self, folder: str | Path | None) -> None:
        self.cache = TensorCache(folder)

    # --- construction ------------------------------------------------------------------------------
    @classmethod
    @serialized  # one model load at a time per process (editor.loader.LOAD_LOCK)
    def from_pretrained(cls, model: str | None = None, captioner: str | None = SNAPSHOT_CAPTIONER, *,
                        device: str | None = None, dtype="float32", safety_checker: bool = True,
                        cache: bool = True, progress: bool = False, map_dtype="float32",
                        cache_maps: bool = False, directions=()) -> "Editor":
        """Load every component through :mod:`editor.loader` (hub id or local snapshot folder).

        ``model`` defaults to ``$P2PZ_MODEL``, else CompVis/stable-diffusion-v1-4. ``captioner``: a BLIP hub id
        or folder, None for none; by default the snapshot's own ``captioner/`` folder when it ships one (the tiny
        test model does), else Salesforce/blip-image-captioning-base. ``directions`` (anything with ``encoder``,
        a text-encoder fingerprint) are checked against the model's text encoder before the UNet and VAE load:
        from the cached fingerprint when the encoder's files are unchanged, else after loading the encoder alone."""
        from diffusers.utils import logging as df_logging  # lazy: diffusers

        model = model or default_model()
        df_logging.disable_progress_bar()
        try:
            device = resolve_device(device)
        except ModelLoadError as exc:
            raise EditorError(str(exc)) from None
        dtype_t = torch_dtype(dtype)
        if dtype_t == torch.float16 and str(device).startswith("cpu"):
            raise EditorError("float16 needs a GPU (--device cuda); use float32 on the CPU")
        def check(fingerprint: str) -> None:  # each direction against the model's text encoder
            for d in directions:
                check_encoder(d, fingerprint, model)

        try:
            parts = load_sd_components(model, safety_checker=safety_checker, check=check)
        except ModelLoadError as exc:
            raise EditorError(str(exc)) from None
        if captioner is SNAPSHOT_CAPTIONER:
            captioner = snapshot_captioner(parts.folder)
        checker, text = parts.safety_checker, parts.text
        if text.family == SDXL:  # the pair: text_encoder + text_encoder_2 (copies: the registry's stay as loaded)
            encoders, tokenizers = [copy.deepcopy(m) for m in text.models], list(text.tokenizers)
        else:
            encoders, tokenizers = [copy.deepcopy(text.model), None], [text.tokenizer, None]
        editor = cls(parts.unet, parts.vae, encoders[0], tokenizers[0], parts.scheduler,
                     safety_checker=checker, feature_extractor=parts.feature_extractor, device=device, dtype=dtype_t,
                     text_encoder_fingerprint=text.fingerprint, model_fingerprint=parts.model_fingerprint,
                     cache_dir=(cache_dir() if cache else None), model_id=model, captioner_id=captioner,
                     progress=progress, map_dtype=torch_dtype(map_dtype), cache_maps=cache_maps,
                     text_encoder_2=encoders[1], tokenizer_2=tokenizers[1])
        if checker is not None:
            editor.safety_checker = checker.to(editor.device, editor.dtype)
        return editor

    @classmethod
    def from_pipe(cls, pipe, captioner: str | None = None, **kwargs) -> "Editor":
        """Build from an already loaded diffusers ``StableDiffusionPipeline`` or ``StableDiffusionXLPipeline`` (its
        scheduler is replaced by DDIM)."""
        from diffusers import DDIMScheduler  # lazy: diffusers

        scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
        kwargs.setdefault("device", pipe.device)
        kwargs.setdefault("dtype", pipe.unet.dtype)
        return cls(pipe.unet, pipe.vae, pipe.text_encoder, pipe.tokenizer, scheduler,
                   safety_checker=getattr(pipe, "safety_checker", None),
                   feature_extractor=getattr(pipe, "feature_extractor", None), captioner_id=captioner,
                   text_encoder_2=getattr(pipe, "text_encoder_2", None), tokenizer_2=getattr(pipe, "tokenizer_2", None),
                   **kwargs)

    def _fingerprint_components(self) -> str:
        return sha256_json({"text": self.text_encoder_fingerprint, "unet": compute_fingerprint(self.unet),
                     "vae": compute_fingerprint(self.vae), "scheduler": dict(self.scheduler.config)})

    def _place(self, module, dtype: torch.dtype | None = None):
        """Move to the device, cast only when needed (to ``dtype``, default the editor's), eval mode, every
        parameter frozen."""
        dtype = dtype or self.dtype
        module = module.to(self.device)
        if module.dtype != dtype:
            module = module.to(dtype)
        return module.eval().requires_grad_(False)

    # --- helpers ------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def reporting(self, on_step):
        """Within the block, ``on_step(stage, done, total)`` hears every denoising step (the web app's job
        progress, a preview's); the previous listener is back afterwards, whatever happens."""
        before, self._on_step = self._on_step, on_step
        try:
            yield self
        finally:
            self._on_step = before

    def progress_bar(self, total: int, desc: str):
        return progress_bar(total, desc, enabled=self.progress, unit="step", on_update=self._on_step)

    def encode_text(self, prompts: list[str]) -> torch.Tensor:
        """Prompt embeddings [B, 77, D] as the UNet takes them (:func:`editor.conditioning.encode_text`)."""
        return encode_text(self, prompts)

    def condition(self, prompts: list[str], latents_shape) -> Conditioning:
        """The UNet's conditioning for ``prompts`` at latents of ``latents_shape``: embeddings, and for SDXL the
        pooled embeddings and ``time_ids`` (:func:`editor.conditioning.prompt_conditioning`)."""
        return prompt_conditioning(self, prompts, latents_shape)

    def cfg_pair(self, negative: list[str], prompts: list[str], latents_shape) -> Conditioning:
        """The CFG pair [negative × B, prompts × B] (:meth:`condition` of each, stacked)."""
        return Conditioning.cat([self.condition(negative, latents_shape), self.condition(prompts, latents_shape)])

    def unet_out(self, x: torch.Tensor, t: int, cond) -> torch.Tensor:
        return self.unet(x, t, **as_conditioning(cond).unet_kwargs()).sample

    def epsilon(self, out: torch.Tensor, x: torch.Tensor, alpha: float) -> torch.Tensor:
        return to_epsilon(out, x, alpha, self.prediction_type)

    @torch.inference_mode()
    def decode(self, latents: torch.Tensor) -> list:
        return to_pil(self.vae.decode(latents.to(self.vae.dtype) / self.vae_scale).sample)

    def direction_vector(self, direction, scale: float = 1.0) -> tuple[torch.Tensor, str]:
        """Δ [1, 77, D] from a registry ``Direction`` or a raw tensor, checked against this text encoder."""
        return delta_tensor(direction, self.text_encoder_fingerprint, self.model_id, self.hidden_size, self.device,
                            scale)

    def direction_deltas(self, direction, scale: float = 1.0):
        """(Δ, Δ_pooled or None for SD, label) from a registry ``Direction``, a tensor, or (SDXL) a ``(vector,
        pooled)`` pair — checked against this model's text encoder(s) (:func:`editor.records.direction_deltas`)."""
        return direction_deltas(direction, self.text_encoder_fingerprint, self.model_id, self.hidden_size,
                                self.pooled_size, self.device, scale)

    def guided_layers(self, choice: str = "all") -> list[str]:
        """The ``attn2`` layers ``--xa-layers`` names, and the loss factor that normalises their count."""
        try:
            return select_layers(self.unet, choice)
        except ValueError as exc:
            raise EditorError(str(exc)) from None

    # --- 1. caption ---------------------------------------------------------------------------------
    def caption(self, image) -> str:
        """BLIP caption of one image (loads the captioner on first use).

        A captioner that cannot be loaded raises :class:`ComponentLoadError`: it would fail every image alike, so
        a batch stops with that one error instead of skipping each image."""
        if self._captioner is None:
            self._captioner = load_captioner(self.captioner_id, str(self.device))
        return self._captioner([load_image(image)])[0]

    # --- 2. inversion -------------------------------------------------------------------------------
    def invert(self, image, caption: str | list[str] | None = None, config: InversionConfig | None = None, *,
               force: bool = False, **overrides) -> Inversion:
        """Regularized DDIM inversion of one image or a list (PAPER §3.1; algorithm §5) → :class:`Inversion`.

        Settings come from ``config`` (:class:`InversionConfig`) and/or its fields as keywords
        (``steps=50, lambda_ac=20.0, lambda_kl=20.0, reg_steps=5, ac_rolls=5, seed=0, schedule="symmetric",
        size=None, keep_aspect=False, posterior="sample"``). The VAE posterior is sampled with a generator
        seeded by ``seed`` (``posterior="mode"`` takes its mean); each image's AC rolls come from its own torch
        generator seeded by ``seed``. The regularization runs in fp32 whatever the model dtype; v-prediction
        outputs are converted to ε first. ``force`` recomputes instead of reading the cache.
        """
        cfg = with_overrides(config, InversionConfig, overrides)
        images = [load_image(im) for im in (image if isinstance(image, (list, tuple)) else [image])]
        if caption is None:
            captions = [self.caption(im) for im in images]
        else:
            captions = [caption] * len(images) if isinstance(caption, str) else list(caption)
        if len(captions) != len(images):
            raise EditorError(f"{len(captions)} captions for {len(images)} images")
        size = cfg.size or self.native_size
        params = {**cfg.params(), "size": size}
        shas = [pixels_sha256(im) for im in images]
        key = sha256_json({"kind": "inversion", "images": shas, "model": self.model_fingerprint, "captions": captions,
                           "steps": cfg.steps, "schedule": cfg.schedule, "dtype": str(self.dtype), **params})
        record = dict(caption=captions[0] if len(captions) == 1 else captions, steps=cfg.steps,
                      schedule=cfg.schedule, params=params, image_sha256=shas, key=key)
        cached = None if force else self.cache.load("inversions", key, {"x_T": latent_spec(self, images, cfg)})
        if cached is not None:
            self.stats["inversions_cached"] += 1
            return Inversion(latents=cached["x_T"].to(self.device), cached=True, **record)
        # 2a. pixels → VAE latent z₀ (seeded posterior sample, scaled)
        z0 = image_latents(self, images, cfg)  # [B, 4, h, w]
        # 2b. the inversion loop
        latents = self.invert_latents(z0, captions, cfg)
        self.cache.save("inversions", key, {"x_T": latents}, {"captions": json.dumps(captions)})
        return Inversion(latents=latents, **record)

    def invert_latents(self, z0: torch.Tensor, captions: list[str], config: InversionConfig | None = None,
                       **overrides) -> torch.Tensor:
        """The inversion loop on VAE latents z₀ [B, 4, h, w] (scaled) → x_T. CFG is off (scale 1)."""
        return inversion_loop(self, z0, captions, with_overrides(config, InversionConfig, overrides))

    def synthetic(self, prompt: str, seed: int = 0, size: int | None = None, steps: int = 50) -> Inversion:
        """x_T ~ N(0, I) from a seed, for editing a generated image (algorithm §0 "synthetic images")."""
        return synthetic_inversion(self, prompt, seed, size, steps)

    # --- 3. reference pass --------------------------------------------------------------------------
    def reference(self, inv: Inversion, guidance_scale: float = 5.0, negative: list[str] | None = None,
                  steps: int | None = None, force: bool = False, xa_layers: str = "all"):
        """The reference pass alone: DDIM sampling from x_T with prompt = caption, recording every
        cross-attention map per timestep (of the ``xa_layers`` set). Returns (maps {t: {layer: [2B·heads, HW,
        T]}}, reconstruction latents); see :func:`editor.reference.reference_pass`."""
        return reference_pass(self, inv, guidance_scale, negative, steps, force, xa_layers)

    # --- 4. edit pass -------------------------------------------------------------------------------
    def edit(self, inv: Inversion, direction, config: EditConfig | None = None, *, negative: list[str] | None = None,
             decode: bool = True, force: bool = False, **overrides):
        """Apply one direction (→ :class:`EditResult`) or a list (→ list), sharing one reference pass.

        Settings come from ``config`` (:class:`EditConfig`) and/or its fields as keywords (``scale=1.0,
        xa_guidance=None`` (0.1 real, 0.15 synthetic, 0.01 v-prediction), ``guidance_scale=5.0, steps=None``
        (the inversion's)).

        The reference pass runs in lockstep with the edit passes: at each timestep the reference maps are
        recorded, the reference latent steps, and every direction takes its guided step against those maps, so
        only one timestep of maps is ever held (≈ 130 MB at 512 px instead of ≈ 6.6 GB), with results identical
        to running the passes one after the other. With ``cache_maps`` and a cached entry, the reference pass is
        skipped and its maps are read from disk one timestep at a time."""
        cfg = with_overrides(config, EditConfig, overrides).resolved(inv, self.prediction_type)
        many = isinstance(direction, (list, tuple)) and not is_vector_pair(direction)
        directions = list(direction) if many else [direction]
        if not directions:
            raise EditorError("no direction given")
        vectors = [self.direction_deltas(d, cfg.scale) for d in directions]  # check all before any work
        captions = inv.captions
        placements = [placed_delta(self.tokenizer, captions, vec, getattr(d, "token_delta", None), cfg.delta_at,
                                   cfg.scale, label) for d, (vec, _, label) in zip(directions, vectors)]
        vectors = [(p.delta, pooled, label) for p, (_, pooled, label) in zip(placements, vectors)]  # [B|1, 77, D]
        neg = negative_prompts(inv, negative)
        key = reference_key(self, inv, cfg.guidance_scale, neg, cfg.steps, cfg.xa_layers)
        stored = stored_reference(self, key, force, inv, cfg.steps, cfg.xa_layers)
        timings = [{"reference_s": 0.0, "edit_s": 0.0} for _ in vectors]
        if stored is not None:
            maps, recon = stored
            edited = []
            try:
                for (vec, pooled, _), tm in zip(vectors, timings):
                    t0 = time.perf_counter()
                    edited.append(self.edit_latents(inv.latents, captions, neg, (vec, pooled) if pooled is not None
                                                    else vec, maps, cfg))
                    tm["edit_s"] = time.perf_counter() - t0
            except StaleEntry:  # a damaged entry, found as it is read: recompute the reference pass with the edits
                self.cache.drop_maps(key)
                self.stats["reference_cached"] -= 1
                self.stats["edit_passes"] -= len(edited) + 1  # the finished ones and the one that stopped
                stored = None
        if stored is None:
            recon, edited = self._lockstep(inv, captions, neg, [(v, p) for v, p, _ in vectors], cfg, key, timings)
        recon_images = self.decode(recon) if decode else None
        one = inv.latents.shape[0] == 1
        results = []
        for (_, _, label), latents, tm, place in zip(vectors, edited, timings, placements):
            images, nsfw = (self._postprocess(latents) if decode else (None, None))
            results.append(EditResult(
                edited=(images[0] if one else images) if decode else None,
                reconstruction=(recon_images[0] if one else recon_images) if decode else None,
                latents=latents, reconstruction_latents=recon, caption=inv.caption, direction=label,
                params={"scale": cfg.scale, "xa_guidance": cfg.xa_guidance, "guidance_scale": cfg.guidance_scale,
                        "steps": cfg.steps, "schedule": inv.schedule, "negative": neg,
                        **({} if cfg.xa_layers == "all" else {"xa_layers": cfg.xa_layers}),
                        "delta_at": place.mode,  # as placed (auto resolved)
                        **({} if place.mode == "all" else {"delta_at_fallback": len(place.fallback)}),
                        "prediction_type": self.prediction_type, **inv.params},
                nsfw=nsfw, timings=tm, reference_cached=stored is not None,
                notes=[place.note] if place.note else []))
        return results if many else results[0]

    def _lockstep(self, inv: Inversion, captions: list[str], negative: list[str], deltas: list[tuple],
                  cfg: EditConfig, key: str, timings: list[dict]):
        """Reference and edit passes in one loop over the timesteps (algorithm §6.2–§6.3) → (reconstruction
        latents, edited latents per direction). Each timestep's maps are dropped once every direction used them
        (and written to the disk cache first, with ``cache_maps``)."""
        cond = self.cfg_pair(negative, captions, inv.latents.shape)  # [2B, 77, D] (+ pooled, time ids)
        plan = sampling_plan(self.scheduler, cfg.steps)
        layers = self.guided_layers(cfg.xa_layers)
        self.stats["reference_passes"] += 1
        self.stats["edit_passes"] += len(deltas)
        with self.progress_bar(len(plan), "edit") as bar:
            out = guided_sample(self.unet, plan, inv.latents.to(self.device, self.dtype), cond,
                                [edit_condition(cond, d, p) for d, p in deltas], guidance_scale=cfg.guidance_scale,
                                xa_guidance=cfg.xa_guidance, prediction_type=self.prediction_type,
                                map_dtype=self.map_dtype, layers=layers,
                                loss_scale=loss_scale(self.unet, layers, self.family),
                                on_step=step_hook(self, key, bar))
        for tm, edit_s in zip(timings, out.timings["edit_s"]):
            tm["reference_s"] += out.timings["reference_s"] / len(timings)
            tm["edit_s"] += edit_s
        if self.cache_maps:
            self.cache.finish_maps(key, out.reference)
        return out.reference, out.edited

    def edit_latents(self, x_t: torch.Tensor, captions: list[str], negative: list[str], delta: torch.Tensor,
                     maps, config: EditConfig, callback=None) -> torch.Tensor:
        """The edit pass alone against recorded reference ``maps`` ({t: {layer: map}}, e.g. from
        :meth:`reference`), every step written out (PAPER §3.3; algorithm §6.3).

        ``config`` must be resolved (steps and xa_guidance set). ``callback(step, t, loss, grad)`` (optional)
        sees L_xa and its gradient on the doubled latent. For SDXL ``delta`` is the pair (Δ, Δ_pooled)."""
        if config.steps is None or config.xa_guidance is None:
            raise EditorError("edit_latents needs an EditConfig with steps and xa_guidance set")
        delta, delta_pooled = delta if isinstance(delta, tuple) else (delta, None)
        cond = self.cfg_pair(negative, captions, x_t.shape)  # [2B, 77, D] (+ pooled, time ids)
        layers = self.guided_layers(config.xa_layers)
        plan = sampling_plan(self.scheduler, config.steps)
        missing = [m.t for m in plan if m.t not in maps]
        if missing:
            raise EditorError(f"reference maps are missing timesteps {missing[:3]}…; rerun the reference pass")
        extra = set(maps) - {m.t for m in plan}
        if extra:
            raise EditorError(f"{len(extra)} timesteps of reference maps are not in this edit's schedule; the "
                              "reference pass and the edit pass disagree on steps")
        self.stats["edit_passes"] += 1
        with self.progress_bar(len(plan), "edit") as bar:
            out = guided_sample(self.unet, plan, x_t.to(self.device, self.dtype), cond,
                                [edit_condition(cond, delta, delta_pooled)], guidance_scale=config.guidance_scale,
                                xa_guidance=config.xa_guidance, prediction_type=self.prediction_type,
                                reference_maps=maps, layers=layers, loss_scale=loss_scale(self.unet, layers, self.family),
                                on_step=step_hook(self, None, bar), callback=callback)
        return out.edited[0]

    def _postprocess(self, latents: torch.Tensor):
        with torch.inference_mode():
            decoded = self.vae.decode(latents.to(self.vae.dtype) / self.vae_scale).sample
        return blank_flagged(to_pil(decoded), self.safety_checker, self.feature_extractor, self.device, self.dtype)
