"""Evaluation overhead (issue #12): what ``p2pz eval run`` adds to the edit time of the same images — scoring
each edit with CLIP ViT-L/14-sized, DINO ViT-B/8-sized and LPIPS-AlexNet random models — against the edit itself
(inversion, reference and edit passes) with SD-1.5-sized random components, measured in the same run.

    python bench/evaluate_overhead.py [--size 256] [--steps 10] [--images 1]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from _common import emit
from PIL import Image

from edit import components


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--images", type=int, default=1)
    args = ap.parse_args()
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor, ViTConfig, ViTModel

    from p2pz.editor import EditConfig, Editor, InversionConfig
    from p2pz.editor.evaluate import Scorers, score_pair
    from p2pz.editor.metrics import LPIPS, ClipScorer, StructureDistance

    torch.manual_seed(0)
    unet, vae, text, tok, sched = components(full=True)
    ed = Editor(unet, vae, text, tok, sched, device="cpu", cache_dir=None, text_encoder_fingerprint="bench",
                model_fingerprint="bench-model")
    clip = CLIPModel(CLIPConfig(
        text_config={"hidden_size": 768, "intermediate_size": 3072, "num_attention_heads": 12, "num_hidden_layers": 12},
        vision_config={"hidden_size": 1024, "intermediate_size": 4096, "num_attention_heads": 16,
                       "num_hidden_layers": 24, "image_size": 224, "patch_size": 14}, projection_dim=768))
    processor = CLIPProcessor(image_processor=CLIPImageProcessor(), tokenizer=tok)
    dino = ViTModel(ViTConfig(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072,
                              image_size=224, patch_size=8), add_pooling_layer=False)
    lpips = LPIPS("alex")
    scorers = Scorers(ClipScorer(clip, processor), StructureDistance(dino), lpips, {"clip_model": "random ViT-L/14"})
    delta = torch.randn(1, 77, 768, generator=torch.Generator().manual_seed(1)) * 0.3
    rng = np.random.RandomState(0)
    images = [Image.fromarray((np.kron(rng.rand(16, 16, 3), np.ones((args.size // 16, args.size // 16, 1))) * 255)
                              .astype(np.uint8)) for _ in range(args.images)]
    edit_s = score_s = 0.0
    for image in images:
        t = time.perf_counter()
        inv = ed.invert(image, "a photo of a cat", InversionConfig(steps=args.steps, size=args.size))
        res = ed.edit(inv, delta, EditConfig(steps=args.steps))
        edit_s += time.perf_counter() - t
        t = time.perf_counter()
        score_pair(scorers, image, res.edited, "cat", "dog")
        score_s += time.perf_counter() - t
    emit("evaluate", {
        "params": {"size": args.size, "steps": args.steps, "images": args.images,
                   "models": "SD-1.5-sized editor; CLIP ViT-L/14, DINO ViT-B/8, LPIPS AlexNet sized scorers (random)"},
        "edit_s": edit_s, "score_s": score_s, "overhead_ratio": score_s / edit_s,
        "targets": {"overhead_ratio": "< 0.05"},
    })


if __name__ == "__main__":
    main()
