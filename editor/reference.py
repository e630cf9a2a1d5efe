"""Stage 3 of the editor, the reference pass (PAPER §3.3 "reference cross-attention maps"; algorithm §6.2), as
functions of a loaded :class:`editor.pipeline.Editor`: the negative prompt, the cache key of the maps, the cached
maps when kept, and the pass itself — DDIM sampling from x_T with prompt = negative = the caption, recording every
guided cross-attention map per timestep."""

from __future__ import annotations

import hashlib

from p2pz.store.hashing import sha256_json

from .cache import Expected, StaleEntry
from .records import Inversion
from .sampler import guided_sample
from .schedule import sampling_plan


def negative_prompts(inv: Inversion, negative: list[str] | None) -> list[str]:
    """The negative prompt: the caption for real images, "" for synthetic ones (algorithm §0)."""
    if negative is not None:
        return list(negative)
    return ["" for _ in inv.captions] if inv.synthetic else inv.captions


def reference_key(ed, inv: Inversion, guidance_scale: float, negative: list[str], steps: int,
                  xa_layers: str = "all") -> str:
    """The cache key of a reference pass: x_T, the model, captions, negative, CFG, steps, dtype and the layer set."""
    x_sha = hashlib.sha256(inv.latents.detach().float().cpu().numpy().tobytes()).hexdigest()
    layers = {} if xa_layers == "all" else {"layers": xa_layers}  # "all" keeps the keys of earlier caches
    return sha256_json({"kind": "reference", "x_T": x_sha, "model": ed.model_fingerprint, "captions": inv.captions,
                        "negative": negative, "cfg": guidance_scale, "steps": steps, "dtype": str(ed.dtype),
                        **layers})


def stored_reference(ed, key: str, force: bool, inv: Inversion, steps: int, xa_layers: str = "all"):
    """Cached reference maps (read one timestep at a time) and reconstruction, when kept, present and as expected
    (latents like x_T, this schedule's timesteps, the guided layers) → (maps, latents) or None."""
    if not ed.cache_maps or force:
        return None
    found = ed.cache.load_maps(key, Expected(tuple(inv.latents.shape), ed.dtype),
                               [m.t for m in sampling_plan(ed.scheduler, steps)],
                               [layer.removesuffix(".processor") for layer in ed.guided_layers(xa_layers)])
    if found is None:
        return None
    ed.stats["reference_cached"] += 1
    maps, latents = found
    return maps, latents.to(ed.device)


def step_hook(ed, key: str | None, bar):
    """After every timestep of the sampler: its maps to the disk cache (with ``cache_maps``), the bar on."""
    def after(i, move, maps_t):
        if key is not None and ed.cache_maps:
            ed.cache.save_map_step(key, move.t, maps_t)
        bar.update()
    return after


def reference_pass(ed, inv: Inversion, guidance_scale: float = 5.0, negative: list[str] | None = None,
                   steps: int | None = None, force: bool = False, xa_layers: str = "all"):
    """The reference pass alone → (maps {t: {layer: [2B·heads, HW, T]}}, reconstruction latents).

    This holds every timestep's maps (≈ 6.6 GB in fp32 at SD defaults); ``Editor.edit`` instead runs the reference
    and edit passes in lockstep and holds one timestep's. With ``cache_maps`` the maps are also written to the disk
    cache (float16), one timestep at a time; ``xa_layers`` chooses the recorded layers."""
    steps = steps or inv.steps
    negative = negative_prompts(inv, negative)
    key = reference_key(ed, inv, guidance_scale, negative, steps, xa_layers)
    stored = stored_reference(ed, key, force, inv, steps, xa_layers)
    if stored is not None:
        maps, latents = stored
        try:
            return {t: dict(maps[t]) for t in maps}, latents
        except StaleEntry:  # a damaged entry: recomputed (and rewritten) below
            ed.cache.drop_maps(key)
            ed.stats["reference_cached"] -= 1
    cond = ed.cfg_pair(negative, inv.captions, inv.latents.shape)  # [2B, 77, D] (+ pooled, time ids)
    ed.stats["reference_passes"] += 1
    plan = sampling_plan(ed.scheduler, steps)
    with ed.progress_bar(len(plan), "reference") as bar:
        out = guided_sample(ed.unet, plan, inv.latents.to(ed.device, ed.dtype), cond, [],
                            guidance_scale=guidance_scale, xa_guidance=0.0, prediction_type=ed.prediction_type,
                            keep_maps=True, map_dtype=ed.map_dtype, layers=ed.guided_layers(xa_layers),
                            on_step=step_hook(ed, key, bar))
    if ed.cache_maps:
        ed.cache.finish_maps(key, out.reference)
    return out.maps, out.reference
