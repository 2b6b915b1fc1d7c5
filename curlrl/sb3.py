"""A Stable-Baselines3 features extractor around a pretrained curlrl :class:`PixelEncoder`.

Install with ``pip install 'curlrl[sb3]'``. Usage::

    from stable_baselines3 import SAC
    from curlrl.sb3 import CurlFeaturesExtractor

    policy_kwargs = dict(features_extractor_class=CurlFeaturesExtractor,
                         features_extractor_kwargs=dict(encoder="encoder.safetensors", freeze=True))
    model = SAC("CnnPolicy", env, policy_kwargs=policy_kwargs)

The env's observations must be channels-first uint8 frame stacks (3k, H, W) with
``3k == obs_shape[0]`` of the export and H, W >= its crop size, e.g. (9, 100, 100) for an
encoder of (9, 84, 84). Keep SB3's ``normalize_images=True`` (the default): SB3 then
divides by 255, the same "uint8/255" normalisation the encoder was trained with. The
extractor centre-crops to the encoder's input size, as curlrl does at evaluation.
"""
from __future__ import annotations

import os

import gymnasium as gym
import torch
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor

from curlrl.augment import center_crop
from curlrl.encoder import PixelEncoder
from curlrl.errors import ConfigError


class CurlFeaturesExtractor(BaseFeaturesExtractor):
    """(B, 3k, H, W) observations -> centre crop -> pretrained encoder -> (B, feature_dim).

    Args:
        observation_space: the env's Box observation space (channels first).
        encoder: a ``.safetensors`` export (``curlrl export``) or a :class:`PixelEncoder`.
        freeze: keep the encoder fixed (no gradients, eval mode); False fine-tunes it
            with the SB3 losses.
    """

    def __init__(self, observation_space: gym.spaces.Box, encoder: str | os.PathLike | PixelEncoder,
                 freeze: bool = True) -> None:
        enc = encoder if isinstance(encoder, PixelEncoder) else PixelEncoder.from_pretrained(encoder)
        c, size, _ = enc.obs_shape
        shape = tuple(observation_space.shape)
        if len(shape) != 3 or shape[0] != c or min(shape[1:]) < size:
            raise ConfigError(f"observation space {shape} does not fit the encoder: expected channels-first "
                              f"({c}, H, W) with H, W >= {size}")
        super().__init__(observation_space, enc.feature_dim)
        self.encoder, self.crop_size, self.freeze = enc, size, freeze
        if freeze:
            self.encoder.requires_grad_(False)

    def train(self, mode: bool = True) -> "CurlFeaturesExtractor":
        super().train(mode)
        if self.freeze:
            self.encoder.eval()
        return self

    def forward(self, observations: torch.Tensor) -> torch.Tensor:
        x = center_crop(observations, self.crop_size)
        if self.freeze:
            with torch.no_grad():
                return self.encoder(x)
        return self.encoder(x)
