"""The SB3 features extractor: SAC runs a few steps on a tiny fake image env with it."""
from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

sb3 = pytest.importorskip("stable_baselines3")

from curlrl.encoder import PixelEncoder  # noqa: E402
from curlrl.errors import ConfigError  # noqa: E402


class FakeImageEnv(gym.Env):
    """Random (6, 20, 20) uint8 frames, 1-d action, 8-step episodes."""

    observation_space = gym.spaces.Box(0, 255, (6, 20, 20), dtype=np.uint8)
    action_space = gym.spaces.Box(-1.0, 1.0, (1,), dtype=np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return self.observation_space.sample(), {}

    def step(self, action):
        self.t += 1
        return self.observation_space.sample(), float(action[0]), False, self.t >= 8, {}


@pytest.fixture
def export(tmp_path):
    torch.manual_seed(0)
    enc = PixelEncoder((6, 16, 16), feature_dim=8, num_layers=2, num_filters=4)
    path = tmp_path / "enc.safetensors"
    enc.save_pretrained(path, source="test")
    return path, enc


@pytest.mark.parametrize("freeze", [True, False])
def test_sac_runs_with_curl_extractor(export, freeze):
    from stable_baselines3 import SAC

    from curlrl.sb3 import CurlFeaturesExtractor

    path, enc = export
    kwargs = dict(features_extractor_class=CurlFeaturesExtractor,
                  features_extractor_kwargs=dict(encoder=str(path), freeze=freeze), net_arch=[16])
    model = SAC("CnnPolicy", FakeImageEnv(), policy_kwargs=kwargs, buffer_size=100, learning_starts=4,
                batch_size=4, train_freq=1, gradient_steps=1, seed=0, device="cpu")
    model.learn(total_timesteps=12)
    extractor = model.actor.features_extractor
    assert isinstance(extractor, CurlFeaturesExtractor) and extractor.features_dim == 8
    trained = extractor.encoder.state_dict()
    same = all(torch.equal(trained[k], v) for k, v in enc.state_dict().items())
    assert same == freeze  # frozen: the pretrained weights are untouched; else fine-tuned
    action, _ = model.predict(FakeImageEnv().observation_space.sample(), deterministic=True)
    assert action.shape == (1,)


def test_extractor_matches_curlrl_normalisation(export):
    from curlrl.augment import center_crop
    from curlrl.sb3 import CurlFeaturesExtractor

    path, enc = export
    ext = CurlFeaturesExtractor(FakeImageEnv.observation_space, str(path))
    obs = torch.randint(0, 256, (3, 6, 20, 20), dtype=torch.uint8)
    # SB3 hands the extractor obs / 255 (normalize_images=True); curlrl feeds uint8.
    torch.testing.assert_close(ext(obs.float() / 255.0), enc.eval()(center_crop(obs, 16)))


def test_extractor_rejects_other_observation_shapes(export):
    from curlrl.sb3 import CurlFeaturesExtractor

    with pytest.raises(ConfigError, match="does not fit the encoder"):
        CurlFeaturesExtractor(gym.spaces.Box(0, 255, (9, 20, 20), dtype=np.uint8), str(export[0]))
