"""The editor's settings as two dataclasses, with the paper's defaults (docs/algorithm.md §8).

``InversionConfig`` holds everything that changes x_T (and so keys the inversion cache); ``EditConfig``
everything that changes an edit pass. Both are plain values: ``replace(cfg, steps=100)`` makes a variant, and
``Editor.invert(image, caption, steps=100)`` / ``Editor.edit(inv, d, xa_guidance=0.2)`` accept the same fields
as keyword arguments.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace

from .errors import EditorError

SCHEDULES = ("symmetric", "reference")
POSTERIORS = ("sample", "mode")
XA_LAYERS = ("all", "high", "low")  # editor.attention.select_layers
DELTA_AT = ("auto", "all", "word", "word+pad")  # editor.placement: where Δ is added to the caption's embedding


AUTO = {"attribute": "word", "scene": "word"}  # kind of the source word → placement; any other kind: "all"


def resolve_mode(mode: str, token) -> str:
    """The placement ``auto`` stands for with this direction's token part (:data:`AUTO`); other modes as given."""
    if mode != "auto":
        return mode
    if getattr(token, "vector", None) is None:  # no Δ_token (an older direction) or a raw tensor
        return "all"
    return AUTO.get(getattr(token, "kind", None), "all")


@dataclass(frozen=True)
class InversionConfig:
    """Regularized DDIM inversion (PAPER §3.1; docs/algorithm.md §4–§5)."""

    steps: int = 50  # DDIM steps; the edit must use the same number (x_T depends on it)
    lambda_ac: float = 20.0  # weight of the autocorrelation loss
    lambda_kl: float = 20.0  # weight of the KL-to-N(0, I) loss
    reg_steps: int = 5  # gradient steps on ε per timestep (0: plain DDIM inversion)
    ac_rolls: int = 5  # random shifts per pyramid level in the autocorrelation loss
    seed: int = 0  # seeds the VAE posterior sample and the rolls
    schedule: str = "symmetric"  # "symmetric" (exact mirror of sampling) or "reference" (official 48-step walk)
    size: int | None = None  # square side in pixels (None: the model's native size)
    keep_aspect: bool = False  # longer side = size, both sides multiples of the VAE factor
    posterior: str = "sample"  # VAE posterior: a seeded "sample" or its "mode"

    def __post_init__(self):
        if self.steps < 1:
            raise EditorError("steps must be at least 1")
        if self.schedule not in SCHEDULES:
            raise EditorError(f"schedule must be one of {', '.join(SCHEDULES)} (got {self.schedule!r})")
        if self.posterior not in POSTERIORS:
            raise EditorError("posterior must be 'sample' or 'mode'")
        if min(self.lambda_ac, self.lambda_kl) < 0 or min(self.reg_steps, self.ac_rolls) < 0:
            raise EditorError("regularization weights and step counts must be ≥ 0")

    def params(self) -> dict:
        """The parameters recorded with an inversion (provenance) — everything but steps and schedule."""
        d = asdict(self)
        d.pop("steps")
        d.pop("schedule")
        return d


@dataclass(frozen=True)
class EditConfig:
    """One edit pass (PAPER §3.3; docs/algorithm.md §6)."""

    scale: float = 1.0  # multiplier of Δ
    xa_guidance: float | None = None  # guidance step size (None: 0.1 real, 0.15 synthetic, 0.01 v-prediction)
    guidance_scale: float = 5.0  # classifier-free guidance scale; must be > 1 to apply a direction
    steps: int | None = None  # None: the inversion's steps
    xa_layers: str = "all"  # guided attn2 layers: all | high (highest resolution) | low (the rest); algorithm §12
    # where Δ goes (algorithm §13): all = Δ [77, D] at every position (the paper); word = Δ_token at the caption's
    # source-word tokens only; word+pad = that plus Δ's padding rows; auto = by the source word's kind
    # (AUTO above, chosen by the shapes ablation)
    delta_at: str = "auto"

    def __post_init__(self):
        if self.delta_at not in DELTA_AT:
            raise EditorError(f"delta_at must be one of {', '.join(DELTA_AT)} (got {self.delta_at!r})")
        if self.xa_layers not in XA_LAYERS:
            raise EditorError(f"xa_layers must be one of {', '.join(XA_LAYERS)} (got {self.xa_layers!r})")
        if self.guidance_scale <= 1.0:
            raise EditorError(f"guidance_scale must be > 1 to apply a direction (got {self.guidance_scale:g}); with "
                              "CFG off the direction would be silently ignored (the reference's failure mode)")
        if self.xa_guidance is not None and self.xa_guidance < 0:
            raise EditorError("xa_guidance must be ≥ 0")

    def resolved(self, inv, prediction_type: str = "epsilon") -> "EditConfig":
        """Defaults filled in from the inversion and the model: the inversion's steps, and the guidance step
        size — 0.1 for real images, 0.15 for synthetic ones (the official scripts), 0.01 for v-prediction models
        (SD 2.x), where larger steps make the guidance loss explode (diffusers PR #2619).

        An inverted image's x_T belongs to the step count it was inverted with: other steps are refused."""
        if self.steps and self.steps != inv.steps and not inv.synthetic:
            raise EditorError(f"this inversion was made with {inv.steps} steps; edit with steps={inv.steps} (or "
                              f"invert again with steps={self.steps}): x_T depends on the step count")
        return replace(self, xa_guidance=self.xa_guidance if self.xa_guidance is not None
                       else default_xa_guidance(inv.synthetic, prediction_type), steps=self.steps or inv.steps)


def default_xa_guidance(synthetic: bool, prediction_type: str = "epsilon") -> float:
    if prediction_type == "v_prediction":
        return 0.01
    return 0.15 if synthetic else 0.1


def with_overrides(config, cls, overrides: dict):
    """``config`` (or the defaults of ``cls``) with keyword overrides; unknown names are a clear error."""
    names = {f.name for f in fields(cls)}
    unknown = sorted(set(overrides) - names)
    if unknown:
        raise TypeError(f"unknown {cls.__name__} field(s): {', '.join(unknown)}")
    base = config if config is not None else cls()
    return replace(base, **overrides) if overrides else base
