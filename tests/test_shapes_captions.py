"""Varied training captions for the shapes model (algorithm §11): the config's validation, the pool's
[N, V, 77, 384] text, the per-element variant draw, and that the default "plain" run is unchanged batch for batch.
The world's caption grammar itself is tested in test_shapes_world.py."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from p2pz.editor.shapes import world
from p2pz.editor.shapes.model import WEIGHTS
from p2pz.editor.shapes.train import POOL, ShapesTrainingError, Trainer, TrainConfig, pool_captions

TINY = dict(vae_steps=1, unet_steps=2, batch=4, vae_batch=2, pool=16, warmup=1, checkpoint_every=100,
            unet_widths=(16, 32, 32))


def _cfg(**kw) -> TrainConfig:
    return TrainConfig(**{**TINY, **kw})


@pytest.fixture
def small_unet(monkeypatch):
    """Norm groups that divide the tiny widths (as in test_shapes_training.py)."""
    import p2pz.editor.shapes.train as tr

    orig = tr.unet_config
    monkeypatch.setattr(tr, "unet_config", lambda **kw: {**orig(**kw), "norm_num_groups": 8})


# --- the config ----------------------------------------------------------------------------------------------

def test_the_config_refuses_unknown_captions_and_variants_without_varied():
    with pytest.raises(ValueError, match="captions must be one of plain, varied"):
        TrainConfig(captions="fancy")
    with pytest.raises(ValueError, match="caption_variants must be an integer ≥ 1"):
        TrainConfig(captions="varied", caption_variants=0)
    with pytest.raises(ValueError, match="needs captions='varied'"):
        TrainConfig(caption_variants=2)
    assert TrainConfig(captions="varied", caption_variants=4).identity()["caption_variants"] == 4


def test_an_old_checkpoint_config_reads_as_plain_and_the_shipped_config_is_the_default():
    """The committed model's manifest predates the fields: it reads back as captions="plain", one variant, and is
    still exactly ``TrainConfig()`` (the defaults reproduce the shipped run)."""
    old = json.loads((WEIGHTS / "manifest.json").read_text())["config"]
    assert "captions" not in old
    cfg = TrainConfig.from_dict(old)
    assert (cfg.captions, cfg.caption_variants) == ("plain", 1) and cfg == TrainConfig()
    assert cfg.to_dict() == {**old, "captions": "plain", "caption_variants": 1}
    new = TrainConfig.from_dict(TrainConfig(captions="varied", caption_variants=3).to_dict())
    assert (new.captions, new.caption_variants) == ("varied", 3)


def test_cli_flags_reach_the_config_and_contradictions_are_one_line(tmp_path):
    from p2pz.registry.cli import main

    r = CliRunner().invoke(main, ["dev", "train-shapes", str(tmp_path), "--caption-variants", "3"])
    assert r.exit_code != 0 and "--caption-variants 3 needs --captions varied" in r.output
    r = CliRunner().invoke(main, ["dev", "train-shapes", str(tmp_path), "--captions", "fancy"])
    assert r.exit_code != 0 and "fancy" in r.output
    r = CliRunner().invoke(main, ["dev", "train-shapes", "--help"])
    assert "--captions varied --caption-variants 4" in r.output


# --- the UNet step -----------------------------------------------------------------------------------------

def _one_step(cfg: TrainConfig, text: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The conditioning and noisy latents of UNet step 0 on a synthetic pool (no VAE, no text encoder)."""
    tr = Trainer(cfg, "unused")
    g = torch.Generator().manual_seed(1)
    tr.pool_latents = torch.randn(cfg.pool, 4, 16, 16, generator=g)
    tr.pool_text, tr.uncond = text, torch.full((77, 384), 7.0)
    seen = {}

    def hook(module, args, kwargs):
        seen["xt"], seen["cond"] = args[0].clone(), kwargs["encoder_hidden_states"].clone()

    tr.unet.register_forward_pre_hook(hook, with_kwargs=True)
    tr.unet_train_step()
    return seen["xt"], seen["cond"]


@pytest.mark.slow  # two tiny trainers and a UNet step each
def test_plain_batches_are_unchanged_and_varied_draws_its_variant_after_them(small_unet):
    """A plain step uses exactly the draws it always made (index, drop, then the torch generator); a varied step
    makes the same draws, then picks a variant per element."""
    cfg = _cfg(batch=8, p_uncond=0.3)
    g = torch.Generator().manual_seed(2)
    text = torch.randn(cfg.pool, 3, 77, 384, generator=g).half()  # [N, V, 77, 384]
    xt, cond = _one_step(cfg, text[:, 0].contiguous())
    rng = np.random.default_rng([cfg.seed, 2, 0])  # the step's rng, as before varied captions existed
    idx = rng.integers(0, cfg.pool, size=cfg.batch)
    drop = rng.random(cfg.batch) < cfg.p_uncond
    want = text[:, 0][torch.from_numpy(idx)].float()
    want[torch.from_numpy(drop)] = 7.0
    assert drop.any() and not drop.all() and torch.equal(cond, want)

    vcfg = _cfg(batch=8, p_uncond=0.3, captions="varied", caption_variants=3)
    vxt, vcond = _one_step(vcfg, text)
    variant = rng.integers(0, 3, size=cfg.batch)
    want = text[torch.from_numpy(idx), torch.from_numpy(variant)].float()
    want[torch.from_numpy(drop)] = 7.0
    assert len(set(variant[~drop])) > 1 and torch.equal(vcond, want)
    assert torch.equal(xt, vxt)  # the same latents, noise and timesteps


# --- the pool and a resumed run ----------------------------------------------------------------------------

def test_pool_captions_are_the_worlds_own_then_varied_and_deterministic():
    cfg = TrainConfig(captions="varied", caption_variants=4)
    s = world.sample(5)
    caps = pool_captions(cfg, s)
    assert caps[0] == s.caption and len(caps) == 4 and len(set(caps)) == 4
    assert caps == pool_captions(cfg, world.sample(5))
    assert pool_captions(TrainConfig(seed=1, captions="varied", caption_variants=4), s)[1:] != caps[1:]
    assert pool_captions(TrainConfig(), s) == [s.caption]


@pytest.mark.slow  # encodes two pools with the real text encoder and trains a few tiny steps
def test_a_varied_pool_is_n_by_v_and_its_run_resumes_to_the_same_weights(tmp_path, small_unet):
    from safetensors import safe_open
    from safetensors.torch import save_file

    # the plain pool: the world's captions, encoded as before
    plain = Trainer(_cfg(), tmp_path / "p")
    plain.build_pool()
    captions = [world.sample(s).caption for s in range(16)]
    assert plain.pool_text.shape == (16, 77, 384)
    assert torch.equal(plain.pool_text, plain.encode_text(captions).to(torch.float16))

    # a pool from before varied captions (no metadata) is read as plain; a varied run rebuilds it
    marker = {"latents": torch.zeros(16, 4, 16, 16), "text": torch.zeros(16, 77, 384, dtype=torch.float16),
              "uncond": torch.zeros(77, 384)}
    save_file(marker, str(tmp_path / "p" / POOL))
    plain.build_pool()
    assert not plain.pool_text.any()
    varied = _cfg(captions="varied", caption_variants=2)
    text = dict(text_model=plain.text_model, tokenizer=plain.tokenizer)  # load the encoder once
    a = Trainer(varied, tmp_path / "p", **text)
    a.run()
    assert a.pool_text.shape == (16, 2, 77, 384) and a.pool_text.dtype == torch.float16
    with safe_open(str(tmp_path / "p" / POOL), "pt") as f:
        assert f.metadata() == {"captions": "varied", "caption_variants": "2"}
    # variant 0 is bit for bit the plain pool's text (the same batches through the encoder), variant 1 varied
    assert torch.equal(a.pool_text[:, 0], plain.encode_text(captions).to(torch.float16))
    second = [pool_captions(varied, world.sample(s))[1] for s in range(16)]
    assert torch.equal(a.pool_text[:, 1], a.encode_text(second).to(torch.float16))

    # stopped after one UNet step and resumed (pool rebuilt from the VAE): the same weights as one go
    b = Trainer(varied, tmp_path / "b", **text)
    b.run(until_unet=1)
    (tmp_path / "b" / POOL).unlink()
    b = Trainer.resume(tmp_path / "b", varied)
    b.text_model, b.tokenizer = text["text_model"], text["tokenizer"]
    b.run()
    assert (b.vae_step, b.unet_step) == (1, 2)
    assert [h.get("loss", h.get("mse")) for h in a.history] == [h.get("loss", h.get("mse")) for h in b.history]
    for k, v in a.ema.items():
        assert torch.equal(v, b.ema[k]), k
    for k, v in a.unet.state_dict().items():
        assert torch.equal(v, b.unet.state_dict()[k]), k
    with pytest.raises(ShapesTrainingError, match="caption_variants"):
        Trainer.resume(tmp_path / "b", _cfg(captions="varied", caption_variants=3))
