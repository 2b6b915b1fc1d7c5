"""A bring-your-own encoder for the tests: any torch module behind curlrl's ForeignEncoder protocol."""
import torch
from torch import nn

from curlrl.encoder import ForeignEncoder


class MeanColour(nn.Module):
    """Features = the mean of each input channel and of its square (a fixed, known function)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x.mean((2, 3)), (x ** 2).mean((2, 3))], dim=1)


def make() -> ForeignEncoder:
    return ForeignEncoder(MeanColour(), obs_shape=(9, 56, 56), feature_dim=18, name="mean colour")


def make_plain() -> nn.Module:
    module = MeanColour()
    module.obs_shape, module.feature_dim = (9, 56, 56), 18
    return module


def make_wrong() -> int:
    return 3
