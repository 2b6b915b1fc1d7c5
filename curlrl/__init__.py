"""curlrl: contrastive representations (CURL) for sample-efficient pixel RL.

The core exported here is pure torch/numpy (no gymnasium, no dm_control, no agent):
encoder, augmentation, the CURL head with its InfoNCE loss, the family of contrastive /
self-supervised objectives (``curlrl.objectives``: ``build_objective``), EMA updates and the replay
buffers (host and device storage). Agents live in ``curlrl.agents``, environments in ``curlrl.envs``.

Names are imported lazily, so ``import curlrl.envs`` does not load torch.
"""
from importlib import import_module

__version__ = "0.1.0"

_EXPORTS = {
    "PixelEncoder": "curlrl.encoder",
    "CurlHead": "curlrl.contrastive",
    "Objective": "curlrl.objectives",
    "build_objective": "curlrl.objectives",
    "ObjectiveConfig": "curlrl.options",
    "random_crop": "curlrl.augment",
    "center_crop": "curlrl.augment",
    "ema_update": "curlrl.ema",
    "ReplayBuffer": "curlrl.replay",
    "DeviceReplayBuffer": "curlrl.replay",
    "CurlrlError": "curlrl.errors",
}
__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'curlrl' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + __all__)
