"""The guided sampler of pix2pix-zero as one function: the reference pass and the edit passes in lockstep over the
DDIM schedule (PAPER §3.3; algorithm §6.2–§6.3), written out diffusers-style.

:func:`guided_sample` takes the UNet, the sampling plan, x_T, the CFG conditionings and the guidance settings and
returns the latents (and, when asked, the reference maps). The :class:`~editor.pipeline.Editor` calls it for its
three uses: the reference pass alone (no edits, maps kept), the lockstep pass (reference + every direction, one
timestep of maps held at a time) and the edit pass alone against recorded maps.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import torch

from .attention import AttentionMaps, MapsComplete, guided_processors
from .conditioning import Conditioning, as_conditioning  # noqa: F401 (the sampler's inputs)
from .errors import EditorError
from .schedule import ddim_step, to_epsilon


@dataclass
class SampleOutput:
    reference: torch.Tensor | None  # the reconstruction latents [B, 4, h, w] (None when maps were given)
    edited: list[torch.Tensor]  # one per edit conditioning
    maps: dict | None = None  # {t: {layer: map}} when ``keep_maps``
    timings: dict = field(default_factory=dict)  # {"reference_s": s, "edit_s": [s per edit]}


def cfg_step(out: torch.Tensor, x: torch.Tensor, move, guidance_scale: float, prediction_type: str,
             dtype: torch.dtype) -> torch.Tensor:
    """CFG on the raw model outputs, out_u + s(out_c − out_u), then ε at ``x`` (the unconditional half, the
    latent being stepped) and a DDIM step — as diffusers does, also for v-prediction, where the two halves'
    latents differ after a guidance step (algorithm §6.3)."""
    b = x.shape[0]
    out = out.float()
    guided = out[:b] + guidance_scale * (out[b:] - out[:b])
    eps = to_epsilon(guided, x.float(), move.a_from, prediction_type)
    return ddim_step(eps, x.float(), move.a_from, move.a_to).to(dtype)


def edit_condition(cond, delta: torch.Tensor, delta_pooled: torch.Tensor | None = None):
    """The edit pass's conditioning: c + Δ in every conditional row of the CFG pair [2B, 77, D] (the reference
    code's ``[1:2]`` only edited the first; algorithm §6.3) and, for SDXL, pooled + Δ_pooled in the same rows
    (algorithm §12). The negative rows stay the caption's. Plain embeddings in, plain embeddings out."""
    if not isinstance(cond, Conditioning):
        b = cond.shape[0] // 2
        cond_edit = cond.clone()
        cond_edit[b:] = cond_edit[b:] + delta.to(cond.dtype)
        return cond_edit
    hidden = edit_condition(cond.hidden, delta)
    pooled = cond.pooled
    if pooled is not None:
        if delta_pooled is None:
            raise EditorError("an SDXL edit needs Δ_pooled as well as Δ (a direction built with an SDXL model)")
        pooled = edit_condition(pooled, delta_pooled)
    return Conditioning(hidden, pooled, cond.time_ids)


def reference_step(unet, x: torch.Tensor, move, cond: torch.Tensor, guidance_scale: float, store: AttentionMaps,
                   prediction_type: str) -> torch.Tensor:
    """One reference step (algorithm §6.2): record this timestep's maps, then step the latent."""
    with torch.inference_mode():
        # (1) one UNet call on the CFG pair, recording every attn2 probability map at this timestep
        with store.at(move.t, "record"):
            out = unet(torch.cat([x, x]), move.t, **cond.unet_kwargs()).sample
        # (2) classifier-free guidance and a DDIM step down the schedule
        return cfg_step(out, x, move, guidance_scale, prediction_type, x.dtype)


def guided_step(unet, x: torch.Tensor, i: int, move, cond_edit: Conditioning, store: AttentionMaps,
                guidance_scale: float, xa_guidance: float, prediction_type: str,
                callback: Callable | None = None) -> torch.Tensor:
    """One edit step (algorithm §6.3) against ``store.reference[move.t]``; checks every map was used."""
    b = x.shape[0]
    x_in = torch.cat([x, x]).detach()  # [2B, 4, h, w]
    layers = set(store.reference[move.t])
    store.consumed.clear()
    if xa_guidance > 0:
        # (1) L_xa = Σ_layers ‖M_t − M_t^ref‖² with a graph through the latent only
        x_in.requires_grad_(True)
        store.loss = None
        with torch.enable_grad(), store.at(move.t, "guide", stop_when_complete=True):
            try:
                unet(x_in, move.t, **cond_edit.unet_kwargs())
            except MapsComplete:  # the forward stops after the last guided layer: its output is not used
                pass
            loss = store.loss if store.loss_scale == 1.0 else store.loss * store.loss_scale  # |layers| normalised
            (grad,) = torch.autograd.grad(loss, x_in)
        if callback is not None:
            callback(i, move.t, loss.detach(), grad.detach())
        # (2) one SGD step on the doubled latent
        x_in = (x_in - xa_guidance * grad).detach()
    else:
        store.consumed.update((move.t, layer) for layer in layers)
    unused = {(move.t, layer) for layer in layers} - store.consumed
    if unused:
        raise EditorError(f"{len(unused)} reference maps were never used; the reference pass and the edit "
                          "pass disagree on timesteps or layers")
    # (3) predict the noise again from the guided latent, without a graph
    with torch.no_grad():
        out = unet(x_in, move.t, **cond_edit.unet_kwargs()).sample
    # (4) classifier-free guidance on the raw outputs and a DDIM step from the guided unconditional half
    return cfg_step(out, x_in[:b], move, guidance_scale, prediction_type, x.dtype)


def guided_sample(unet, plan: list, x_T: torch.Tensor, cond, edit_conds: list, *,
                  guidance_scale: float, xa_guidance: float, prediction_type: str = "epsilon",
                  reference_maps: dict | None = None, keep_maps: bool = False, map_dtype=torch.float32,
                  layers: list[str] | None = None, loss_scale: float = 1.0,
                  on_step: Callable | None = None, callback: Callable | None = None) -> SampleOutput:
    """Sample from ``x_T`` [B, 4, h, w] down ``plan`` (:func:`editor.schedule.sampling_plan`).

    ``cond`` is the reference pass's CFG pair (negative, caption): prompt embeddings [2B, 77, D] or a
    :class:`Conditioning` (SDXL: with pooled embeddings and time ids); ``edit_conds`` the edit passes'
    (:func:`edit_condition`). ``layers`` (default: every ``attn2``) are the guided cross-attention layers and
    ``loss_scale`` the factor on their summed loss (:func:`editor.attention.loss_scale`). Without ``reference_maps``, each timestep first runs the reference step, recording
    its cross-attention maps, and every edit then takes its guided step against them (lockstep: one timestep of
    maps is held, unless ``keep_maps``). With ``reference_maps`` ({t: {layer: map}}, recorded earlier) there is
    no reference pass. ``on_step(i, move, maps_t)`` runs after every timestep (progress, writing the maps to a
    cache); ``callback(i, t, loss, grad)`` sees each guidance step's L_xa and its gradient.
    """
    cond, edit_conds = as_conditioning(cond), [as_conditioning(c) for c in edit_conds]
    store = AttentionMaps(store_device="cpu", store_dtype=map_dtype)
    store.loss_scale = float(loss_scale)
    if reference_maps is None:
        store.reference = store.maps  # each timestep's guide reads what its reference step just recorded
    else:
        store.reference = reference_maps
    store.batch_groups = x_T.shape[0]
    x_ref = x_T if reference_maps is None else None
    xs = [x_T for _ in edit_conds]
    timings = {"reference_s": 0.0, "edit_s": [0.0 for _ in edit_conds]}
    with guided_processors(unet, store, layers):
        for i, move in enumerate(plan):
            # (1) the reference step: record M_t^ref and step the reconstruction
            if x_ref is not None:
                t0 = time.perf_counter()
                x_ref = reference_step(unet, x_ref, move, cond, guidance_scale, store, prediction_type)
                timings["reference_s"] += time.perf_counter() - t0
            # (2) every edit's guided step against this timestep's reference maps
            for j, cond_edit in enumerate(edit_conds):
                t0 = time.perf_counter()
                xs[j] = guided_step(unet, xs[j], i, move, cond_edit, store, guidance_scale, xa_guidance,
                                    prediction_type, callback)
                timings["edit_s"][j] += time.perf_counter() - t0
            if on_step is not None:
                on_step(i, move, store.reference[move.t])
            # (3) drop this timestep's maps once every edit used them
            if reference_maps is None and not keep_maps:
                del store.maps[move.t]
    return SampleOutput(reference=x_ref, edited=[x.detach() for x in xs],
                        maps=store.maps if keep_maps else None, timings=timings)
