"""SDXL (issue #22, algorithm §12): the pair of text encoders in the registry, the editor on SDXL's added conditioning,
and diffusers' ``StableDiffusionXLPipeline`` / ``DDIMInverseScheduler`` / attention processor as oracles, on a tiny
SDXL-layout snapshot built with the real classes (as diffusers' own SDXL fast tests do)."""

import copy
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from p2pz.editor import Editor, EditorError, Inversion
from p2pz.editor.attention import cross_attention_layers, loss_scale, select_layers
from p2pz.registry import Registry, RegistryError
from tests.numerics import assert_close_relative

STEPS = 5
CAPTION = "a photo of a cat"


@pytest.fixture(scope="module")
def xl(tiny_sdxl):
    return Editor.from_pretrained(str(tiny_sdxl), captioner=None, device="cpu", cache=False)


@pytest.fixture(scope="module")
def pipe(tiny_sdxl):
    """diffusers' own SDXL pipeline on the same snapshot (its own copies of every component), with DDIM."""
    from diffusers import DDIMScheduler, StableDiffusionXLPipeline

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        p = StableDiffusionXLPipeline.from_pretrained(str(tiny_sdxl))
    p.scheduler = DDIMScheduler.from_pretrained(str(tiny_sdxl), subfolder="scheduler")
    p.set_progress_bar_config(disable=True)
    return p


@pytest.fixture(scope="module")
def x_T(xl):
    z0 = torch.randn(1, 4, 32, 32, generator=torch.Generator().manual_seed(3))
    return xl.invert_latents(z0, [CAPTION], steps=STEPS, lambda_ac=0, lambda_kl=0)


def deltas(seed=1, scale=0.3):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(1, 77, 80, generator=g) * scale, torch.randn(1, 40, generator=g) * scale


def test_the_family_is_read_from_the_snapshot(xl, tiny_model):
    assert (xl.family, xl.hidden_size, xl.pooled_size, xl.native_size) == ("sdxl", 80, 40, 64)
    sd = Editor.from_pretrained(str(tiny_model), captioner=None, device="cpu", cache=False)
    assert (sd.family, sd.pooled_size) == ("sd", None)


def test_concept_embeddings_equal_encode_prompt(tiny_sdxl, pipe):
    """The registry's bank mean and key are the mean over sentences of encode_prompt's prompt and pooled embeds."""
    from p2pz.editor.loader import load_text_encoder
    from p2pz.registry.library.encoding import encode_bank

    sentences = ["a photo of a cat", "a cat on a sofa", "a very long caption " * 20 + "of a cat", "a dog"]
    enc = load_text_encoder(str(tiny_sdxl))
    bank = encode_bank(enc, sentences, batch_size=3)  # two batches: the sums cross a batch boundary
    with torch.no_grad():
        embeds, _, pooled, _ = pipe.encode_prompt(sentences, device="cpu", do_classifier_free_guidance=False)
    assert bank.mean.shape == (1, 77, 80) and bank.key.shape == (40,) and bank.key_kind == "pooled"
    assert_close_relative(bank.mean, embeds.double().mean(0, keepdim=True), 1e-6)
    assert_close_relative(bank.key, pooled.double().mean(0), 1e-6)


def test_unregularized_inversion_equals_ddim_inverse_scheduler(xl, pipe):
    """An independent loop over diffusers' DDIMInverseScheduler with the SDXL UNet and the same added conditioning."""
    from diffusers import DDIMInverseScheduler

    z0 = torch.randn(1, 4, 32, 32, generator=torch.Generator().manual_seed(4))
    ours = xl.invert_latents(z0, [CAPTION], steps=STEPS, lambda_ac=0, lambda_kl=0)
    inverse = DDIMInverseScheduler.from_config(pipe.scheduler.config)
    inverse.set_timesteps(STEPS)
    with torch.no_grad():
        embeds, _, pooled, _ = pipe.encode_prompt(CAPTION, device="cpu", do_classifier_free_guidance=False)
        added = {"text_embeds": pooled, "time_ids": torch.tensor([[64.0, 64, 0, 0, 64, 64]])}
        x = z0.clone()
        for t in inverse.timesteps:
            eps = pipe.unet(x, t, encoder_hidden_states=embeds, added_cond_kwargs=added).sample
            x = inverse.step(eps, t, x).prev_sample
    assert_close_relative(ours, x, 1e-5)
    assert (ours - z0).abs().max() > 0.1  # the loop moved the latent


def test_an_edit_without_guidance_equals_the_sdxl_pipeline(xl, pipe, x_T):
    """xa 0: p2pz's edit is StableDiffusionXLPipeline with prompt c + Δ, pooled p + Δ_pooled, the caption as the
    negative, x_T as its latents and DDIM."""
    d, dp = deltas()
    ours = xl.edit(Inversion(latents=x_T, caption=CAPTION, steps=STEPS), (d, dp), xa_guidance=0.0,
                   guidance_scale=5.0, decode=False).latents
    with torch.no_grad():
        c, _, p, _ = pipe.encode_prompt(CAPTION, device="cpu", do_classifier_free_guidance=False)
        theirs = pipe(prompt_embeds=c + d, pooled_prompt_embeds=p + dp, negative_prompt_embeds=c,
                      negative_pooled_prompt_embeds=p, latents=x_T.clone(), num_inference_steps=STEPS,
                      guidance_scale=5.0, height=64, width=64, output_type="latent").images
    # two implementations (p2pz's lockstep loop with SDPA, the pipeline with its own attention and CFG order) over
    # several UNet steps: float32 rounding differs and accumulates, and by how much depends on the CPU's kernels
    # (1.25e-5 on an AMD EPYC, under 1e-5 on the machine this was written on) — 1e-4 of the latents' magnitude
    assert_close_relative(ours, theirs, 1e-4)
    no_pooled = xl.edit(Inversion(latents=x_T, caption=CAPTION, steps=STEPS), (d, dp * 0), xa_guidance=0.0,
                        decode=False).latents
    assert (no_pooled - ours).abs().max() > 1e-3  # Δ_pooled really conditions the UNet


def _recording_scores(unet, store: dict, layers: list[str]):
    """diffusers' own AttnProcessor on every layer; ``get_attention_scores`` of each guided attn2 wrapped to keep its
    probability map [B·heads, HW, T] (with its graph) in ``store`` — the maps recorded by hand."""
    from diffusers.models.attention_processor import AttnProcessor

    unet.set_attn_processor(AttnProcessor())
    modules = dict(unet.named_modules())
    for name in layers:
        module = modules[name.removesuffix(".processor")]
        original = type(module).get_attention_scores.__get__(module)

        def scores(q, k, mask=None, _name=name, _orig=original):
            probs = _orig(q, k, mask)
            store[_name] = probs
            return probs
        module.get_attention_scores = scores


@pytest.mark.parametrize("xa_layers", ["all", "high"])
def test_the_guidance_gradient_equals_autograd_through_diffusers_attention(xl, pipe, x_T, xa_layers):
    """The first guided step's gradient ∂L_xa/∂x on the doubled latent, with L_xa = (N_ref/|S|) Σ_{l∈S} mean over
    the 2·heads slices of Σ_{HW,T} (M − M_ref)² (N_ref = 16 for SDXL), computed by autograd through diffusers'
    AttnProcessor with the maps recorded by hand."""
    d, dp = deltas()
    inv = Inversion(latents=x_T, caption=CAPTION, steps=STEPS)
    maps, _ = xl.reference(inv, guidance_scale=5.0, xa_layers=xa_layers)
    seen = []
    xl.edit_latents(x_T, [CAPTION], [CAPTION], (d, dp), maps, xl_config(xa_layers),
                    callback=lambda i, t, loss, grad: seen.append((t, loss, grad)))
    t0, our_loss, our_grad = seen[0]

    unet = copy.deepcopy(pipe.unet).requires_grad_(False)  # its own processors: the pipeline's stay untouched
    layers = select_layers(unet, xa_layers)
    recorded: dict = {}
    _recording_scores(unet, recorded, layers)
    with torch.no_grad():
        c, _, p, _ = pipe.encode_prompt(CAPTION, device="cpu", do_classifier_free_guidance=False)
    time_ids = torch.tensor([[64.0, 64, 0, 0, 64, 64]]).repeat(2, 1)
    x_in = torch.cat([x_T, x_T])
    with torch.no_grad():  # the reference maps: negative = prompt = the caption
        unet(x_in, t0, encoder_hidden_states=torch.cat([c, c]),
             added_cond_kwargs={"text_embeds": torch.cat([p, p]), "time_ids": time_ids})
        reference = {k: v.detach().clone() for k, v in recorded.items()}
    x_in = x_in.clone().requires_grad_(True)
    unet(x_in, t0, encoder_hidden_states=torch.cat([c, c + d]),
         added_cond_kwargs={"text_embeds": torch.cat([p, p + dp]), "time_ids": time_ids})
    total = sum(((recorded[k] - reference[k]) ** 2).sum((1, 2)).mean() for k in layers)
    loss = total * (16 / len(layers))
    (grad,) = torch.autograd.grad(loss, x_in)
    assert len(layers) == {"all": 11, "high": 3}[xa_layers]
    # autograd through two attention implementations (ours, diffusers' AttnProcessor): rounding differs by CPU
    # (the gradient's 1.3e-5 on an AMD EPYC) — 1e-4 relative to the gradient's magnitude
    assert_close_relative(our_loss, loss, 1e-5)
    assert_close_relative(our_grad, grad, 1e-4)
    assert grad.abs().max() > 0  # the direction moved the maps


def xl_config(xa_layers="all"):
    from p2pz.editor import EditConfig

    return EditConfig(xa_guidance=0.1, guidance_scale=5.0, steps=STEPS, xa_layers=xa_layers)


def test_the_layer_sets_of_the_real_unets_and_the_normalisation():
    """On the real SDXL and SD 1.4 UNet configs (built on the meta device: no weights): SDXL has 70 attn2 layers,
    10 at the highest resolution (64² at 1024 px) and 60 below; SD 1.4 has 16 (5 at 64²). The loss factor is
    exactly 1 for every SD-family UNet with all its layers (results unchanged) and 16/|S| for SDXL."""
    from diffusers import UNet2DConditionModel

    from p2pz.editor.tiny import SDXL_BASE_UNET as sdxl

    sd14 = dict(sample_size=64, cross_attention_dim=768)
    with torch.device("meta"):
        xl_unet, sd_unet = UNet2DConditionModel(**sdxl), UNet2DConditionModel(**sd14)
    assert [len(select_layers(xl_unet, c)) for c in ("all", "high", "low")] == [70, 10, 60]
    assert [len(select_layers(sd_unet, c)) for c in ("all", "high", "low")] == [16, 5, 11]
    assert all(".attn2." in n for n in select_layers(xl_unet, "high"))
    assert {n.split(".")[0] + n.split(".")[1] for n in select_layers(xl_unet, "high")} == {"down_blocks1", "up_blocks1"}
    assert loss_scale(sd_unet, cross_attention_layers(sd_unet)) == 1.0
    assert loss_scale(sd_unet, select_layers(sd_unet, "high")) == 16 / 5
    assert loss_scale(xl_unet, select_layers(xl_unet, "all"), "sdxl") == 16 / 70
    assert loss_scale(xl_unet, select_layers(xl_unet, "high"), "sdxl") == 16 / 10
    with pytest.raises(ValueError, match="all, high, low"):
        select_layers(sd_unet, "middle")


def test_edits_on_real_images_run_end_to_end_with_every_layer_set(xl):
    img = Image.fromarray((np.random.RandomState(1).rand(80, 100, 3) * 255).astype(np.uint8))
    inv = xl.invert(img, CAPTION, steps=3, keep_aspect=True, size=64)
    assert tuple(inv.latents.shape) == (1, 4, 26, 32)  # 64 × 52 px: sides rounded to the VAE factor, as for SD
    outs = {c: xl.edit(inv, deltas(), steps=3, xa_layers=c) for c in ("all", "high", "low")}
    assert outs["all"].edited.size == (64, 52)
    assert outs["high"].params["xa_layers"] == "high" and "xa_layers" not in outs["all"].params
    assert (outs["all"].latents - outs["high"].latents).abs().max() > 1e-4
    assert all(torch.isfinite(o.latents).all() for o in outs.values())


def test_directions_of_the_other_family_are_refused(xl, tiny_model):
    sd = Editor.from_pretrained(str(tiny_model), captioner=None, device="cpu", cache=False)
    inv = Inversion(latents=torch.zeros(1, 4, 32, 32), caption=CAPTION, steps=2)
    with pytest.raises(EditorError, match=r"no Δ_pooled"):
        xl.edit(inv, torch.zeros(1, 77, 80), steps=2)
    with pytest.raises(EditorError, match=r"\[1, 77, 80\]"):
        xl.edit(inv, (torch.zeros(1, 77, 32), torch.zeros(1, 40)), steps=2)
    with pytest.raises(EditorError, match=r"\[1, 40\]"):
        xl.edit(inv, (torch.zeros(1, 77, 80), torch.zeros(1, 12)), steps=2)
    with pytest.raises(EditorError, match="no pooled conditioning"):
        sd.edit(inv, (torch.zeros(1, 77, 32), torch.zeros(1, 40)), steps=2)
    with pytest.raises(EditorError, match="xa_layers must be one of"):
        xl.edit(inv, deltas(), steps=2, xa_layers="middle")


# --- the registry: one bank, many models; names across families ---------------------------------------------

@pytest.fixture
def both(reg, tiny_model, tiny_sdxl):
    """An SD and an SDXL direction of the same two banks (the SDXL one built from the SD one's bank refs)."""
    sd = reg.build_direction("cat", "dog", str(tiny_model), n=12)
    xl = reg.build_direction("cat", "dog", str(tiny_sdxl), n=12)
    return reg, sd, xl


def test_one_bank_serves_both_families(both, tiny_sdxl):
    reg, sd, xl = both
    assert (xl.source, xl.target) == (sd.source, sd.target) == ("cat@1", "dog@1")
    assert [b.ref for b in reg.banks()] == ["cat@1", "dog@1"]  # no second bank was drafted
    assert (sd.family, xl.family) == ("sd", "sdxl") and sd.pooled is None
    assert tuple(xl.vector.shape) == (1, 77, 80) and tuple(xl.pooled.shape) == (1, 40)
    # Δ and Δ_pooled are materialized from the shared banks' embeddings under the pair of encoders
    cat, dog = reg.embedding("cat@1", str(tiny_sdxl)), reg.embedding("dog@1", str(tiny_sdxl))
    assert torch.equal(xl.vector, torch.as_tensor(dog - cat))  # exact: one float32 difference of the same stored means
    assert [s.ref for s in reg.siblings(sd)] == [xl.ref] and [s.ref for s in reg.siblings(xl)] == [sd.ref]
    encoders = {e["fingerprint"]: e for e in reg.encoders()}
    assert encoders[xl.encoder]["family"] == "sdxl" and len(encoders[xl.encoder]["parts"]) == 2


def test_an_sdxl_build_does_not_shadow_the_sd_name(both, tiny_model, tiny_sdxl):
    reg, sd, xl = both
    assert sd.ref == "cat-to-dog@1" and xl.ref == "cat-to-dog-sdxl@1"  # the default name carries the family
    mixed = reg.build_direction("cat@1", "dog@1", str(tiny_sdxl), name="cat-to-dog", scale=2.0)  # the user's choice
    assert mixed.ref == "cat-to-dog@2"
    with pytest.raises(RegistryError, match=r"exists for 2 text encoders .*\[sdxl\]: @2.*\[sd\]: @1.*name a version"):
        reg.get("cat-to-dog")
    assert reg.get("cat-to-dog", str(tiny_model)).ref == "cat-to-dog@1"
    assert reg.get("cat-to-dog", str(tiny_sdxl)).ref == "cat-to-dog@2"
    assert reg.get("cat-to-dog@1").family == "sd"  # an explicit version is never ambiguous
    with pytest.raises(RegistryError, match="no version for model"):
        reg.get("cat-to-dog", "some/other-model")


def test_directions_of_two_encoders_are_never_mixed(both):
    reg, sd, xl = both
    with pytest.raises(RegistryError, match="different text encoders"):
        reg.combine({sd.ref: 1.0, xl.ref: 1.0}, name="mixed")
    half = reg.combine({xl.ref: 0.5}, name="half-xl")
    assert torch.allclose(half.pooled, 0.5 * xl.pooled) and torch.allclose(half.vector, 0.5 * xl.vector)
    hits = reg.search(xl.ref, k=5)
    assert {h.direction.family for h in hits} == {"sdxl"}  # search stays within the encoder


def test_a_library_mixing_families_round_trips(both, tmp_path, db_url):
    reg, sd, xl = both
    path = tmp_path / "mixed.p2pz"
    reg.export([sd.ref, xl.ref], path)
    other = Registry.open(f"sqlite:///{tmp_path / 'other.db'}")
    other.import_(path)
    back = other.get(xl.ref)
    assert back.family == "sdxl" and torch.equal(back.pooled, xl.pooled) and torch.equal(back.vector, xl.vector)
    assert other.get(sd.ref).family == "sd"
    other.close()


# --- directions in any diffusers pipeline -------------------------------------------------------------------

def test_direction_kwargs_are_the_editors_embeddings_and_generate(both, pipe, xl):
    from p2pz.registry import direction_kwargs

    reg, sd, d = both
    kw = direction_kwargs(pipe, CAPTION, d, scale=0.5)
    assert set(kw) == {"prompt_embeds", "negative_prompt_embeds", "pooled_prompt_embeds",
                       "negative_pooled_prompt_embeds"}
    cond = xl.condition([CAPTION], (1, 4, 32, 32))
    # diffusers' encode_prompt and the editor's conditioning are two forward passes of the encoders, batched their
    # own ways: equal up to float32 rounding relative to the embeddings' magnitude, which differs by CPU (issue #35:
    # 2.4e-7 at magnitude 2.6 on an AVX-512 EPYC; tests/numerics.py)
    assert_close_relative(kw["negative_prompt_embeds"], cond.hidden, 1e-6)
    assert_close_relative(kw["negative_pooled_prompt_embeds"], cond.pooled, 1e-6)
    assert_close_relative(kw["prompt_embeds"], cond.hidden + 0.5 * d.vector, 1e-6)
    assert_close_relative(kw["pooled_prompt_embeds"], cond.pooled + 0.5 * d.pooled, 1e-6)
    other = direction_kwargs(pipe, CAPTION, d, negative_prompt="blurry")
    assert (other["negative_prompt_embeds"] - cond.hidden).abs().max() > 1e-2 * cond.hidden.abs().max()
    with torch.no_grad():
        out = pipe(**kw, num_inference_steps=2, height=64, width=64, output_type="latent").images
    assert tuple(out.shape) == (1, 4, 32, 32) and torch.isfinite(out).all()
    with pytest.raises(RegistryError, match="built with text encoder"):
        direction_kwargs(pipe, CAPTION, sd)  # an SD direction on an SDXL pipeline


def test_direction_kwargs_on_a_plain_sd_pipeline(both, tiny_model):
    from diffusers import StableDiffusionPipeline

    from p2pz.registry import direction_kwargs

    reg, sd, xl_dir = both
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sd_pipe = StableDiffusionPipeline.from_pretrained(str(tiny_model), safety_checker=None,
                                                          requires_safety_checker=False)
    ed = Editor.from_pipe(sd_pipe)
    kw = direction_kwargs(sd_pipe, CAPTION, sd, scale=2.0)
    assert set(kw) == {"prompt_embeds", "negative_prompt_embeds"}
    c = ed.encode_text([CAPTION])
    # two forward passes of the text encoder (diffusers' and the editor's): up to rounding (tests/numerics.py)
    assert_close_relative(kw["negative_prompt_embeds"], c, 1e-6)
    assert_close_relative(kw["prompt_embeds"], c + 2.0 * sd.vector, 1e-6)
    with pytest.raises(RegistryError, match="built with text encoder"):
        direction_kwargs(sd_pipe, CAPTION, xl_dir)
