"""Training the shapes model (architecture §12): deterministic for a seed, resumable to the same weights, and the
loss falls. Tiny settings (a few seconds of CPU); the real run is ``p2pz dev train-shapes``."""

from __future__ import annotations

import json
import os
import signal

import pytest
import torch
from click.testing import CliRunner

from p2pz.editor.shapes.train import CHECKPOINT, ShapesTrainingError, Stopped, Trainer, TrainConfig, train

pytestmark = pytest.mark.slow  # trains the shapes model for real, if briefly

TINY = dict(vae_steps=20, unet_steps=10, batch=4, vae_batch=4, pool=32, warmup=2, checkpoint_every=5,
            unet_widths=(16, 32, 32), vae_lr=3e-3)


def _cfg(**kw) -> TrainConfig:
    return TrainConfig(**{**TINY, **kw})


def _small_unet(monkeypatch):
    """Norm groups that divide the tiny widths (the shipped config has 16 groups for widths ≥ 32)."""
    import p2pz.editor.shapes.train as tr

    orig = tr.unet_config
    monkeypatch.setattr(tr, "unet_config", lambda **kw: {**orig(**kw), "norm_num_groups": 8})


def _losses(history):
    return [(h["stage"], h.get("mse", h.get("loss"))) for h in history]


def _held_out_mse(vae) -> float:
    """Reconstruction MSE on 8 fixed held-out images (the per-step loss of a batch of 4 is too noisy to judge)."""
    import numpy as np

    from p2pz.editor.shapes import world
    from p2pz.editor.shapes.train import to_tensor

    x = to_tensor(np.stack([s.pixels() for s in world.held_out(8)]))
    with torch.no_grad():
        return float(((vae.decode(vae.encode(x).latent_dist.mean).sample - x) ** 2).mean())


def test_thirty_steps_are_deterministic_resumable_and_the_loss_falls(tmp_path, monkeypatch):
    """Run a trains 30 steps in one go; run b is stopped inside the VAE stage and again inside the UNet stage
    and resumed each time from its checkpoint: the same loss trajectory and the same weights, bit for bit."""
    _small_unet(monkeypatch)
    a = Trainer(_cfg(), tmp_path / "a")
    before = _held_out_mse(a.vae)
    a.run()
    b = Trainer(_cfg(), tmp_path / "b")
    step = b.vae_train_step

    def interrupted_step():  # a real SIGINT arrives in the middle of VAE step 7
        if b.vae_step == 6:
            os.kill(os.getpid(), signal.SIGINT)
        return step()

    b.vae_train_step = interrupted_step
    with pytest.raises(Stopped) as stop:
        b.run()
    assert (stop.value.stage, stop.value.step) == ("vae", 7)  # the step under way finished, then checkpointed
    b = Trainer.resume(tmp_path / "b", _cfg())
    b.run(until_unet=4)
    b = Trainer.resume(tmp_path / "b", _cfg())
    b.run()
    assert (b.vae_step, b.unet_step) == (20, 10) and len(a.history) == 30
    assert _losses(a.history) == _losses(b.history)
    for k, v in a.ema.items():
        assert torch.equal(v, b.ema[k]), k
    for k, v in a.vae.state_dict().items():
        assert torch.equal(v, b.vae.state_dict()[k]), k
    after = _held_out_mse(a.vae)
    assert after < 0.8 * before, (before, after)  # measured 0.70 → 0.44 in the 20 VAE steps


def test_resume_refuses_other_settings_and_a_damaged_checkpoint(tmp_path, monkeypatch):
    _small_unet(monkeypatch)
    tr = Trainer(_cfg(), tmp_path)
    tr.run(until_vae=5)
    with pytest.raises(ShapesTrainingError, match="unet_steps"):
        Trainer.resume(tmp_path, _cfg(unet_steps=99))
    (tmp_path / CHECKPOINT).write_bytes(b"\0" * 100)
    with pytest.raises(ShapesTrainingError, match="unreadable.*--force"):
        Trainer.resume(tmp_path, _cfg())


def test_train_exports_a_loadable_snapshot_with_a_manifest(tmp_path, monkeypatch):
    _small_unet(monkeypatch)
    out = train(tmp_path / "run", _cfg(), command="test")
    manifest = json.loads((out / "manifest.json").read_text())
    from p2pz.editor.shapes.model import sha256_file

    assert manifest["sha256"] and all(sha256_file(out / rel) == h for rel, h in manifest["sha256"].items())
    assert (out / "loss.png").stat().st_size > 1000
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(out)
    assert type(pipe.text_encoder).__name__ == "BertModel" and pipe.tokenizer.model_max_length == 77
    assert pipe.vae.config.scaling_factor == manifest["scaling_factor"] != 0.18215
    with pytest.raises(ShapesTrainingError, match="--resume.*--force"):
        train(tmp_path / "run", _cfg())


def test_cli_train_shapes_refuses_contradicting_flags(tmp_path):
    from p2pz.registry.cli import main

    r = CliRunner().invoke(main, ["dev", "train-shapes", str(tmp_path), "--resume", "--force"])
    assert r.exit_code != 0 and "contradict" in r.output
