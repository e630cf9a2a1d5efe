"""Attention processors for cross-attention guidance (PAPER §3.3, algorithm §6).

* :class:`SDPAProcessor` — self-attention (``attn1``) through ``scaled_dot_product_attention``: the fast,
  memory-light path; no probability map is ever materialized.
* :class:`CrossAttnMapProcessor` — cross-attention (``attn2``) with an explicit softmax probability map
  [B·heads, HW, T], handed to an :class:`AttentionMaps` controller that records it (reference pass), compares it
  with the recorded map (edit pass: L_xa = Σ_layers mean_slices Σ_{HW,T} (M − M_ref)²), or ignores it.

Installed with ``unet.set_attn_processor`` by :func:`guided_processors` and restored afterwards. Neither
processor has parameters; the UNet's own parameters stay frozen (gradients flow only to the latent).
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F


def _project(attn, hidden_states, encoder_hidden_states):
    """Shared front half of both processors: norms, q/k/v projections, heads split. Returns q, k, v as
    [B, heads, N, d] plus what is needed to finish."""
    residual = hidden_states
    if getattr(attn, "spatial_norm", None) is not None:
        raise NotImplementedError("spatial-norm attention is not used by Stable Diffusion UNets")
    input_ndim = hidden_states.ndim
    if input_ndim == 4:
        b, c, h, w = hidden_states.shape
        hidden_states = hidden_states.view(b, c, h * w).transpose(1, 2)
    if attn.group_norm is not None:
        hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
    context = hidden_states if encoder_hidden_states is None else encoder_hidden_states
    if encoder_hidden_states is not None and attn.norm_cross:
        context = attn.norm_encoder_hidden_states(context)
    q, k, v = attn.to_q(hidden_states), attn.to_k(context), attn.to_v(context)
    batch, heads = q.shape[0], attn.heads
    d = k.shape[-1] // heads
    q, k, v = (x.view(batch, -1, heads, d).transpose(1, 2) for x in (q, k, v))  # [B, heads, N, d]
    if getattr(attn, "norm_q", None) is not None:
        q = attn.norm_q(q)
    if getattr(attn, "norm_k", None) is not None:
        k = attn.norm_k(k)
    return q, k, v, residual, input_ndim


def _finish(attn, out, residual, input_ndim):
    batch, heads, n, d = out.shape
    out = out.transpose(1, 2).reshape(batch, n, heads * d)
    out = attn.to_out[1](attn.to_out[0](out))
    if input_ndim == 4:
        out = out.transpose(-1, -2).reshape(residual.shape)
    if attn.residual_connection:
        out = out + residual
    return out / attn.rescale_output_factor


class SDPAProcessor:
    """Self-attention through PyTorch's fused scaled-dot-product attention."""

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kwargs):
        q, k, v, residual, nd = _project(attn, hidden_states, encoder_hidden_states)
        if attention_mask is not None:
            attention_mask = attn.prepare_attention_mask(attention_mask, k.shape[2], q.shape[0])
            attention_mask = attention_mask.view(q.shape[0], attn.heads, -1, attention_mask.shape[-1])
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attention_mask, scale=attn.scale)
        return _finish(attn, out, residual, nd)


class AttentionMaps:
    """Controller shared by every ``attn2`` processor of a UNet.

    ``mode``: ``"off"`` (maps are computed for the output but not kept), ``"record"`` (each map is stored,
    detached, on ``store_device`` in ``store_dtype``, under ``maps[t][layer]``), ``"guide"`` (each map is
    compared with ``reference[t][layer]`` and the squared error added to ``loss``; used entries are counted).
    """

    def __init__(self, store_device: str | torch.device = "cpu", store_dtype: torch.dtype = torch.float32):
        self.mode = "off"
        self.t: int | None = None
        self.store_device = torch.device(store_device)
        self.store_dtype = store_dtype
        self.maps: dict[int, dict[str, torch.Tensor]] = {}
        self.reference: dict[int, dict[str, torch.Tensor]] | None = None
        self.loss: torch.Tensor | None = None
        self.consumed: set[tuple[int, str]] = set()
        self.batch_groups: int = 1  # images in the batch (per-image loss means; see guide())
        self.loss_scale: float = 1.0  # the guided step multiplies ``loss`` by it (editor.attention.loss_scale)
        self.guided, self.stop_when_complete = 0, False  # maps compared in this call; stop after the last one

    def observe(self, layer: str, probs: torch.Tensor) -> None:
        if self.mode == "record":
            self.maps.setdefault(self.t, {})[layer] = probs.detach().to(self.store_device, self.store_dtype)
        elif self.mode == "guide":
            ref = self.reference[self.t].get(layer)
            if ref is None or ref.shape != probs.shape:
                from .cache import StaleEntry  # lazy: sqlalchemy

                raise StaleEntry(f"the reference map of {layer} at timestep {self.t} is "
                                 f"{'missing' if ref is None else tuple(ref.shape)}, not {tuple(probs.shape)}")
            ref = ref.to(probs.device, torch.float32)
            self.consumed.add((self.t, layer))
            diff = (probs.float() - ref) ** 2  # [2B·heads, HW, T]
            per_slice = diff.sum((1, 2))  # [2B·heads]
            # L_xa (algorithm §6.3): Σ over pixels and tokens, mean over the (batch·heads) slices. With a batch
            # of B images the mean is taken per image (its 2·heads slices of the CFG batch [u_0..u_B-1, c_0..c_B-1])
            # and summed over images, so each image gets exactly the gradient it would get alone.
            b = self.batch_groups
            heads2 = per_slice.shape[0] // (2 * b)
            per_image = per_slice.view(2, b, heads2).permute(1, 0, 2).reshape(b, -1).mean(1)
            term = per_image.sum()
            self.loss = term if self.loss is None else self.loss + term
            self.guided += 1
            if self.stop_when_complete and self.guided == len(self.reference[self.t]):
                raise MapsComplete  # L_xa is whole: nothing after the last guided layer can change its gradient

    @contextlib.contextmanager
    def at(self, t: int, mode: str, stop_when_complete: bool = False):
        """Maps of timestep ``t`` in ``mode`` for one UNet call; ``stop_when_complete`` (guide mode) raises
        :class:`MapsComplete` once every reference map of ``t`` has entered the loss."""
        self.t, self.mode, self.guided, self.stop_when_complete = t, mode, 0, stop_when_complete
        try:
            yield self
        finally:
            self.mode, self.stop_when_complete = "off", False


class MapsComplete(Exception):
    """Raised by the guided forward pass once every reference map of the timestep has entered L_xa: the layers
    after the last guided one (SDXL: the whole last up block and the output convolution) feed only the noise
    prediction, which the guided step discards (it predicts again from the updated latent), and no gradient of
    L_xa flows through them — stopping there saves their forward and their saved activations, bit for bit."""


class CrossAttnMapProcessor:
    """Cross-attention with an explicit probability map, reported to an :class:`AttentionMaps`."""

    def __init__(self, maps: AttentionMaps, layer: str):
        self.maps = maps
        self.layer = layer

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kwargs):
        q, k, v, residual, nd = _project(attn, hidden_states, encoder_hidden_states)
        if getattr(attn, "upcast_attention", False):  # SD 2.1: scores in fp32, as diffusers' get_attention_scores
            q, k = q.float(), k.float()
        scores = torch.matmul(q, k.transpose(-1, -2)) * attn.scale  # [B, heads, HW, T]
        if attention_mask is not None:
            mask = attn.prepare_attention_mask(attention_mask, k.shape[2], q.shape[0])
            scores = scores + mask.view(q.shape[0], attn.heads, -1, mask.shape[-1])
        probs = scores.float().softmax(dim=-1).to(v.dtype)
        batch, heads, n, t = probs.shape
        self.maps.observe(self.layer, probs.reshape(batch * heads, n, t))  # [B·heads, HW, T], rows sum to 1
        return _finish(attn, torch.matmul(probs, v), residual, nd)


def cross_attention_layers(unet) -> list[str]:
    """Names of the ``attn2`` processors of a UNet (16 for SD 1.x, 70 for SDXL)."""
    return [name for name in unet.attn_processors if name.split(".")[-2] == "attn2"]


XA_LAYER_CHOICES = ("all", "high", "low")
REFERENCE_LAYER_COUNT = 16  # SD 1.x's attn2 layers: the count the paper's xa_guidance defaults were set for


def _level(name: str, n_up: int) -> int:
    """How many times the UNet has downsampled where layer ``name`` sits (0: full latent resolution)."""
    part, index = name.split(".")[:2]
    if part == "down_blocks":
        return int(index)
    if part == "up_blocks":
        return n_up - 1 - int(index)
    return n_up  # mid_block: below every down block


def select_layers(unet, choice: str = "all") -> list[str]:
    """The ``attn2`` layers cross-attention guidance uses (``--xa-layers``): ``all``; ``high``, those at the
    highest resolution that has cross-attention (SDXL at 1024 px: the 10 layers at 64²; SD 1.x: the 5 at 64²);
    ``low``, every other one (SDXL: the 60 at 32²)."""
    if choice not in XA_LAYER_CHOICES:
        raise ValueError(f"unknown --xa-layers {choice!r}; choose one of {', '.join(XA_LAYER_CHOICES)}")
    layers = cross_attention_layers(unet)
    if choice == "all" or not layers:
        return layers
    n_up = len(getattr(unet, "up_blocks", [])) or 1
    top = min(_level(name, n_up) for name in layers)
    return [name for name in layers if (_level(name, n_up) == top) == (choice == "high")]


def loss_scale(unet, layers: list[str], family: str = "sd") -> float:
    """The factor on Σ_layers L_xa that makes one ``xa_guidance`` the same strength whatever the layer count
    (algorithm §12): N_ref / |layers|, with N_ref = the UNet's own attn2 count for SD-family UNets (so ``all`` is
    exactly 1: SD 1.x/2.x results are bit-identical) and 16, SD 1.x's count, for SDXL (so its 70 layers guide with
    the per-layer strength the paper's defaults were tuned for)."""
    n_ref = REFERENCE_LAYER_COUNT if family == "sdxl" else len(cross_attention_layers(unet))
    return 1.0 if len(layers) == n_ref else n_ref / max(len(layers), 1)


@contextlib.contextmanager
def guided_processors(unet, maps: AttentionMaps, layers: list[str] | None = None):
    """Install SDPA on self-attention and map-recording processors on cross-attention — on ``layers`` only when
    given (the others run SDPA, no map) — and restore the UNet's own processors on exit."""
    saved = dict(unet.attn_processors)
    chosen = None if layers is None else set(layers)
    procs = {}
    for name in saved:
        guided = name.split(".")[-2] == "attn2" and (chosen is None or name in chosen)
        procs[name] = CrossAttnMapProcessor(maps, name.removesuffix(".processor")) if guided else SDPAProcessor()
    unet.set_attn_processor(procs)
    try:
        yield maps
    finally:
        unet.set_attn_processor(saved)
