"""The CURL head: a bilinear similarity and the InfoNCE loss over a batch."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class CurlHead(nn.Module):
    """Bilinear InfoNCE (CURL, Laskin et al. 2020).

    ``logits[i, j] = z_anchor[i] @ W @ z_positive[j]`` minus the row maximum (for
    numerical stability; softmax is unchanged). The positive of anchor ``i`` is key
    ``i``, every other key in the batch is a negative.

    Args:
        feature_dim: size of the encoder features; ``W`` is (feature_dim, feature_dim).
    """

    def __init__(self, feature_dim: int) -> None:
        super().__init__()
        self.W = nn.Parameter(torch.rand(feature_dim, feature_dim))

    def logits(self, z_anchor: torch.Tensor, z_positive: torch.Tensor) -> torch.Tensor:
        """(B, D) anchors and (B, D) keys -> (B, B) logits with each row's max at 0."""
        logits = z_anchor @ (self.W @ z_positive.T)
        return logits - logits.max(dim=1, keepdim=True).values

    def loss(self, z_anchor: torch.Tensor, z_positive: torch.Tensor) -> torch.Tensor:
        """Mean cross-entropy of :meth:`logits` with labels ``arange(B)`` (a scalar)."""
        logits = self.logits(z_anchor, z_positive)
        labels = torch.arange(logits.shape[0], device=logits.device)
        return F.cross_entropy(logits, labels)

    @torch.no_grad()
    def accuracy(self, z_anchor: torch.Tensor, z_positive: torch.Tensor) -> float:
        """Top-1 contrastive accuracy: fraction of anchors whose own key scores highest."""
        return self.accuracy_tensor(z_anchor, z_positive).item()

    @torch.no_grad()
    def accuracy_tensor(self, z_anchor: torch.Tensor, z_positive: torch.Tensor) -> torch.Tensor:
        """:meth:`accuracy` as a 0-dim tensor on the features' device (no wait for a GPU)."""
        pred = self.logits(z_anchor, z_positive).argmax(dim=1)
        return (pred == torch.arange(len(pred), device=pred.device)).float().mean()
