"""Optimizer state in a safetensors checkpoint (both trainers: the student's GAN, the shapes model): every state
tensor under ``PREFIX/INDEX/NAME``, the parameter groups as JSON metadata — no pickle anywhere, so a checkpoint
from elsewhere can be read safely."""

from __future__ import annotations

import torch


def flatten_optimizer(prefix: str, opt: torch.optim.Optimizer) -> tuple[dict, dict]:
    """(tensors, JSON-able metadata) of an optimizer's state."""
    state = opt.state_dict()
    tensors = {}
    for idx, entry in state["state"].items():
        for name, value in entry.items():
            tensors[f"{prefix}/{idx}/{name}"] = torch.as_tensor(value).detach().cpu().clone()
    return tensors, {"param_groups": state["param_groups"]}


def restore_optimizer(prefix: str, opt: torch.optim.Optimizer, tensors: dict, meta: dict) -> None:
    """Load what :func:`flatten_optimizer` wrote back into ``opt``."""
    state: dict = {}
    for key, value in tensors.items():
        if key.startswith(prefix + "/"):
            _, idx, name = key.split("/", 2)
            state.setdefault(int(idx), {})[name] = value
    opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
