"""Divergence checks: a non-finite loss or parameter stops a run before its next checkpoint.

Policy (both jobs): stop. ``Trainer`` checks the per-episode means of the agent's metrics
(device tensors it reads once per episode anyway, so no extra host sync per update) and,
when one is NaN or infinite, finds the first bad update of the episode; ``Pretrainer`` does
the same with its log window. Before any checkpoint write both check that every parameter
is finite (one host sync per checkpoint). Either way a :class:`DivergenceError` names the
update and the loss (or parameter), and the last checkpoint on disk, written before it, is
left as it is: ``--resume`` continues from there (with, say, a lower learning rate).
"""
from __future__ import annotations

import math
from typing import Iterable, Mapping, Sequence

import torch

from curlrl.errors import DivergenceError


def first_nonfinite(window: Sequence[Mapping[str, torch.Tensor]],
                    means: Mapping[str, float]) -> tuple[int, str, float] | None:
    """``(index in window, key, value)`` of the first non-finite metric of ``window`` (one dict
    per update), or None when every mean in ``means`` is finite (then nothing is read)."""
    bad_keys = [k for k, v in means.items() if not math.isfinite(v)]
    if not bad_keys:
        return None
    first: tuple[int, str, float] | None = None
    for key in bad_keys:  # the failure path only: reads the window's values of the bad keys
        idx = [i for i, m in enumerate(window) if key in m]
        values = torch.stack([torch.as_tensor(window[i][key]) for i in idx]).float().cpu()
        hits = (~torch.isfinite(values)).nonzero()
        if len(hits):
            j = int(hits[0])
            if first is None or idx[j] < first[0]:
                first = (idx[j], key, float(values[j]))
    if first is None:  # a mean overflowed although every value is finite
        key = bad_keys[0]
        return len(window) - 1, key, means[key]
    return first


def first_nonfinite_parameter(named: Iterable[tuple[str, torch.Tensor]]) -> str | None:
    """The name of the first floating-point tensor holding a NaN or infinity, or None (one sync)."""
    named = [(n, t) for n, t in named if t.is_floating_point()]
    if not named:
        return None
    ok = torch.stack([torch.isfinite(t.detach()).all().to(named[0][1].device) for _, t in named])
    if bool(ok.all()):
        return None
    return named[int((~ok).nonzero()[0])][0]


def first_nonfinite_in_modules(modules: Mapping[str, torch.nn.Module],
                               extra: Iterable[tuple[str, torch.Tensor]] = ()) -> str | None:
    """:func:`first_nonfinite_parameter` over every tensor of ``modules``' state dicts (named
    ``module.key``) and ``extra``: what a job checks before it writes a checkpoint."""
    named = [(f"{name}.{k}", t) for name, m in modules.items() for k, t in m.state_dict().items()]
    return first_nonfinite_parameter([*named, *extra])


def diverged(what: str, where: str, kept: str) -> DivergenceError:
    """``critic_loss is nan at update 1234 (env step 9872); stopped without overwriting the
    checkpoint of env step 8000``."""
    tail = ("stopped before any checkpoint was written" if kept == "no checkpoint"
            else f"stopped without overwriting {kept}")
    return DivergenceError(f"{what} at {where}; {tail}")
