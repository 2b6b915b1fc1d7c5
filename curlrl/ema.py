"""Exponential moving average of parameters (momentum / target networks)."""
from __future__ import annotations

import torch
from torch import nn


@torch.no_grad()
def ema_update(target: nn.Module, online: nn.Module, tau: float) -> None:
    """In place: ``target <- (1 - tau) * target + tau * online`` for every parameter.

    Buffers (e.g. running statistics) are copied as they are. ``tau`` in [0, 1].
    """
    t_params, o_params = list(target.parameters()), list(online.parameters())
    if len(t_params) != len(o_params):
        raise ValueError("ema_update: target and online modules have different parameters")
    torch._foreach_lerp_(t_params, o_params, tau)
    for tb, ob in zip(target.buffers(), online.buffers()):
        tb.copy_(ob)
