"""SDXL editor benchmark (issue #22): the guided step's cost, peak memory and attention-map bytes on SDXL-sized
random weights, side by side with LEDITS++ (diffusers' ``LEditsPPPipelineStableDiffusionXL``) on the same weights.

``--full``: the published SDXL base UNet layout (:data:`editor.tiny.SDXL_BASE_UNET`: 2.6 B parameters, transformer
depths 1/2/10, 2048-wide context), SDXL's VAE (scaling 0.13025, ``force_upcast``) and two text encoders of SDXL's
widths (768 and 1280, projection 1280) with two layers each — the text encoders run once per prompt, never per
step, so their depth does not enter any per-step figure. Written once as a diffusers snapshot and loaded by each
measurement through ``Editor.from_pretrained`` (the real loading path), each in a process of its own so that
peak-memory figures do not mix. Quick mode: the tiny SDXL snapshot (``p2pz dev tiny-model --family sdxl``).

Rows (all at ``--size`` px and ``--steps`` steps, CFG 5, xa-guidance 0.1, float32 on this CPU):
- a plain SDXL denoising step: one UNet forward on the CFG pair [caption, caption + Δ] with SDXL's added
  conditioning — the unit the guided step is counted in;
- the guided step (edit pass alone, against recorded reference maps): forward with a graph, the input-only
  backward of the cross-attention loss, the CFG forward. It and its unit are timed in one process, interleaved,
  after one warm-up of each (fastest of ``--rounds``); the warm-up edit step is reported too (``*_cold``): the
  first step of an edit pays the one-off allocation of the graph's memory, the other steps do not;
- peak memory of reference + edit in lockstep (``Editor.edit``), of the two passes one after the other
  (``reference`` then ``edit_latents``: every step's maps held) and of the plain step;
- the reference maps' bytes per step and layer, measured, and at 1024 px for each ``--xa-layers`` set (maps grow
  with the latent area: × (1024 / size)²);
- LEDITS++ on the same UNet, VAE and text encoders: its inversion and its edit, per step.

    python bench/edit_sdxl.py [--full] [--size 512] [--steps 1]
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

CAPTION = "a photo of a cat sitting on a bench"


def write_sdxl_sized(folder: Path, seed: int = 0) -> None:
    """An SDXL-sized random snapshot: the real UNet and VAE layouts, text encoders of the real widths."""
    from diffusers import AutoencoderKL, StableDiffusionXLPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    from p2pz.editor.tiny import SDXL_BASE_UNET, build_tiny_model, write_clip_tokenizer

    write_clip_tokenizer(folder / "tokenizer", "trained")
    write_clip_tokenizer(folder / "tokenizer_2", "trained", pad_token="!")
    tok, tok2 = (CLIPTokenizer.from_pretrained(folder / sub) for sub in ("tokenizer", "tokenizer_2"))
    vocab = tok.get_vocab()

    def text(hidden, heads, cls, pad):
        return cls(CLIPTextConfig(vocab_size=len(vocab), hidden_size=hidden, intermediate_size=4 * hidden,
                                  num_attention_heads=heads, num_hidden_layers=2, max_position_embeddings=77,
                                  projection_dim=1280, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                                  pad_token_id=vocab[pad], hidden_act="quick_gelu" if hidden == 768 else "gelu"))

    torch.manual_seed(seed)
    te, te2 = text(768, 12, CLIPTextModel, tok.pad_token), text(1280, 20, CLIPTextModelWithProjection, "!")
    torch.manual_seed(seed + 1)
    t = time.perf_counter()
    unet = UNet2DConditionModel(**SDXL_BASE_UNET)
    print(f"UNet: {sum(p.numel() for p in unet.parameters()) / 1e9:.2f} B parameters "
          f"({time.perf_counter() - t:.0f} s)", file=sys.stderr)
    torch.manual_seed(seed + 2)
    vae = AutoencoderKL(block_out_channels=[128, 256, 512, 512], latent_channels=4, sample_size=1024,
                        down_block_types=["DownEncoderBlock2D"] * 4, up_block_types=["UpDecoderBlock2D"] * 4,
                        layers_per_block=2, scaling_factor=0.13025, force_upcast=True)
    with tempfile.TemporaryDirectory() as tmp:  # SDXL's scheduler config, as the tiny SDXL snapshot writes it
        build_tiny_model(tmp, family="sdxl", vocab="trained", overwrite=True)
        from diffusers import EulerDiscreteScheduler

        scheduler = EulerDiscreteScheduler.from_pretrained(tmp, subfolder="scheduler")
    pipe = StableDiffusionXLPipeline(vae=vae, text_encoder=te, text_encoder_2=te2, tokenizer=tok, tokenizer_2=tok2,
                                     unet=unet, scheduler=scheduler, add_watermarker=False)
    pipe.save_pretrained(folder)


def load_editor(args):
    from p2pz.editor import Editor

    return Editor.from_pretrained(str(args.model), captioner=None, device="cpu", dtype=args.dtype, cache=False,
                                  safety_checker=False)


def inputs(ed, args):
    g = torch.Generator().manual_seed(1)
    lat = args.size // ed.vae_factor
    x_t = torch.randn(1, 4, lat, lat, generator=g)
    delta = torch.randn(1, 77, ed.hidden_size, generator=g) * 0.3
    pooled = torch.randn(1, ed.pooled_size, generator=g) * 0.3
    return x_t, (delta, pooled)


def worker_plain(args, out: Path) -> dict:
    """One plain SDXL denoising step (no graph): the UNet on the CFG pair with the added conditioning."""
    ed = load_editor(args)
    x_t, (delta, pooled) = inputs(ed, args)
    from p2pz.editor.conditioning import Conditioning

    with torch.no_grad():
        cond = ed.cfg_pair([CAPTION], [CAPTION], x_t.shape)
        cond = Conditioning(hidden=cond.hidden + torch.cat([torch.zeros_like(delta), delta]),
                            pooled=cond.pooled + torch.cat([torch.zeros_like(pooled), pooled]), time_ids=cond.time_ids)
        t_step = int(ed.scheduler.config.num_train_timesteps) - 1
        times = []
        with PeakRSS() as peak:
            for _ in range(2):  # the second run is the figure: the first pays one-off allocations
                t = time.perf_counter()
                ed.unet_out(torch.cat([x_t, x_t]), t_step, cond)
                times.append(time.perf_counter() - t)
    return {"step_s": min(times), "times": times, "peak": peak.peak,
            "unet_parameters": sum(p.numel() for p in ed.unet.parameters())}


def _cfg(args):
    from p2pz.editor import EditConfig

    return EditConfig(steps=args.steps, xa_guidance=0.1, guidance_scale=5.0)


def worker_two_pass(args, out: Path) -> dict:
    """The reference pass, then the edit pass alone (every step's maps held), timed and measured apart; the maps'
    bytes per layer."""
    from p2pz.editor import Inversion

    ed = load_editor(args)
    x_t, deltas = inputs(ed, args)
    inv = Inversion(latents=x_t, caption=CAPTION, steps=args.steps)
    with PeakRSS() as peak:
        t = time.perf_counter()
        maps, _ = ed.reference(inv, 5.0, force=True)
        t_ref = time.perf_counter() - t
        t = time.perf_counter()
        edited = ed.edit_latents(x_t, [CAPTION], [CAPTION], deltas, maps, _cfg(args))
        t_edit = time.perf_counter() - t
    torch.save({"edited": edited}, out / "two_pass.pt")
    first = next(iter(maps.values()))
    per_layer = {name.removesuffix(".processor"): m.numel() * m.element_size() for name, m in first.items()}
    sets = {c: [n.removesuffix(".processor") for n in ed.guided_layers(c)] for c in ("all", "high", "low")}
    return {"reference_s": t_ref, "edit_s": t_edit, "guided_step_s": t_edit / args.steps, "peak": peak.peak,
            "map_bytes_per_layer": per_layer, "layer_sets": sets,
            "map_dtype": str(next(iter(first.values())).dtype)}


def worker_lockstep(args, out: Path) -> dict:
    """Reference and edit in lockstep, as ``Editor.edit`` runs them: one step's maps held; latents as two passes."""
    from p2pz.editor import Inversion

    ed = load_editor(args)
    x_t, deltas = inputs(ed, args)
    inv = Inversion(latents=x_t, caption=CAPTION, steps=args.steps)
    with PeakRSS() as peak:
        t = time.perf_counter()
        res = ed.edit(inv, deltas, _cfg(args), decode=False, force=True)
        took = time.perf_counter() - t
    two_pass = torch.load(out / "two_pass.pt", weights_only=True)["edited"]
    return {"lockstep_s": took, "peak": peak.peak,
            "max_abs_diff_to_two_pass": float((res.latents - two_pass).abs().max())}


def worker_ledits(args, out: Path) -> dict:
    """LEDITS++ on the same snapshot (its default multistep DPM-Solver++ scheduler): inversion and one edit
    concept, per step."""
    import warnings

    from diffusers import DPMSolverMultistepScheduler, LEditsPPPipelineStableDiffusionXL
    from diffusers.utils import logging as df_logging
    from PIL import Image

    warnings.simplefilter("ignore")
    df_logging.set_verbosity_error()
    scheduler = DPMSolverMultistepScheduler.from_pretrained(str(args.model), subfolder="scheduler",
                                                            algorithm_type="sde-dpmsolver++", solver_order=2)
    pipe = LEditsPPPipelineStableDiffusionXL.from_pretrained(str(args.model), scheduler=scheduler,
                                                             add_watermarker=False)
    pipe.set_progress_bar_config(disable=True)
    img = Image.fromarray((torch.rand(args.size, args.size, 3, generator=torch.Generator().manual_seed(1))
                           .mul(255).byte().numpy()))
    with torch.no_grad(), PeakRSS() as peak:
        t = time.perf_counter()
        pipe.invert(image=img, source_prompt=CAPTION, num_inversion_steps=args.steps, skip=0.0,
                    generator=torch.Generator().manual_seed(0))
        t_inv = time.perf_counter() - t
        t = time.perf_counter()
        pipe(editing_prompt=["dog"], edit_guidance_scale=5.0, edit_threshold=0.9, output_type="latent")
        t_edit = time.perf_counter() - t
    return {"inversion_s": t_inv, "edit_s": t_edit, "edit_step_s": t_edit / args.steps,
            "inversion_step_s": t_inv / args.steps, "peak": peak.peak}


def worker_timing(args, out: Path) -> dict:
    """The guided step against its unit, in one process and interleaved: a plain step and an edit step
    (``Editor.edit_latents`` at one step, against recorded reference maps) alternate ``--rounds`` times after one
    warm-up of each; the figure is each one's fastest round. The warm-up is the first step of an edit, which pays
    the one-off allocation of the ~16 GiB graph (reported as ``guided_cold_s``); steps 2…N of an edit run warm."""
    from p2pz.editor import Inversion
    from p2pz.editor.conditioning import Conditioning

    ed = load_editor(args)
    x_t, deltas = inputs(ed, args)
    delta, pooled = deltas
    inv = Inversion(latents=x_t, caption=CAPTION, steps=args.steps)
    maps, _ = ed.reference(inv, 5.0, force=True)
    with torch.no_grad():
        cond = ed.cfg_pair([CAPTION], [CAPTION], x_t.shape)
        cond = Conditioning(hidden=cond.hidden + torch.cat([torch.zeros_like(delta), delta]),
                            pooled=cond.pooled + torch.cat([torch.zeros_like(pooled), pooled]), time_ids=cond.time_ids)
    t_step = int(ed.scheduler.config.num_train_timesteps) - 1

    def plain():
        t = time.perf_counter()
        with torch.no_grad():
            ed.unet_out(torch.cat([x_t, x_t]), t_step, cond)
        return time.perf_counter() - t

    def guided():
        t = time.perf_counter()
        ed.edit_latents(x_t, [CAPTION], [CAPTION], deltas, maps, _cfg(args))
        return (time.perf_counter() - t) / args.steps

    plains, guideds = [plain()], [guided()]
    for _ in range(args.rounds):
        plains.append(plain())
        guideds.append(guided())
    return {"plain_s": min(plains[1:]), "guided_s": min(guideds[1:]), "guided_cold_s": guideds[0],
            "plain_times": plains, "guided_times": guideds}


WORKERS = {"plain": worker_plain, "timing": worker_timing, "two_pass": worker_two_pass, "lockstep": worker_lockstep, "ledits": worker_ledits}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--full", action="store_true", help="SDXL-sized random weights (2.6 B UNet); else the tiny SDXL")
    ap.add_argument("--size", type=int, default=None)
    ap.add_argument("--steps", type=int, default=1)
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--rounds", type=int, default=2, help="timed rounds of the plain and the guided step")
    ap.add_argument("--model", type=Path, help="(internal) the snapshot a worker loads")
    ap.add_argument("--worker", choices=sorted(WORKERS))
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    args.size = args.size or (512 if args.full else 64)
    if args.worker:
        res = WORKERS[args.worker](args, args.out)
        (args.out / f"{args.worker}.json").write_text(json.dumps(res))
        return
    with tempfile.TemporaryDirectory(dir=os.environ.get("P2PZ_BENCH_TMP")) as tmp:
        out = Path(tmp)
        model = out / "model"
        t = time.perf_counter()
        if args.full:
            write_sdxl_sized(model)
        else:
            from p2pz.editor.tiny import build_tiny_model

            build_tiny_model(model, family="sdxl", vocab="trained")
        build_s = time.perf_counter() - t
        env = {**os.environ, "PYTHONPATH": str(REPO), "P2PZ_HOME": str(out / "home")}
        base = [sys.executable, str(Path(__file__).resolve()), "--size", str(args.size), "--steps", str(args.steps),
                "--dtype", args.dtype, "--rounds", str(args.rounds), "--model", str(model), "--out", str(out)]
        res = {}
        for name in ("plain", "timing", "two_pass", "lockstep", "ledits"):
            t = time.perf_counter()
            subprocess.run(base + ["--worker", name], check=True, env=env)
            res[name] = json.loads((out / f"{name}.json").read_text())
            print(f"  {name}: {time.perf_counter() - t:.0f} s", file=sys.stderr)
    plain, timing, two, lock, ledits = res["plain"], res["timing"], res["two_pass"], res["lockstep"], res["ledits"]
    area = (1024 / args.size) ** 2
    per_layer = two["map_bytes_per_layer"]
    maps_1024 = {c: sum(per_layer[n] for n in names) * area for c, names in two["layer_sets"].items()}
    emit("edit_sdxl", {
        "params": {"mode": "full (SDXL-sized random)" if args.full else "quick (tiny SDXL)", "size": args.size,
                   "steps": args.steps, "dtype": args.dtype, "cfg": 5.0, "xa_guidance": 0.1,
                   "unet_parameters": plain["unet_parameters"], "snapshot_build_s": build_s},
        "plain_step_s": timing["plain_s"], "guided_step_s": timing["guided_s"],
        "guided_step_unet_forwards": timing["guided_s"] / timing["plain_s"],
        "guided_step_cold_s": timing["guided_cold_s"],
        "guided_step_cold_unet_forwards": timing["guided_cold_s"] / timing["plain_s"],
        "reference_step_s": two["reference_s"] / args.steps,
        "lockstep_step_s": lock["lockstep_s"] / args.steps,
        "peak_plain_bytes": plain["peak"], "peak_lockstep_bytes": lock["peak"], "peak_two_pass_bytes": two["peak"],
        "peak_lockstep_vs_two_pass": lock["peak"] / max(two["peak"], 1),
        "peak_lockstep_vs_plain": lock["peak"] / max(plain["peak"], 1),
        "lockstep_max_abs_diff_to_two_pass": lock["max_abs_diff_to_two_pass"],
        "map_dtype": two["map_dtype"], "map_layers": {c: len(n) for c, n in two["layer_sets"].items()},
        "map_bytes_per_step_measured": sum(per_layer.values()),
        "map_bytes_per_step_1024px": maps_1024,
        "ledits_edit_step_s": ledits["edit_step_s"], "ledits_inversion_step_s": ledits["inversion_step_s"],
        "ledits_peak_bytes": ledits["peak"],
        "guided_step_vs_ledits_step": timing["guided_s"] / ledits["edit_step_s"],
        "lockstep_step_vs_ledits_step": lock["lockstep_s"] / args.steps / ledits["edit_step_s"],
        "raw": res,
        "targets": {"guided_step_unet_forwards": "<= 3.0"},
    })


if __name__ == "__main__":
    main()
