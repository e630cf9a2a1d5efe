"""Training a student on source/edit pairs (PAPER §4.4; pix2pix's recipe): LSGAN + λ_L1 · L1 (+ λ_LPIPS · LPIPS),
Adam (lr 2e-4, β1 0.5), the learning rate constant for the first half and decayed linearly to 0 over the second.

Deterministic for a seed on the CPU: weights are initialized after seeding, batches are drawn from a seeded
generator, and a checkpoint holds everything the next step depends on (both networks, both Adam states, the
sampler's RNG state, the step and the loss history), so training interrupted at step k and resumed reaches the
same weights as an uninterrupted run. Checkpoints are written atomically (safetensors + JSON), every
``checkpoint_every`` steps and on Ctrl-C. Ctrl-C never lands inside a step: while :meth:`Trainer.run` trains (in the
main thread) the first SIGINT is deferred to the end of the step under way, which is then checkpointed (a second
Ctrl-C stops at once, keeping the last checkpoint) — a checkpoint taken mid-step (the discriminator updated, the
generator not, the batch already drawn) would resume to other weights.

A checkpoint is ≈ 3 × the size of both networks' float32 weights (the weights and Adam's two moments each); the
generator dominates, growing with the square of ``base_channels``.
"""

from __future__ import annotations

import json
import signal
import threading
from dataclasses import dataclass, field
from pathlib import Path

import torch

from p2pz.store.files import atomic_write
from p2pz.store.progress import progress_bar

from ..checkpoints import flatten_optimizer, restore_optimizer
from ..errors import EditorError
from .model import PatchDiscriminator, StudentConfig, UNetGenerator
from .pairs import dataset_sha256, load_pairs, read_manifest
from .results import held_out_metrics, write_loss_plot, write_samples

CHECKPOINT = "checkpoint.safetensors"


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C during :meth:`Trainer.run`: ``saved_step`` is the step of the checkpoint it left in ``out_dir``
    (None when there is none), ``total_steps`` the run's length."""

    def __init__(self, saved_step: int | None, total_steps: int, out_dir: Path | None):
        super().__init__()
        self.saved_step, self.total_steps, self.out_dir = saved_step, total_steps, out_dir


def default_width(size: int) -> int:
    """The generator's default width (ngf) for a training size: pix2pix's 64 at 256 px, scaled with the size
    (size / 4, between 8 and 64), so a small student stays small (the generator's parameters grow with the square
    of the width)."""
    return max(8, min(64, size // 4))


def default_depth(size: int) -> int:
    """U-Net levels for a size: log2 of its largest power-of-two factor, at most 8."""
    return min(8, (size & -size).bit_length() - 1)


def _unreadable(path: Path, why) -> EditorError:
    why = " ".join(str(why).split())[:200] or type(why).__name__
    return EditorError(f"the checkpoint {path} is unreadable ({why}); it may be truncated: start the run again "
                       "with --force instead of --resume")


def read_checkpoint(out_dir: Path, tensors: bool = True) -> tuple[dict, dict]:
    """(meta, tensors) of the checkpoint in ``out_dir`` (tensors {} when not asked for); a missing, truncated
    or foreign file is an :class:`EditorError` saying what to do."""
    from safetensors import safe_open  # lazy: safetensors

    path = Path(out_dir) / CHECKPOINT
    if not path.is_file():
        raise EditorError(f"no checkpoint in {out_dir}; start training without --resume")
    try:
        with safe_open(str(path), "pt") as f:
            meta = json.loads((f.metadata() or {})["p2pz"])
            data = {k: f.get_tensor(k) for k in f.keys()} if tensors else {}
        for key in ("step", "total_steps", "config", "opt_g", "opt_d", "history"):
            meta[key]
    except Exception as exc:  # noqa: BLE001 — SafetensorError, OSError, a foreign or damaged header
        raise _unreadable(path, exc) from None
    return meta, data


def lr_at(step: int, total: int, lr: float) -> float:
    """Constant for the first half of ``total`` steps, then linearly down to 0."""
    half = total // 2
    if step < half:
        return lr
    return lr * max(0.0, 1.0 - (step - half) / max(total - half, 1))


PRECISIONS = ("auto", "fp32", "bf16")


def resolve_precision(precision: str, device: str) -> str:
    """``auto`` → mixed precision (bfloat16 autocast, which needs no loss scaling) on CUDA, float32 elsewhere.

    ``bf16`` forces the autocast on any device (the CPU supports it too: slower there, but it runs the same
    mixed-precision code path). Weights, optimizer state and checkpoints stay float32 either way."""
    if precision not in PRECISIONS:
        raise EditorError(f"unknown precision {precision!r}; use one of {', '.join(PRECISIONS)}")
    if precision == "auto":
        return "bf16" if str(device).startswith("cuda") else "fp32"
    return precision


def checkpointed_config(meta: dict) -> StudentConfig:
    """The configuration a checkpoint was trained with; one written before augmentation existed trained without
    it, so it resumes without it (the same weights as had it run on)."""
    return StudentConfig(**{"jitter": 0.0, "mirror": False, **meta["config"]})


def augment(x: torch.Tensor, y: torch.Tensor, cfg: StudentConfig, generator: torch.Generator):
    """pix2pix's random jitter and mirroring of pairs x, y [B, 3, S, S]: each pair resized to S·(1 + jitter),
    cropped back to S at a random offset, and flipped left-right with probability ½ — source and target alike, so
    the mapping they show is unchanged. Draws come from ``generator`` (checkpointed: a resumed run draws the same)."""
    if cfg.jitter <= 0 and not cfg.mirror:
        return x, y
    s = x.shape[-1]
    big = s + max(int(round(s * cfg.jitter)), 0)
    pair = torch.cat([x, y], 1)  # [B, 6, S, S]
    if big > s:
        pair = torch.nn.functional.interpolate(pair, size=(big, big), mode="bilinear", align_corners=False)
    out = []
    for i in range(pair.shape[0]):
        top, left = (int(v) for v in torch.randint(0, big - s + 1, (2,), generator=generator))
        p = pair[i, :, top:top + s, left:left + s]
        if cfg.mirror and bool(torch.rand((), generator=generator) < 0.5):
            p = p.flip(-1)
        out.append(p)
    pair = torch.stack(out)
    return pair[:, :3].contiguous(), pair[:, 3:].contiguous()


@dataclass
class Trainer:
    """The student being trained on ``sources`` → ``targets`` ([N, 3, S, S] in [−1, 1])."""

    cfg: StudentConfig
    sources: torch.Tensor
    targets: torch.Tensor
    total_steps: int
    lpips: object | None = None
    device: str = "cpu"
    precision: str = "auto"
    step: int = 0
    history: list = field(default_factory=list)
    run_info: dict = field(default_factory=dict)  # what the run trains on (dataset, held-out share), checkpointed

    def __post_init__(self):
        if self.sources.shape != self.targets.shape or self.sources.dim() != 4 or self.sources.shape[1] != 3:
            raise EditorError("sources and targets must both be [N, 3, S, S]")
        if self.sources.shape[-1] != self.cfg.size or self.sources.shape[-2] != self.cfg.size:
            raise EditorError(f"pairs are {tuple(self.sources.shape[-2:])} but the student trains at {self.cfg.size}")
        torch.manual_seed(self.cfg.seed)
        self.generator = UNetGenerator(self.cfg).to(self.device)
        self.discriminator = PatchDiscriminator(self.cfg).to(self.device)
        if self.lpips is not None:
            self.lpips = self.lpips.to(self.device)
        self.amp_device = str(self.device).split(":")[0]
        self.amp = resolve_precision(self.precision, self.device) == "bf16"
        betas = (self.cfg.beta1, 0.999)
        self.opt_g = torch.optim.Adam(self.generator.parameters(), lr=self.cfg.lr, betas=betas)
        self.opt_d = torch.optim.Adam(self.discriminator.parameters(), lr=self.cfg.lr, betas=betas)
        self.sampler = torch.Generator().manual_seed(self.cfg.seed)

    # --- one step --------------------------------------------------------------------------------------
    def train_step(self) -> dict:
        self._in_step = True  # state is inconsistent until the step ends: no checkpoint may be taken meanwhile
        n = self.sources.shape[0]
        idx = torch.randint(0, n, (min(self.cfg.batch, n),), generator=self.sampler)
        x, y = augment(self.sources[idx], self.targets[idx], self.cfg, self.sampler)
        x, y = x.to(self.device), y.to(self.device)  # [B, 3, S, S]
        lr = lr_at(self.step, self.total_steps, self.cfg.lr)
        for opt in (self.opt_g, self.opt_d):
            for group in opt.param_groups:
                group["lr"] = lr
        with torch.autocast(self.amp_device, dtype=torch.bfloat16, enabled=self.amp):
            fake = self.generator(x)
            # (1) discriminator: LSGAN, real pairs → 1, generated pairs → 0
            self.opt_d.zero_grad(set_to_none=True)
            loss_d = 0.5 * ((self.discriminator(x, y).float() - 1) ** 2).mean() + \
                0.5 * (self.discriminator(x, fake.detach()).float() ** 2).mean()
        loss_d.backward()
        self.opt_d.step()
        # (2) generator: fool the discriminator and stay close to the teacher's edit
        self.opt_g.zero_grad(set_to_none=True)
        with torch.autocast(self.amp_device, dtype=torch.bfloat16, enabled=self.amp):
            loss_gan = ((self.discriminator(x, fake).float() - 1) ** 2).mean()
            loss_l1 = (fake.float() - y).abs().mean()
        loss_g = loss_gan + self.cfg.lambda_l1 * loss_l1
        record = {"step": self.step + 1, "lr": lr, "loss_d": loss_d.item(), "loss_gan": loss_gan.item(),
                  "loss_l1": loss_l1.item()}
        if self.lpips is not None and self.cfg.lambda_lpips > 0:
            loss_lp = self.lpips.distance(fake, y).mean()
            loss_g = loss_g + self.cfg.lambda_lpips * loss_lp
            record["loss_lpips"] = loss_lp.item()
        loss_g.backward()
        self.opt_g.step()
        self.step += 1
        self.history.append(record)
        self._in_step = False
        return record

    def run(self, steps: int | None = None, *, out_dir: Path | None = None, checkpoint_every: int = 0,
            progress: bool = False) -> list[dict]:
        """Train up to ``total_steps`` (or ``steps`` more); checkpoints to ``out_dir`` as it goes and on Ctrl-C.

        Ctrl-C (SIGINT, in the main thread) is deferred to the end of the current step, which is then
        checkpointed; it raises :class:`TrainingInterrupted` (a ``KeyboardInterrupt``) saying at which step."""
        end = self.total_steps if steps is None else min(self.total_steps, self.step + steps)
        saved = None
        self._in_step, self._stop = False, False
        previous = None
        if threading.current_thread() is threading.main_thread() \
                and signal.getsignal(signal.SIGINT) is signal.default_int_handler:
            def deferred(signum, frame):
                if self._stop:  # a second Ctrl-C: stop now (the last checkpoint stays)
                    signal.default_int_handler(signum, frame)
                self._stop = True

            previous = signal.signal(signal.SIGINT, deferred)
        try:
            with progress_bar(end - self.step, "training student", enabled=progress, unit="step") as bar:
                try:
                    while self.step < end:
                        rec = self.train_step()
                        bar.update()
                        bar.set_postfix(l1=f"{rec['loss_l1']:.4f}", d=f"{rec['loss_d']:.3f}")
                        if out_dir is not None and (self._stop or checkpoint_every
                                                    and self.step % checkpoint_every == 0):
                            self.save(out_dir)
                            saved = self.step
                        if self._stop:
                            raise KeyboardInterrupt
                except KeyboardInterrupt:
                    if out_dir is not None and saved != self.step and not self._in_step:
                        self.save(out_dir)  # between steps (e.g. before the first): a consistent state
                        saved = self.step
                    if saved is None and out_dir is not None and (Path(out_dir) / CHECKPOINT).is_file():
                        try:
                            saved = read_checkpoint(out_dir, tensors=False)[0]["step"]
                        except EditorError:
                            saved = None
                    raise TrainingInterrupted(saved if out_dir is not None else None, self.total_steps,
                                              out_dir) from None
            if out_dir is not None:
                self.save(out_dir)
        finally:
            if previous is not None:
                signal.signal(signal.SIGINT, previous)
        return self.history

    # --- checkpoints -----------------------------------------------------------------------------------
    def save(self, out_dir: Path) -> Path:
        from safetensors.torch import save_file  # lazy: safetensors

        tensors = {f"generator/{k}": v.detach().cpu().clone() for k, v in self.generator.state_dict().items()}
        tensors.update({f"discriminator/{k}": v.detach().cpu().clone()
                        for k, v in self.discriminator.state_dict().items()})
        og, og_meta = flatten_optimizer("opt_g", self.opt_g)
        od, od_meta = flatten_optimizer("opt_d", self.opt_d)
        tensors.update(og)
        tensors.update(od)
        tensors["sampler_state"] = self.sampler.get_state()
        meta = {"step": self.step, "total_steps": self.total_steps, "config": self.cfg.to_dict(), "opt_g": og_meta,
                "opt_d": od_meta, "history": self.history, "run": self.run_info,
                "precision": "bf16" if self.amp else "fp32"}
        path = Path(out_dir) / CHECKPOINT
        atomic_write(path, writer=lambda tmp: save_file(tensors, str(tmp),
                                                        metadata={"p2pz": json.dumps(meta)}))
        return path

    @classmethod
    def resume(cls, out_dir: Path, sources: torch.Tensor, targets: torch.Tensor, lpips=None,
               device: str = "cpu", precision: str = "auto") -> "Trainer":
        """The trainer exactly as the last checkpoint in ``out_dir`` left it."""
        meta, tensors = read_checkpoint(out_dir)
        path = Path(out_dir) / CHECKPOINT
        try:
            trainer = cls(checkpointed_config(meta), sources, targets, meta["total_steps"], lpips=lpips,
                          device=device, precision=precision)
            trainer.generator.load_state_dict({k.split("/", 1)[1]: v for k, v in tensors.items()
                                               if k.startswith("generator/")})
            trainer.discriminator.load_state_dict({k.split("/", 1)[1]: v for k, v in tensors.items()
                                                   if k.startswith("discriminator/")})
            restore_optimizer("opt_g", trainer.opt_g, tensors, meta["opt_g"])
            restore_optimizer("opt_d", trainer.opt_d, tensors, meta["opt_d"])
            trainer.sampler.set_state(tensors["sampler_state"])
        except EditorError:
            raise
        except Exception as exc:  # noqa: BLE001 — tensors missing or of other shapes than the configuration's
            raise _unreadable(path, exc) from None
        trainer.run_info = dict(meta.get("run") or {})
        trainer.step, trainer.history = meta["step"], meta["history"]
        return trainer

    @torch.no_grad()
    def predict(self, sources: torch.Tensor) -> torch.Tensor:
        self.generator.eval()
        try:
            return self.generator(sources.to(self.device)).float().cpu()
        finally:
            self.generator.train()


OPTION_NAMES = {"size": "--size", "base_channels": "--width", "depth": "--depth", "batch": "--batch",
                "seed": "--seed", "lambda_lpips": "--lambda-lpips"}
DEFAULT_STEPS = 2000
DEFAULT_HELD_OUT = 0.1


def _resume_check(out: Path, meta: dict, options: dict, steps: int | None, held_out: float | None,
                  lpips: bool, precision: str, dataset: str) -> None:
    """Refuse to resume a checkpoint with other settings than it holds (they would silently not apply, or
    change the run half-way): each differing option is named with the checkpoint's value."""
    cfg, run = meta["config"], meta.get("run") or {}
    differ = [f"{OPTION_NAMES.get(k, k)} {cfg.get(k)}" for k, v in options.items() if k in cfg and cfg[k] != v]
    if steps is not None and steps != meta["total_steps"]:
        differ.append(f"--steps {meta['total_steps']}")
    if held_out is not None and "held_out" in run and held_out != run["held_out"]:
        differ.append(f"--held-out {run['held_out']}")
    if lpips != (cfg.get("lambda_lpips", 0.0) > 0):
        differ.append("--lpips-weights FILE" if not lpips else "no --lpips-weights")
    if "precision" in meta and precision != meta["precision"]:
        differ.append(f"--precision {meta['precision']}")
    if differ:
        raise EditorError(f"the checkpoint in {out} (step {meta['step']} of {meta['total_steps']}) was trained with "
                          f"{', '.join(differ)}; resume with those (or without these options), or start a new run "
                          "with --force")
    if run.get("dataset_sha256") not in (None, dataset):
        raise EditorError(f"the dataset's kept pairs changed since the checkpoint in {out} was written; resume on "
                          "the same dataset, or start a new run with --force")


def train_dataset(dataset: Path, out: Path, cfg: StudentConfig | None = None, steps: int | None = None, *,
                  options: dict | None = None, held_out: float | None = None, resume: bool = False,
                  force: bool = False, checkpoint_every: int = 200, progress: bool = False, lpips=None,
                  device: str = "cpu", precision: str = "auto", structure=None) -> dict:
    """Train on a pairs dataset (the last ``held_out`` share of its kept pairs, by id, held out) → a summary with
    the trainer, held-out metrics and the files written to ``out``.

    The configuration is ``cfg``, or the defaults for the dataset's size (:func:`default_width`,
    :func:`default_depth`) with ``options`` (StudentConfig fields) over them. ``resume`` continues the checkpoint
    in ``out`` and refuses ``options``, ``steps`` or ``held_out`` other than it holds (None: the checkpoint's);
    without ``resume`` an existing checkpoint is refused unless ``force``."""
    out = Path(out)
    options = dict(options or {})
    mode = resolve_precision(precision, device)
    dataset_sha = dataset_sha256(dataset)
    meta = None
    if resume:
        meta = read_checkpoint(out, tensors=False)[0]
        _resume_check(out, meta, options, steps, held_out, lpips is not None, mode, dataset_sha)
        cfg = checkpointed_config(meta)
        held_out = (meta.get("run") or {}).get("held_out", DEFAULT_HELD_OUT if held_out is None else held_out)
    else:
        if (out / CHECKPOINT).is_file() and not force:
            try:
                held = read_checkpoint(out, tensors=False)[0]
                what = f"a checkpoint (step {held['step']} of {held['total_steps']})"
            except EditorError:
                what = "an unreadable checkpoint"
            raise EditorError(f"{out} already holds {what}; continue it with --resume, or start over (replacing "
                              "it) with --force")
        if cfg is None:
            size = options.get("size") or read_manifest(dataset)["size"]
            width = options.get("base_channels") or default_width(size)
            base = {"size": size, "base_channels": width, "depth": default_depth(size), "disc_channels": width}
            cfg = StudentConfig(**{**base, **options})
        held_out = DEFAULT_HELD_OUT if held_out is None else held_out
        steps = DEFAULT_STEPS if steps is None else steps
    sources, targets, ids = load_pairs(dataset, cfg.size)
    order = sorted(range(len(ids)), key=lambda i: ids[i])
    n_held = int(round(len(ids) * held_out)) if len(ids) > 1 else 0
    train_idx, held_idx = order[: len(ids) - n_held], order[len(ids) - n_held:]
    tx, ty = sources[train_idx], targets[train_idx]
    hx, hy = sources[held_idx], targets[held_idx]
    trainer = (Trainer.resume(out, tx, ty, lpips=lpips, device=device, precision=precision) if resume
               else Trainer(cfg, tx, ty, steps, lpips=lpips, device=device, precision=precision))
    trainer.run_info = {"dataset_sha256": dataset_sha, "held_out": held_out}
    trainer.run(out_dir=out, checkpoint_every=checkpoint_every, progress=progress)
    metrics = held_out_metrics(trainer, hx, hy, structure)
    write_samples(out / "samples.png", trainer, hx if len(hx) else tx, hy if len(hy) else ty)
    write_loss_plot(out / "losses.png", trainer.history)
    return {"trainer": trainer, "metrics": metrics, "dataset_sha256": dataset_sha,
            "direction": read_manifest(dataset)["direction"], "train_pairs": len(train_idx),
            "held_out_pairs": len(held_idx), "held_out": held_out, "precision": mode}
