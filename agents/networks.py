"""SAC networks on encoder features: a tanh-Gaussian actor and twin Q functions."""
from __future__ import annotations

import math

import torch
from torch import nn

from curlrl.encoder import orthogonal_init


def mlp(in_dim: int, hidden_dim: int, out_dim: int) -> nn.Sequential:
    """Two hidden ReLU layers of ``hidden_dim`` (1024 in CURL)."""
    return nn.Sequential(nn.Linear(in_dim, hidden_dim), nn.ReLU(), nn.Linear(hidden_dim, hidden_dim),
                         nn.ReLU(), nn.Linear(hidden_dim, out_dim))


class Actor(nn.Module):
    """Tanh-squashed Gaussian policy on (B, feature_dim) features.

    ``log_std`` is squashed by tanh into [log_std_min, log_std_max] (-10, 2 in CURL).
    """

    def __init__(self, feature_dim: int, action_dim: int, hidden_dim: int = 1024,
                 log_std_min: float = -10.0, log_std_max: float = 2.0) -> None:
        super().__init__()
        self.net = mlp(feature_dim, hidden_dim, 2 * action_dim)
        self.log_std_min, self.log_std_max = log_std_min, log_std_max
        self.apply(orthogonal_init)

    def forward(self, z: torch.Tensor, sample: bool = True, noise: torch.Tensor | None = None):
        """Returns (mean action, sampled action, log-prob of the sample (B, 1), log_std).

        Actions are in [-1, 1]. With ``sample=False`` the sample and log-prob are None.
        ``noise`` (B, A) standard normal draws for the sample; None draws them here
        (``torch.randn_like`` of the mean: the same draws as passing ``torch.randn(B, A)``).
        """
        mu, log_std = self.net(z).chunk(2, dim=-1)
        log_std = self.log_std_min + 0.5 * (self.log_std_max - self.log_std_min) * (torch.tanh(log_std) + 1)
        if not sample:
            return torch.tanh(mu), None, None, log_std
        if noise is None:
            noise = torch.randn_like(mu)
        u = mu + noise * log_std.exp()
        log_prob = (-0.5 * noise.pow(2) - log_std).sum(-1, keepdim=True) - 0.5 * math.log(2 * math.pi) * mu.shape[-1]
        pi = torch.tanh(u)
        # change of variables for tanh: log|d tanh(u)/du| = log(1 - tanh(u)^2)
        log_prob = log_prob - torch.log(torch.relu(1 - pi.pow(2)) + 1e-6).sum(-1, keepdim=True)
        return torch.tanh(mu), pi, log_prob, log_std


class TwinQ(nn.Module):
    """Two independent Q(z, a) MLPs; returns both (B, 1) values."""

    def __init__(self, feature_dim: int, action_dim: int, hidden_dim: int = 1024) -> None:
        super().__init__()
        self.q1 = mlp(feature_dim + action_dim, hidden_dim, 1)
        self.q2 = mlp(feature_dim + action_dim, hidden_dim, 1)
        self.apply(orthogonal_init)

    def forward(self, z: torch.Tensor, action: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        za = torch.cat([z, action], dim=-1)
        return self.q1(za), self.q2(za)
