"""The global random generators' states (torch CPU and CUDA, Python), as checkpoints hold them."""
from __future__ import annotations

import json
import random
from typing import Any

import torch


def global_rng_state() -> dict[str, Any]:
    """The global torch (CPU and, when visible, CUDA) and Python RNG states, as checkpoints hold them."""
    state = {"torch": torch.get_rng_state(), "python": json.dumps(random.getstate())}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_global_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`global_rng_state` captured (CUDA only where it was saved and is visible)."""
    torch.set_rng_state(state["torch"])
    py = json.loads(state["python"])
    random.setstate((py[0], tuple(py[1]), py[2]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
