"""Student benchmark (issue #13): a student's latency per image against the diffusion edit of the same image at the
same resolution, in the same run, with SD-1.5-sized random components at 256 px.

A 50-step CPU edit takes minutes, so the teacher is timed for ``--teacher-steps`` steps of each stage (inversion,
then the lockstep reference + edit pass) and its per-step cost scaled to the 50 steps users run — said so in the
output. The student (pix2pix U-Net, width 64, 8 levels at 256 px) is timed for one image and at batch 8.

    python bench/student.py [--size 256] [--teacher-steps 2]
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
    ap.add_argument("--teacher-steps", type=int, default=2)
    ap.add_argument("--check-steps", type=int, default=0, help="Also time a full teacher run of this many steps "
                    "(make bench-full: 50) to check the per-step scaling.")
    args = ap.parse_args()
    from p2pz.editor import EditConfig, Editor, InversionConfig
    from p2pz.editor.student import Student, StudentConfig, UNetGenerator, parameter_count, weights_bytes

    unet, vae, text, tok, sched = components(full=True)
    ed = Editor(unet, vae, text, tok, sched, device="cpu", cache_dir=None, text_encoder_fingerprint="bench",
                model_fingerprint="bench-model")
    rng = np.random.RandomState(0)
    image = Image.fromarray((np.kron(rng.rand(16, 16, 3), np.ones((args.size // 16, args.size // 16, 1))) * 255)
                            .astype(np.uint8))
    delta = torch.randn(1, 77, 768, generator=torch.Generator().manual_seed(1)) * 0.3
    steps = args.teacher_steps
    t = time.perf_counter()
    inv = ed.invert(image, "a photo of a cat", InversionConfig(steps=steps, size=args.size))
    invert_s = time.perf_counter() - t
    t = time.perf_counter()
    ed.edit(inv, delta, EditConfig(steps=steps))
    edit_s = time.perf_counter() - t
    teacher_50 = (invert_s + edit_s) / steps * 50
    check = {}
    if args.check_steps:
        t = time.perf_counter()
        inv_full = ed.invert(image, "a photo of a cat", InversionConfig(steps=args.check_steps, size=args.size))
        ed.edit(inv_full, delta, EditConfig(steps=args.check_steps))
        measured = time.perf_counter() - t
        scaled = (invert_s + edit_s) / steps * args.check_steps
        check = {"teacher_measured_s": measured, "teacher_scaled_s": scaled, "scaled_over_measured": scaled / measured}

    torch.manual_seed(0)
    cfg = StudentConfig(size=args.size, depth=8)
    student = Student(UNetGenerator(cfg), cfg)
    student(image)  # warm-up
    runs = []
    for _ in range(5):
        t = time.perf_counter()
        student(image)
        runs.append(time.perf_counter() - t)
    latency = sorted(runs)[len(runs) // 2]
    batch = [image] * 8
    t = time.perf_counter()
    student.batch(batch)
    batch_s = time.perf_counter() - t
    emit("student", {
        "params": {"size": args.size, "teacher_steps_timed": steps, "teacher_scaled_to_steps": 50,
                   "steps": args.check_steps or None,
                   "student": "pix2pix U-Net, width 64, 8 levels", "note": "teacher per-step cost scaled to 50 steps"},
        "teacher_invert_s_per_step": invert_s / steps, "teacher_edit_s_per_step": edit_s / steps,
        "teacher_s_50_steps": teacher_50, "student_latency_s": latency, "speedup": teacher_50 / latency,
        "student_images_per_s_batch8": 8 / batch_s, "student_parameters": parameter_count(student.generator),
        "student_file_bytes": len(weights_bytes(student.generator)),
        **({"scaling_check": {"steps": args.check_steps, **check}} if check else {}),
        "targets": {"speedup": ">= 3800"},
    })


if __name__ == "__main__":
    main()
