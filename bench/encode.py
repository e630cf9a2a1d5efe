"""Encoding benchmark (issue #5 item 1): p2pz's batched bank encoding vs the reference's one-sentence loop.

A CLIP-L-sized random text encoder (12 layers, width 768, vocab 49408, no download) is written as a snapshot
and loaded through p2pz's own loader. Reports the speed-up over the loop (same outputs), achieved GFLOP/s
against this machine's measured fp32 matmul peak (the roofline fraction), and the time to re-encode a bank
that is already stored (which must not call the encoder at all).

    python bench/encode.py [--sentences 200] [--batch 64]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from _common import best_of, emit

import torch


def build_clip_l(folder: Path) -> None:
    from transformers import CLIPTextConfig, CLIPTextModel

    from p2pz.editor.tiny import write_clip_tokenizer

    write_clip_tokenizer(folder / "tokenizer")
    torch.manual_seed(0)
    cfg = CLIPTextConfig(vocab_size=49408, hidden_size=768, intermediate_size=3072, num_attention_heads=12,
                         num_hidden_layers=12, max_position_embeddings=77, projection_dim=768,
                         bos_token_id=49406, eos_token_id=49407, pad_token_id=49407)
    CLIPTextModel(cfg).eval().save_pretrained(folder / "text_encoder")


def flops_per_sentence(layers=12, d=768, ff=3072, n=77) -> float:
    """Multiply-adds ×2 of one CLIP text-encoder forward on 77 tokens (projections, attention, MLP)."""
    per_layer = 2 * n * (4 * d * d + 2 * d * ff) + 2 * 2 * n * n * d
    return layers * per_layer


def matmul_peak(seconds: float = 3.0) -> float:
    a, b = torch.randn(4096, 768), torch.randn(768, 3072)
    for _ in range(3):
        a @ b
    best, end = 0.0, time.perf_counter() + seconds
    while time.perf_counter() < end:
        t = time.perf_counter()
        a @ b
        best = max(best, 2 * 4096 * 768 * 3072 / (time.perf_counter() - t))
    return best / 1e9


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sentences", type=int, default=200)
    ap.add_argument("--batch", type=int, default=32)
    args = ap.parse_args()
    from p2pz.generators import TemplateGenerator
    from p2pz.registry import Registry
    from p2pz.registry.library.encoding import encode_bank, tokenize
    from p2pz.editor.loader import load_text_encoder

    with tempfile.TemporaryDirectory() as tmp:
        import os

        os.environ["P2PZ_HOME"] = str(Path(tmp) / "home")
        model_dir = Path(tmp) / "clip-l"
        build_clip_l(model_dir)
        enc = load_text_encoder(str(model_dir), device="cpu")
        sentences = TemplateGenerator().generate("cat", args.sentences, seed=0).sentences

        def reference_loop():  # algorithm §1.2: one sentence at a time, then the mean
            outs = []
            with torch.no_grad():
                for s in sentences:
                    ids = tokenize(enc, [s])["input_ids"]
                    outs.append(enc.model(input_ids=ids)[0])
            return torch.cat(outs).mean(0, keepdim=True)

        encode_bank(enc, sentences[:8])  # warm-up
        t = time.perf_counter()
        ref = reference_loop()
        t_loop = time.perf_counter() - t
        t = time.perf_counter()
        ours = encode_bank(enc, sentences, batch_size=args.batch)
        t_batched = time.perf_counter() - t
        diff = float((torch.from_numpy(ours.mean) - ref).abs().max())

        peak = matmul_peak()
        achieved = flops_per_sentence() * len(sentences) / t_batched / 1e9

        calls = {"n": 0}
        enc.model.register_forward_pre_hook(lambda *a: calls.__setitem__("n", calls["n"] + 1))
        reg = Registry.open(f"sqlite:///{tmp}/r.db")
        reg.make_bank("cat", n=args.sentences, seed=0)
        t = time.perf_counter()
        reg.embedding("cat@1", str(model_dir))
        t_first = time.perf_counter() - t
        before = calls["n"]
        t_again = best_of(lambda: reg.embedding("cat@1", str(model_dir)))
        encoder_calls_on_reencode = calls["n"] - before
        reg.close()

    emit("encode", {
        "params": {"sentences": len(sentences), "batch_size": args.batch, "model": "CLIP-L-sized random (12×768)"},
        "reference_loop_s": t_loop,
        "p2pz_batched_s": t_batched,
        "speedup": t_loop / t_batched,
        "max_abs_diff": diff,
        "achieved_gflops": achieved,
        "matmul_peak_gflops": peak,
        "roofline_fraction": achieved / peak,
        "store_first_encode_s": t_first,
        "reencode_s": t_again,
        "reencode_encoder_calls": encoder_calls_on_reencode,
        "targets": {"speedup": ">= 1.1", "roofline_fraction": ">= 0.6", "reencode_encoder_calls": 0},
    })


if __name__ == "__main__":
    main()
