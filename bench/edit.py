"""Editor benchmark (issue #5 item 5): p2pz vs diffusers' StableDiffusionPix2PixZeroPipeline on the same
components and inputs — wall time and peak memory per stage (inversion, reference pass, edit pass) and the
final latents' max difference; plus reuse: a second direction on a cached image vs the first edit, and three
directions in one call vs three fresh edits.

Quick mode: the tiny random model at 64 px, 10 steps. ``--full``: SD-1.5-sized random components built in place
(UNet with cross_attention_dim 768 and attention_head_dim 8, the SD VAE, a CLIP-L text encoder) at 256 px,
3 steps. Each implementation runs in its own process so that peak-memory figures do not mix.

    python bench/edit.py [--full] [--size 256] [--steps 3] [--device cpu] [--dtype float32]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import REPO, PeakRSS, emit

import torch


def components(full: bool, seed: int = 0):
    """Deterministic random components (the same in every process)."""
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    from p2pz.editor.tiny import write_clip_tokenizer

    tok_dir = Path(tempfile.gettempdir()) / f"p2pz-bench-tokenizer-{os.getuid()}"
    if not (tok_dir / "vocab.json").is_file():
        write_clip_tokenizer(tok_dir)
    tokenizer = CLIPTokenizer.from_pretrained(tok_dir)
    torch.manual_seed(seed)
    if full:
        unet = UNet2DConditionModel(cross_attention_dim=768, attention_head_dim=8, sample_size=64)  # SD-1.5 layout
        vae = AutoencoderKL(block_out_channels=[128, 256, 512, 512], latent_channels=4, sample_size=512,
                            down_block_types=["DownEncoderBlock2D"] * 4, up_block_types=["UpDecoderBlock2D"] * 4,
                            layers_per_block=2)
        text = CLIPTextModel(CLIPTextConfig(vocab_size=49408, hidden_size=768, intermediate_size=3072,
                                            num_attention_heads=12, num_hidden_layers=12, max_position_embeddings=77,
                                            bos_token_id=49406, eos_token_id=49407, pad_token_id=49407))
    else:
        unet = UNet2DConditionModel(block_out_channels=(32, 64), layers_per_block=2, sample_size=32, in_channels=4,
                                    out_channels=4, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                                    up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=32)
        vae = AutoencoderKL(block_out_channels=[32, 64], in_channels=3, out_channels=3, latent_channels=4,
                            down_block_types=["DownEncoderBlock2D"] * 2, up_block_types=["UpDecoderBlock2D"] * 2)
        text = CLIPTextModel(CLIPTextConfig(vocab_size=49408, hidden_size=32, intermediate_size=37,
                                            num_attention_heads=4, num_hidden_layers=5, max_position_embeddings=77,
                                            bos_token_id=49406, eos_token_id=49407, pad_token_id=49407))
    scheduler = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                              set_alpha_to_one=False, steps_offset=1)
    return unet.eval(), vae.eval(), text.eval(), tokenizer, scheduler


def inputs(args, hidden: int, vae_factor: int):
    g = torch.Generator().manual_seed(1)
    lat = args.size // vae_factor
    z0 = torch.randn(1, 4, lat, lat, generator=g) * 0.8
    deltas = [torch.randn(1, 77, hidden, generator=g) * 0.3 for _ in range(3)]
    return z0, deltas


class Phases:
    """Peak RSS above the start level and wall time, per named phase."""

    def __init__(self):
        self.times, self.peaks = {}, {}

    def run(self, name, fn):
        with PeakRSS() as p:
            t = time.perf_counter()
            out = fn()
            self.times[name] = time.perf_counter() - t
        self.peaks[name] = p.peak
        return out


def _folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def worker_p2pz(args, out: Path):
    from p2pz.editor import EditConfig, Editor, Inversion

    unet, vae, text, tok, sched = components(args.full)
    ed = Editor(unet, vae, text, tok, sched, device=args.device, dtype=args.dtype, cache_dir=None,
                text_encoder_fingerprint="bench", model_fingerprint="bench-model")
    z0, deltas = inputs(args, ed.hidden_size, ed.vae_factor)
    caption = "a photo of a cat sitting on a bench"
    cfg = EditConfig(steps=args.steps, xa_guidance=0.1, guidance_scale=5.0)
    ph = Phases()
    x_t = ph.run("inversion", lambda: ed.invert_latents(z0, [caption], steps=args.steps))
    inv = Inversion(latents=x_t, caption=caption, steps=args.steps)
    # the two passes one after the other (every timestep's maps held), as diffusers runs them …
    maps, recon = ph.run("reference", lambda: ed.reference(inv, 5.0, force=True))
    edited = ph.run("edit", lambda: ed.edit_latents(x_t, [caption], [caption], deltas[0], maps, cfg))
    maps = None  # (the lockstep run is measured in a process of its own: worker_p2pz_lockstep)
    torch.save({"x_t": x_t, "edited": edited}, out / "p2pz.pt")
    # bytes of the float16 map cache (--cache-maps) per timestep at this size
    ed.cache_dir, ed.cache_maps = out / "mapcache", True
    ed.edit(inv, deltas[0], cfg, decode=False, force=True)
    maps_bytes = _folder_bytes(out / "mapcache" / "maps")
    inv_bytes = x_t.numel() * 4
    ed.cache_dir, ed.cache_maps = None, False
    result = {"times": ph.times, "peaks": ph.peaks, "map_cache_bytes_per_step": maps_bytes / args.steps,
              "inversion_cache_bytes": inv_bytes}
    if args.stages_only:
        return result

    # reuse: first edit (nothing cached) vs a second direction on the same image (inversion and maps cached)
    ed.cache_dir, ed.cache_maps = out / "cache2", True
    t = time.perf_counter()
    inv1 = Inversion(latents=ed.invert_latents(z0, [caption], steps=args.steps), caption=caption, steps=args.steps)
    ed.cache.save("inversions", "img", {"x_T": inv1.latents})
    ed.edit(inv1, deltas[0], decode=False)
    first = time.perf_counter() - t
    t = time.perf_counter()
    inv2 = Inversion(latents=ed.cache.load("inversions", "img")["x_T"], caption=caption, steps=args.steps)
    ed.edit(inv2, deltas[1], decode=False)
    second = time.perf_counter() - t

    # three directions in one call vs three fresh edits (each with its own inversion and reference pass)
    ed.cache_dir, ed.cache_maps = None, False
    t = time.perf_counter()
    inv3 = Inversion(latents=ed.invert_latents(z0, [caption], steps=args.steps), caption=caption, steps=args.steps)
    ed.edit(inv3, deltas, decode=False)
    one_call = time.perf_counter() - t
    t = time.perf_counter()
    for d in deltas:
        inv_i = Inversion(latents=ed.invert_latents(z0, [caption], steps=args.steps), caption=caption, steps=args.steps)
        ed.edit(inv_i, d, decode=False)
    fresh3 = time.perf_counter() - t
    return {**result, "first_edit_s": first, "second_direction_cached_s": second,
            "three_in_one_call_s": one_call, "three_fresh_s": fresh3}


def worker_p2pz_lockstep(args, out: Path):
    """The reference and edit passes in lockstep, as ``Editor.edit`` runs them, measured in a fresh process after
    the same inversion (as diffusers' pipeline is): one timestep of maps held; the same latents as two passes."""
    from p2pz.editor import EditConfig, Editor, Inversion

    unet, vae, text, tok, sched = components(args.full)
    ed = Editor(unet, vae, text, tok, sched, device=args.device, dtype=args.dtype, cache_dir=None,
                text_encoder_fingerprint="bench", model_fingerprint="bench-model")
    z0, deltas = inputs(args, ed.hidden_size, ed.vae_factor)
    caption = "a photo of a cat sitting on a bench"
    ph = Phases()
    x_t = ph.run("inversion", lambda: ed.invert_latents(z0, [caption], steps=args.steps))
    inv = Inversion(latents=x_t, caption=caption, steps=args.steps)
    cfg = EditConfig(steps=args.steps, xa_guidance=0.1, guidance_scale=5.0)
    lock = ph.run("lockstep", lambda: ed.edit(inv, deltas[0], cfg, decode=False, force=True))
    two_pass = torch.load(out / "p2pz.pt", weights_only=True)["edited"]
    assert torch.equal(lock.latents, two_pass), "lockstep and two-pass edits differ"
    return {"times": ph.times, "peaks": ph.peaks, "bit_identical_to_two_pass": True}


def worker_diffusers(args, out: Path, frozen: bool = False):
    """diffusers' pipeline as shipped, or (``frozen``) with every UNet weight frozen after its own set-up, so the
    comparison is not only about the weight gradients the shipped pipeline computes."""
    import warnings

    from diffusers import DDIMInverseScheduler, StableDiffusionPix2PixZeroPipeline

    warnings.simplefilter("ignore")
    if frozen:
        import importlib

        module = importlib.import_module(StableDiffusionPix2PixZeroPipeline.__module__)
        shipped = module.prepare_unet

        def prepare_frozen(unet):
            return shipped(unet).requires_grad_(False)

        module.prepare_unet = prepare_frozen
    unet, vae, text, tok, sched = components(args.full)
    pipe = StableDiffusionPix2PixZeroPipeline(
        vae=vae, text_encoder=text, tokenizer=tok, unet=unet, scheduler=sched, feature_extractor=None,
        safety_checker=None, inverse_scheduler=DDIMInverseScheduler.from_config(sched.config), caption_generator=None,
        caption_processor=None, requires_safety_checker=False).to(args.device)
    pipe.set_progress_bar_config(disable=True)
    vae_factor = 2 ** (len(vae.config.block_out_channels) - 1)
    z0, deltas = inputs(args, text.config.hidden_size, vae_factor)
    x_t = torch.load(out / "p2pz.pt", weights_only=True)["x_t"]
    caption = "a photo of a cat sitting on a bench"
    ph = Phases()
    ph.run("inversion", lambda: pipe.invert(caption, image=z0, num_inference_steps=args.steps, output_type="latent"))
    # The pipeline runs the reference and the edit pass in one call; the reference loop's callback marks the end
    # of the reference pass, splitting wall time and peak memory between the two.
    marks = {}
    last = args.steps - 1

    def callback(step, t, latents):
        if step == last:
            marks["reference_end"] = time.perf_counter()

    with PeakRSS() as total_peak:
        t0 = time.perf_counter()
        edited = pipe(prompt=caption, source_embeds=torch.zeros_like(deltas[0]), target_embeds=deltas[0],
                      num_inference_steps=args.steps, guidance_scale=5.0, negative_prompt=caption, latents=x_t.clone(),
                      cross_attention_guidance_amount=0.1, output_type="latent", callback=callback).images
        t1 = time.perf_counter()
    ph.times["reference"] = marks["reference_end"] - t0
    ph.times["edit"] = t1 - marks["reference_end"]
    ph.peaks["reference+edit"] = total_peak.peak
    torch.save({"edited": torch.as_tensor(edited)}, out / ("diffusers_frozen.pt" if frozen else "diffusers.pt"))
    return {"times": ph.times, "peaks": ph.peaks}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--full", action="store_true")
    ap.add_argument("--size", type=int, default=None)
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--stages-only", action="store_true", help="Skip the reuse measurements (cache, 3 directions).")
    ap.add_argument("--worker", choices=["p2pz", "p2pz_lockstep", "diffusers", "diffusers_frozen"])
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    args.size = args.size or (256 if args.full else 64)
    args.steps = args.steps or (3 if args.full else 10)
    if args.worker:
        fns = {"p2pz": worker_p2pz, "p2pz_lockstep": worker_p2pz_lockstep, "diffusers": worker_diffusers,
               "diffusers_frozen": lambda a, o: worker_diffusers(a, o, frozen=True)}
        with torch.no_grad():
            res = fns[args.worker](args, args.out)
        (args.out / f"{args.worker}.json").write_text(json.dumps(res))
        return
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        base = [sys.executable, str(Path(__file__).resolve()), "--size", str(args.size), "--steps", str(args.steps),
                "--device", args.device, "--dtype", args.dtype, "--out", str(out)] + (["--full"] if args.full else []) \
            + (["--stages-only"] if args.stages_only else [])
        env = {**os.environ, "PYTHONPATH": str(REPO), "P2PZ_HOME": str(out / "home")}
        for impl in ("p2pz", "p2pz_lockstep", "diffusers", "diffusers_frozen"):
            subprocess.run(base + ["--worker", impl], check=True, env=env)
        ours = json.loads((out / "p2pz.json").read_text())
        lockstep = json.loads((out / "p2pz_lockstep.json").read_text())
        theirs = json.loads((out / "diffusers.json").read_text())
        frozen = json.loads((out / "diffusers_frozen.json").read_text())
        frozen_diff = float((torch.load(out / "diffusers_frozen.pt", weights_only=True)["edited"]
                             - torch.load(out / "diffusers.pt", weights_only=True)["edited"]).abs().max())
        a = torch.load(out / "p2pz.pt", weights_only=True)["edited"]
        b = torch.load(out / "diffusers.pt", weights_only=True)["edited"]
        diff = float((a - b).abs().max())
        scale = float(a.abs().max())
    two_pass_peak = ours["peaks"]["reference"] + ours["peaks"]["edit"]  # maps stay alive into the edit pass
    lockstep_peak = lockstep["peaks"]["lockstep"]
    theirs_ref_edit_peak = theirs["peaks"]["reference+edit"]
    steps_sd = 50
    hw_scale = (512 / args.size) ** 2  # maps grow with the latent area
    emit("edit", {
        "params": {"mode": "full (SD-1.5-sized random)" if args.full else "quick (tiny random)", "size": args.size,
                   "steps": args.steps, "device": args.device, "dtype": args.dtype, "cfg": 5.0, "xa_guidance": 0.1},
        "p2pz": ours, "p2pz_lockstep": lockstep, "diffusers": theirs, "diffusers_frozen_unet": frozen,
        "edit_pass_speedup": theirs["times"]["edit"] / ours["times"]["edit"],
        "edit_pass_speedup_vs_frozen_unet": frozen["times"]["edit"] / ours["times"]["edit"],
        "frozen_unet_same_latents_max_abs_diff": frozen_diff,
        "reference_pass_speedup": theirs["times"]["reference"] / ours["times"]["reference"],
        "inversion_speedup": theirs["times"]["inversion"] / ours["times"]["inversion"],
        "peak_memory_ratio_reference_plus_edit": lockstep_peak / max(theirs_ref_edit_peak, 1),
        "peak_memory_two_pass_bytes": two_pass_peak, "peak_memory_lockstep_bytes": lockstep_peak,
        "peak_memory_lockstep_vs_two_pass": lockstep_peak / max(two_pass_peak, 1),
        "peak_memory_ratio_vs_frozen_unet": lockstep_peak / max(frozen["peaks"]["reference+edit"], 1),
        **({"map_cache_bytes_per_image_sd_512px_50_steps": ours["map_cache_bytes_per_step"] * steps_sd * hw_scale,
            "inversion_cache_bytes_sd_512px": ours["inversion_cache_bytes"] * hw_scale} if args.full else {}),
        "final_latents_max_abs_diff": diff, "final_latents_max_abs": scale,
        **({} if args.stages_only else {
            "second_direction_ratio": ours["second_direction_cached_s"] / ours["first_edit_s"],
            "three_in_one_call_ratio": ours["three_in_one_call_s"] / ours["three_fresh_s"]}),
        "targets": {"edit_pass_speedup": ">= 2.5 (SD size)", "peak_memory_ratio_reference_plus_edit": "<= 0.5 (SD size)",
                    "second_direction_ratio": "<= 0.75", "three_in_one_call_ratio": "<= 0.8"},
    })


if __name__ == "__main__":
    main()
