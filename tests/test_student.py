"""The student (editor.student): it learns a known image mapping, deterministically, and resumes exactly."""

import time

import pytest
import torch
import torch.nn.functional as F

from p2pz.editor.errors import EditorError
from p2pz.editor.student import PatchDiscriminator, StudentConfig, Trainer, UNetGenerator, lr_at, parameter_count

pytestmark = pytest.mark.slow  # trains students for real

CFG = StudentConfig(size=64, base_channels=16, depth=4, disc_channels=16, disc_layers=2, batch=8, seed=0)


def synthetic_pairs(n: int, size: int = 64, seed: int = 0):
    """Smooth random sources and a known target function of them: a colour remap (channels rotated, contrast
    0.8, +0.1) followed by a 3×3 box blur — the kind of mapping a student must learn from a teacher."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n, 3, size // 8, size // 8, generator=g) * 2 - 1
    sources = F.interpolate(coarse, size=size, mode="bilinear", align_corners=False)  # [N, 3, S, S]
    remapped = (sources[:, [2, 0, 1]] * 0.8 + 0.1).clamp(-1, 1)
    targets = F.avg_pool2d(F.pad(remapped, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
    return sources, targets


def test_networks_shapes_and_the_70px_patchgan():
    g, d = UNetGenerator(CFG), PatchDiscriminator(StudentConfig(size=256, depth=8))
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    y = g(x)
    assert y.shape == x.shape and y.abs().max() <= 1
    patches = d(torch.zeros(1, 3, 256, 256), torch.zeros(1, 3, 256, 256))
    assert patches.shape == (1, 1, 30, 30)  # pix2pix's 70×70 PatchGAN on 256 px: a 30 × 30 grid of patch scores
    assert parameter_count(g) > 0
    with pytest.raises(EditorError, match="divisible"):
        StudentConfig(size=100, depth=3)


def test_the_learning_rate_decays_over_the_second_half():
    assert [lr_at(s, 10, 1.0) for s in (0, 4, 5, 7, 9)] == pytest.approx([1.0, 1.0, 1.0, 0.6, 0.2])


def test_the_student_learns_a_known_mapping():
    sources, targets = synthetic_pairs(64)
    train_x, train_y, held_x, held_y = sources[:56], targets[:56], sources[56:], targets[56:]
    identity_l1 = float((held_x - held_y).abs().mean())
    t = time.perf_counter()
    trainer = Trainer(CFG, train_x, train_y, total_steps=300)
    trainer.run()
    student_l1 = float((trainer.predict(held_x) - held_y).abs().mean())
    print(f"held-out L1: student {student_l1:.4f} vs identity {identity_l1:.4f} "
          f"({time.perf_counter() - t:.1f} s for 300 steps)")
    assert student_l1 < 0.35 * identity_l1
    assert trainer.history[-1]["loss_l1"] < trainer.history[0]["loss_l1"] / 3


def test_training_is_deterministic_and_resumes_to_the_same_weights(tmp_path):
    sources, targets = synthetic_pairs(16)
    straight = Trainer(CFG, sources, targets, total_steps=24)
    straight.run()
    again = Trainer(CFG, sources, targets, total_steps=24)
    again.run()
    interrupted = Trainer(CFG, sources, targets, total_steps=24)
    interrupted.run(steps=10, out_dir=tmp_path)  # stops at step 10 with a checkpoint
    resumed = Trainer.resume(tmp_path, sources, targets)
    assert resumed.step == 10 and len(resumed.history) == 10
    resumed.run(out_dir=tmp_path)
    for model in ("generator", "discriminator"):
        a, b, c = (getattr(t, model).state_dict() for t in (straight, again, resumed))
        assert all(torch.equal(a[k], b[k]) for k in a)
        assert all(torch.equal(a[k], c[k]) for k in a), f"{model} differs after resuming"
    assert [h["loss_l1"] for h in resumed.history] == [h["loss_l1"] for h in straight.history]


def test_ctrl_c_leaves_a_checkpoint_to_resume_from(tmp_path, monkeypatch):
    sources, targets = synthetic_pairs(8)
    trainer = Trainer(CFG, sources, targets, total_steps=10)
    plain = Trainer.train_step

    def interrupt_at_4(self):
        if self.step == 4:
            raise KeyboardInterrupt
        return plain(self)

    monkeypatch.setattr(Trainer, "train_step", interrupt_at_4)
    with pytest.raises(KeyboardInterrupt):
        trainer.run(out_dir=tmp_path)
    monkeypatch.setattr(Trainer, "train_step", plain)
    assert Trainer.resume(tmp_path, sources, targets).step == 4
    with pytest.raises(EditorError, match="no checkpoint"):
        Trainer.resume(tmp_path / "elsewhere", sources, targets)


def test_mixed_precision_runs_the_bf16_autocast_path_and_still_learns():
    """``precision="bf16"`` is the path ``auto`` takes on CUDA; forced on the CPU it runs the same autocast code:
    the convolutions compute in bfloat16, weights and optimizer state stay float32, and the student still learns."""
    from p2pz.editor.student.train import resolve_precision

    assert resolve_precision("auto", "cuda:0") == "bf16" and resolve_precision("auto", "cpu") == "fp32"
    with pytest.raises(EditorError, match="unknown precision"):
        resolve_precision("fp8", "cpu")
    sources, targets = synthetic_pairs(32)
    train_x, train_y, held_x, held_y = sources[:28], targets[:28], sources[28:], targets[28:]
    seen = set()
    trainer = Trainer(CFG, train_x, train_y, total_steps=150, precision="bf16")
    first_conv = next(m for m in trainer.generator.modules() if isinstance(m, torch.nn.Conv2d))
    first_conv.register_forward_hook(lambda m, i, o: seen.add(o.dtype))
    trainer.run()
    assert seen == {torch.bfloat16}
    assert all(p.dtype == torch.float32 for p in trainer.generator.parameters())
    assert all(s.dtype == torch.float32 for st in trainer.opt_g.state.values() for s in st.values() if s.dim())
    identity_l1 = float((held_x - held_y).abs().mean())
    student_l1 = float((trainer.predict(held_x) - held_y).abs().mean())
    print(f"bf16 held-out L1: student {student_l1:.4f} vs identity {identity_l1:.4f}")
    assert student_l1 < 0.5 * identity_l1
    fp32 = Trainer(CFG, train_x, train_y, total_steps=2)
    fp32.generator.load_state_dict(trainer.generator.state_dict())
    hooked = set()
    next(m for m in fp32.generator.modules() if isinstance(m, torch.nn.Conv2d)).register_forward_hook(
        lambda m, i, o: hooked.add(o.dtype))
    fp32.run()
    assert hooked == {torch.float32}
