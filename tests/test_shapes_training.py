"""Training the shapes model (architecture §12): deterministic for a seed, resumable to the same weights, and the
loss falls. Tiny settings (a few seconds of CPU); the real run is ``p2pz dev train-shapes``."""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner

from editor.shapes.train import CHECKPOINT, ShapesTrainingError, Trainer, TrainConfig, train

TINY = dict(vae_steps=20, unet_steps=10, batch=4, vae_batch=4, pool=32, warmup=2, checkpoint_every=5,
            unet_widths=(16, 32, 32), vae_lr=3e-3)


def _cfg(**kw) -> TrainConfig:
    return TrainConfig(**{**TINY, **kw})


def _small_unet(monkeypatch):
    """Norm groups that divide the tiny widths (the shipped config has 16 groups for widths ≥ 32)."""
    import editor.shapes.train as tr

    orig = tr.unet_config
    monkeypatch.setattr(tr, "unet_config", lambda **kw: {**orig(**kw), "norm_num_groups": 8})


def _losses(history):
    return [(h["stage"], h.get("mse", h.get("loss"))) for h in history]


def test_thirty_steps_are_deterministic_and_the_loss_falls(tmp_path, monkeypatch):
    _small_unet(monkeypatch)
    runs = []
    for name in ("a", "b"):
        tr = Trainer(_cfg(), tmp_path / name)
        tr.run()
        runs.append(tr)
    a, b = runs
    assert len(a.history) == 30
    assert _losses(a.history) == _losses(b.history)  # the same trajectory, bit for bit
    for k, v in a.unet.state_dict().items():
        assert torch.equal(v, b.unet.state_dict()[k]), k
    vae = [h["mse"] for h in a.history if h["stage"] == "vae"]
    assert sum(vae[-5:]) / 5 < 0.7 * sum(vae[:5]) / 5, vae  # reconstruction improves within 20 steps


def test_a_stopped_run_resumes_to_the_same_weights(tmp_path, monkeypatch):
    _small_unet(monkeypatch)
    whole = Trainer(_cfg(), tmp_path / "whole")
    whole.run()
    part = Trainer(_cfg(), tmp_path / "part")
    part.run(until_vae=7)  # stopped inside the VAE stage …
    part = Trainer.resume(tmp_path / "part", _cfg())
    part.run(until_unet=4)  # … and again inside the UNet stage
    part = Trainer.resume(tmp_path / "part", _cfg())
    part.run()
    assert (part.vae_step, part.unet_step) == (20, 10)
    assert _losses(part.history) == _losses(whole.history)
    for k, v in whole.ema.items():
        assert torch.equal(v, part.ema[k]), k


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
    from editor.shapes.model import sha256_file

    assert manifest["sha256"] and all(sha256_file(out / rel) == h for rel, h in manifest["sha256"].items())
    assert (out / "loss.png").stat().st_size > 1000
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(out)
    assert type(pipe.text_encoder).__name__ == "BertModel" and pipe.tokenizer.model_max_length == 77
    assert pipe.vae.config.scaling_factor == manifest["scaling_factor"] != 0.18215
    with pytest.raises(ShapesTrainingError, match="--resume.*--force"):
        train(tmp_path / "run", _cfg())


def test_cli_train_shapes_refuses_contradicting_flags(tmp_path):
    from registry.cli import main

    r = CliRunner().invoke(main, ["dev", "train-shapes", str(tmp_path), "--resume", "--force"])
    assert r.exit_code != 0 and "contradict" in r.output
