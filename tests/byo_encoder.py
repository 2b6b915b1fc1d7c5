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


class SmallConvBN(nn.Module):
    """A small conv net with a BatchNorm whose running statistics are not the defaults, so
    train mode (which would update them and normalise by batch statistics) shows."""

    def __init__(self, channels: int = 9) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, 8, 5, stride=4)
        self.bn = nn.BatchNorm2d(8)
        self.pool = nn.AdaptiveAvgPool2d(2)
        with torch.no_grad():
            self.bn.running_mean.fill_(0.1)
            self.bn.running_var.fill_(0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(torch.relu(self.bn(self.conv(x)))).flatten(1)


def make_conv() -> ForeignEncoder:
    """(9, 56, 56) -> 32 features: the tiny train config's crop (tests/offline_data.py)."""
    return ForeignEncoder(SmallConvBN(), obs_shape=(9, 56, 56), feature_dim=32, mean=(0.5, 0.5, 0.5),
                          std=(0.25, 0.25, 0.25), name="small conv")
