"""The contrastive and self-supervised objectives on the encoder, one module each.

Pure torch: no RL, no environment. Each objective is an :class:`Objective`, an
``nn.Module`` with one call shape for two batches of views of the same B samples::

    loss, metrics = objective(a, b)                       # a: online features of view a (B, D)
    loss, metrics = objective(a, b, a_key=..., b_online=..., episode=..., time=...)

``a`` always comes from the online encoder (with gradient). Where ``b`` comes from is
the objective's class attribute :attr:`Objective.keys`:

``"momentum"``  from the momentum (EMA) key encoder, without gradient: curl, moco, byol;
``"online"``    from the online encoder with gradient (siamese): every other objective.

BYOL is symmetrised (:attr:`Objective.symmetric`): it also takes ``b_online`` (the online
features of view b) and ``a_key`` (the momentum encoder's features of view a). supcon
(:attr:`Objective.needs_groups`) takes each sample's ``episode`` and ``time`` (B,) so that
frames of one episode within a window are positives of each other; the harness draws its
batches as groups of frames of one episode window.

An objective owns what it needs (CURL's W, projection heads, BYOL's predictor, SwAV's
prototypes, MoCo's and SwAV's queues) as submodules and buffers, so ``state_dict`` holds
everything a resume needs (a queue resumes in FIFO order). Objectives with a momentum copy
of a head (moco, byol) EMA it in :meth:`Objective.momentum_update`, which the harness
calls whenever it EMAs the key encoder, at the same rate. The metrics are detached 0-dim
tensors on the features' device (no GPU wait).

The formulas are the papers' (restated in each class); ``docs/objectives.md`` has the
table and ``tests/test_objectives.py`` checks each against a plain re-statement.
"""
from __future__ import annotations

import copy
import difflib
import math
from dataclasses import fields
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from curlrl.contrastive import CurlHead
from curlrl.ema import ema_update
from curlrl.errors import ConfigError
from curlrl.options import OBJECTIVE_NAMES, ObjectiveConfig

Metrics = dict[str, torch.Tensor]


class Objective(nn.Module):
    """Base class: ``forward(a, b, ...) -> (scalar loss, metrics)`` (module docstring)."""

    name: ClassVar[str] = ""
    keys: ClassVar[str] = "online"        # where view b's features come from: "momentum" or "online"
    symmetric: ClassVar[bool] = False     # also takes b_online and a_key (BYOL)
    needs_groups: ClassVar[bool] = False  # takes episode and time (supcon)

    def forward(self, a: torch.Tensor, b: torch.Tensor, *, a_key: torch.Tensor | None = None,
                b_online: torch.Tensor | None = None, episode: torch.Tensor | None = None,
                time: torch.Tensor | None = None) -> tuple[torch.Tensor, Metrics]:
        raise NotImplementedError

    @torch.no_grad()
    def momentum_update(self, tau: float) -> None:
        """EMA of the objective's momentum heads toward the online ones (none by default)."""

    def _check_pair(self, a: torch.Tensor, b: torch.Tensor) -> None:
        if a.ndim != 2 or a.shape != b.shape:
            raise ValueError(f"objective {self.name}: expected two (B, D) feature batches of one shape, got "
                             f"{tuple(a.shape)} and {tuple(b.shape)}")
        if a.shape[0] < 2:
            raise ValueError(f"objective {self.name}: needs a batch of at least 2 samples, got {a.shape[0]}")


def _accuracy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return (logits.detach().argmax(dim=1) == labels).float().mean()


class MLPHead(nn.Sequential):
    """Linear -> [BatchNorm] -> ReLU -> Linear: the projection head of SimCLR / MoCo v2
    (no BatchNorm) and the projector / predictor of BYOL, Barlow Twins and SwAV (BatchNorm)."""

    def __init__(self, in_dim: int, hidden: int, out_dim: int, batchnorm: bool) -> None:
        layers: list[nn.Module] = [nn.Linear(in_dim, hidden)]
        if batchnorm:
            layers.append(nn.BatchNorm1d(hidden))
        layers += [nn.ReLU(inplace=True), nn.Linear(hidden, out_dim)]
        super().__init__(*layers)


def _head(in_dim: int, hidden: int, out_dim: int, batchnorm: bool) -> nn.Module:
    """A projection head, or the identity for ``out_dim == 0``."""
    return MLPHead(in_dim, hidden, out_dim, batchnorm) if out_dim > 0 else nn.Identity()


# -- CPC / CURL -----------------------------------------------------------------------
class Curl(CurlHead, Objective):
    """``curl``: CURL's bilinear InfoNCE (:class:`curlrl.contrastive.CurlHead`), keys from the
    momentum encoder: ``logits[i, j] = a_i W b_j`` minus each row's max, cross-entropy with
    label i. Its state dict is CurlHead's (``W``), so older checkpoints load."""

    name, keys = "curl", "momentum"

    def __init__(self, feature_dim: int) -> None:
        CurlHead.__init__(self, feature_dim)

    def forward(self, a, b, **_):
        self._check_pair(a, b)
        logits = self.logits(a, b)
        labels = torch.arange(logits.shape[0], device=logits.device)
        return F.cross_entropy(logits, labels), {"accuracy": _accuracy(logits, labels)}


# -- SimCLR NT-Xent, with DCL / HCL -------------------------------------------------------
class InfoNCE(Objective):
    """``infonce``: SimCLR's NT-Xent (Chen et al. 2020) over 2B views.

    z = g(h) (optional MLP head g, shared by both views), L2-normalised; for each of the 2B
    views i with its positive p(i) (the other view of the same sample) and the 2B - 2 others
    as negatives: ``-log exp(s_ip/t) / (exp(s_ip/t) + Ng_i)``, averaged over all 2B views
    (both orders). Plain: ``Ng_i = sum_k exp(s_ik/t)``.

    ``tau_plus`` (DCL, Chuang et al. 2020), ``hard_beta`` (HCL, Robinson et al. 2021): with
    N = 2B - 2 negatives and weights ``w_k = exp(beta s_ik/t) / mean_k exp(beta s_ik/t)``
    (all 1 for beta = 0), ``Ng_i = max((sum_k w_k exp(s_ik/t) - N tau_plus exp(s_ip/t)) /
    (1 - tau_plus), N exp(-1/t))``.
    """

    name = "infonce"

    def __init__(self, feature_dim: int, temperature: float = 0.1, projection_dim: int = 64,
                 projection_hidden: int = 256, tau_plus: float | None = None, hard_beta: float | None = None) -> None:
        super().__init__()
        self.temperature = float(temperature)
        self.head = _head(feature_dim, projection_hidden, projection_dim, batchnorm=False)
        self.estimator = tau_plus is not None or hard_beta is not None
        self.tau_plus = float(tau_plus or 0.0)
        self.hard_beta = float(hard_beta or 0.0)

    def forward(self, a, b, **_):
        self._check_pair(a, b)
        n = a.shape[0]
        z = F.normalize(self.head(torch.cat([a, b])), dim=1)
        sim = z @ z.T / self.temperature                                   # (2B, 2B)
        idx = torch.arange(2 * n, device=z.device)
        pos_idx = (idx + n) % (2 * n)
        pos = sim[idx, pos_idx]
        neg_mask = torch.ones_like(sim, dtype=torch.bool)
        neg_mask[idx, idx] = False
        neg_mask[idx, pos_idx] = False
        neg = sim.masked_select(neg_mask).view(2 * n, 2 * n - 2)
        if not self.estimator:
            # log-sum-exp over the positive and the negatives: the cross-entropy with the positive as label
            logits = torch.cat([pos[:, None], neg], dim=1)
            loss = (torch.logsumexp(logits, dim=1) - pos).mean()
        else:
            count = neg.shape[1]
            if self.hard_beta:
                w = torch.softmax(self.hard_beta * neg, dim=1) * count     # exp(beta s) / mean exp(beta s)
                weighted = (w * neg.exp()).sum(dim=1)
            else:
                weighted = neg.exp().sum(dim=1)
            ng = (weighted - count * self.tau_plus * pos.exp()) / (1.0 - self.tau_plus)
            ng = torch.clamp(ng, min=count * math.exp(-1.0 / self.temperature))
            loss = (torch.log(pos.exp() + ng) - pos).mean()
        acc = (pos.detach()[:, None] > neg.detach()).all(dim=1).float().mean()
        return loss, {"accuracy": acc}


# -- MoCo v2 ----------------------------------------------------------------------------
class MoCo(Objective):
    """``moco``: MoCo v2 (He et al. 2019; Chen et al. 2020).

    Query ``q = normalize(g(a))``, key ``k = normalize(g_m(b))`` with b from the momentum
    encoder and g_m the momentum copy of the head g; negatives: a FIFO queue of the K most
    recent keys. ``-log exp(q.k+/t) / (exp(q.k+/t) + sum_j exp(q.queue_j/t))``. The batch's
    keys are enqueued after the loss (oldest overwritten first); ``queue`` and ``queue_ptr``
    are buffers, so a resume continues the same FIFO order.
    """

    name, keys = "moco", "momentum"

    def __init__(self, feature_dim: int, temperature: float = 0.2, projection_dim: int = 64,
                 projection_hidden: int = 256, queue_size: int = 4096) -> None:
        super().__init__()
        if queue_size < 1:
            raise ValueError(f"objective moco: queue_size must be >= 1, got {queue_size}")
        self.temperature = float(temperature)
        self.head = _head(feature_dim, projection_hidden, projection_dim, batchnorm=False)
        self.head_momentum = copy.deepcopy(self.head).requires_grad_(False)
        dim = projection_dim or feature_dim
        self.register_buffer("queue", F.normalize(torch.randn(queue_size, dim), dim=1))
        self.register_buffer("queue_ptr", torch.zeros((), dtype=torch.long))

    @torch.no_grad()
    def momentum_update(self, tau: float) -> None:
        ema_update(self.head_momentum, self.head, tau)

    @torch.no_grad()
    def enqueue(self, keys: torch.Tensor) -> None:
        """Write ``keys`` (B, dim) over the oldest entries, wrapping around the end."""
        size, n = self.queue.shape[0], keys.shape[0]
        slots = (self.queue_ptr + torch.arange(n, device=keys.device)) % size
        self.queue[slots] = keys.to(self.queue.dtype)
        self.queue_ptr.copy_((self.queue_ptr + n) % size)

    def forward(self, a, b, **_):
        self._check_pair(a, b)
        if a.shape[0] > self.queue.shape[0]:
            raise ValueError(f"objective moco: the queue ({self.queue.shape[0]} keys) is smaller than the batch "
                             f"({a.shape[0]})")
        q = F.normalize(self.head(a), dim=1)
        with torch.no_grad():
            k = F.normalize(self.head_momentum(b), dim=1)
        l_pos = (q * k).sum(dim=1, keepdim=True)
        l_neg = q @ self.queue.clone().T   # a copy: the queue is overwritten below, before backward
        logits = torch.cat([l_pos, l_neg], dim=1) / self.temperature
        labels = torch.zeros(len(q), dtype=torch.long, device=q.device)
        loss = F.cross_entropy(logits, labels)
        self.enqueue(k)
        return loss, {"accuracy": _accuracy(logits, labels)}


# -- BYOL -------------------------------------------------------------------------------
class BYOL(Objective):
    """``byol``: BYOL (Grill et al. 2020), SPR's loss without its dynamics model.

    Online projector g and predictor q, the momentum projector g_m; views a and b:
    ``(2 - 2 cos(q(g(a)), g_m(b_key))) + (2 - 2 cos(q(g(b)), g_m(a_key)))``, each term the
    mean over the batch, the targets without gradient. No negatives.
    """

    name, keys, symmetric = "byol", "momentum", True

    def __init__(self, feature_dim: int, projection_dim: int = 64, projection_hidden: int = 256) -> None:
        super().__init__()
        self.projector = _head(feature_dim, projection_hidden, projection_dim, batchnorm=True)
        dim = projection_dim or feature_dim
        self.predictor = MLPHead(dim, projection_hidden, dim, batchnorm=True)
        self.projector_momentum = copy.deepcopy(self.projector).requires_grad_(False)

    @torch.no_grad()
    def momentum_update(self, tau: float) -> None:
        ema_update(self.projector_momentum, self.projector, tau)

    @staticmethod
    def regression(p: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The normalised MSE ``||p/|p| - t/|t|||^2 = 2 - 2 cos(p, t)``, averaged over the batch."""
        return (2 - 2 * F.cosine_similarity(p, t.detach(), dim=1)).mean()

    def forward(self, a, b, *, a_key=None, b_online=None, **_):
        self._check_pair(a, b)
        if a_key is None or b_online is None:
            raise ValueError("objective byol is symmetrised: it needs a_key (momentum features of view a) and "
                             "b_online (online features of view b)")
        # One batch through each head: BatchNorm sees both views together.
        p_a, p_b = self.predictor(self.projector(torch.cat([a, b_online]))).chunk(2)
        with torch.no_grad():
            t_b, t_a = self.projector_momentum(torch.cat([b, a_key])).chunk(2)
        loss = self.regression(p_a, t_b) + self.regression(p_b, t_a)
        return loss, {"cosine": F.cosine_similarity(p_a.detach(), t_b, dim=1).mean()}


# -- Barlow Twins -----------------------------------------------------------------------
class BarlowTwins(Objective):
    """``barlow_twins``: Barlow Twins (Zbontar et al. 2021).

    z = g(h) per view (projector with BatchNorm), each dimension standardised over the batch
    (mean 0, variance 1, biased, eps 1e-5 in the variance), ``C = z_aᵀ z_b / B`` and
    ``sum_i (1 - C_ii)^2 + lambda sum_{i != j} C_ij^2``. A collapsed (constant) embedding
    standardises to 0, so C = 0 and the loss is the projector's output size.
    """

    name = "barlow_twins"

    def __init__(self, feature_dim: int, projection_dim: int = 128, projection_hidden: int = 256,
                 barlow_lambda: float = 5e-3) -> None:
        super().__init__()
        self.projector = _head(feature_dim, projection_hidden, projection_dim, batchnorm=True)
        self.barlow_lambda = float(barlow_lambda)

    @staticmethod
    def standardise(z: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
        return (z - z.mean(dim=0)) / torch.sqrt(z.var(dim=0, unbiased=False) + eps)

    def forward(self, a, b, **_):
        self._check_pair(a, b)
        z_a, z_b = self.projector(torch.cat([a, b])).chunk(2)
        c = self.standardise(z_a).T @ self.standardise(z_b) / a.shape[0]
        diag = torch.diagonal(c)
        on = (1 - diag).pow(2).sum()
        off = c.pow(2).sum() - diag.pow(2).sum()
        return on + self.barlow_lambda * off, {"on_diagonal": diag.detach().mean()}


# -- SwAV -------------------------------------------------------------------------------
@torch.no_grad()
def sinkhorn(scores: torch.Tensor, epsilon: float = 0.05, iterations: int = 3) -> torch.Tensor:
    """Sinkhorn-Knopp codes of (N, K) prototype scores (SwAV): ``Q ∝ exp(scores / eps)``,
    alternately rescaled so that every prototype gets mass 1/K and every sample 1/N
    (equipartition), ``iterations`` times; returns (N, K) codes whose rows sum to 1.
    Computed in float32 at least, with the max subtracted (no overflow at small eps)."""
    s = scores.float() if scores.dtype in (torch.float16, torch.bfloat16) else scores
    q = torch.exp((s - s.max()) / epsilon).T   # (K, N)
    q = q / q.sum()
    k, n = q.shape
    for _ in range(iterations):
        q = q / q.sum(dim=1, keepdim=True) / k
        q = q / q.sum(dim=0, keepdim=True) / n
    return (q * n).T


class SwAV(Objective):
    """``swav``: SwAV (Caron et al. 2020), swapped prediction of Sinkhorn codes.

    z = normalize(g(h)) per view; K learnable prototypes C, L2-normalised in the forward;
    scores ``z Cᵀ``; codes ``q = sinkhorn(scores)`` without gradient; loss
    ``-1/2 mean_i [sum_k q_b log softmax(s_a/t) + sum_k q_a log softmax(s_b/t)]``.
    ``queue_size > 0``: a FIFO queue of past (detached) features; once full, its scores join
    the batch's in Sinkhorn (codes taken for the batch rows only).
    """

    name = "swav"

    def __init__(self, feature_dim: int, temperature: float = 0.1, projection_dim: int = 64,
                 projection_hidden: int = 256, prototypes: int = 128, sinkhorn_epsilon: float = 0.05,
                 sinkhorn_iters: int = 3, queue_size: int = 0) -> None:
        super().__init__()
        self.temperature, self.epsilon, self.iterations = float(temperature), float(sinkhorn_epsilon), sinkhorn_iters
        self.projector = _head(feature_dim, projection_hidden, projection_dim, batchnorm=True)
        dim = projection_dim or feature_dim
        self.prototypes = nn.Linear(dim, prototypes, bias=False)
        self.register_buffer("queue", torch.zeros(queue_size, 2, dim))  # both views of past samples
        self.register_buffer("queue_ptr", torch.zeros((), dtype=torch.long))
        self.register_buffer("queue_filled", torch.zeros((), dtype=torch.long))

    def codes(self, scores: torch.Tensor, view: int) -> torch.Tensor:
        n = scores.shape[0]
        if self.queue.shape[0] and int(self.queue_filled) == self.queue.shape[0]:
            with torch.no_grad():
                c = F.normalize(self.prototypes.weight, dim=1)
                scores = torch.cat([scores, self.queue[:, view] @ c.T])
        return sinkhorn(scores.detach(), self.epsilon, self.iterations)[:n]

    @torch.no_grad()
    def enqueue(self, z_a: torch.Tensor, z_b: torch.Tensor) -> None:
        size, n = self.queue.shape[0], z_a.shape[0]
        if not size:
            return
        slots = (self.queue_ptr + torch.arange(n, device=z_a.device)) % size
        self.queue[slots] = torch.stack([z_a, z_b], dim=1).to(self.queue.dtype)
        self.queue_ptr.copy_((self.queue_ptr + n) % size)
        self.queue_filled.copy_(torch.clamp(self.queue_filled + n, max=size))

    def forward(self, a, b, **_):
        self._check_pair(a, b)
        z_a, z_b = F.normalize(self.projector(torch.cat([a, b])), dim=1).chunk(2)
        c = F.normalize(self.prototypes.weight, dim=1)
        s_a, s_b = z_a @ c.T, z_b @ c.T
        q_a, q_b = self.codes(s_a, 0), self.codes(s_b, 1)
        loss = -0.5 * ((q_b * F.log_softmax(s_a / self.temperature, dim=1)).sum(dim=1).mean()
                       + (q_a * F.log_softmax(s_b / self.temperature, dim=1)).sum(dim=1).mean())
        self.enqueue(z_a.detach(), z_b.detach())
        agree = (q_a.argmax(dim=1) == q_b.argmax(dim=1)).float().mean()
        return loss, {"code_agreement": agree}


# -- supervised contrastive over episode windows -----------------------------------------------
def window_positives(episode: torch.Tensor, time: torch.Tensor, window: int) -> torch.Tensor:
    """(N, N) bool: i != j, same episode and |time_i - time_j| <= window."""
    same = (episode[:, None] == episode[None, :]) & ((time[:, None] - time[None, :]).abs() <= window)
    return same & ~torch.eye(len(episode), dtype=torch.bool, device=episode.device)


class SupCon(Objective):
    """``supcon``: supervised contrastive loss (Khosla et al. 2020) / soft nearest
    neighbours (Frosst et al. 2019), the label being "same episode, within ``window`` agent
    steps" (ATC-like temporal positives, several per anchor). Both views of the B samples
    (2B features, L2-normalised, ``s = zᵀz'/t``); for anchor i, P(i) its positives, A(i)
    every other view:

    supcon  ``-mean_{p in P(i)} log exp(s_ip) / sum_{a in A(i)} exp(s_ia)``
    snn     ``-log sum_{p in P(i)} exp(s_ip) / sum_{a in A(i)} exp(s_ia)``

    averaged over the anchors (each has its other view at least).
    """

    name, needs_groups = "supcon", True

    def __init__(self, feature_dim: int, temperature: float = 0.1, supcon_window: int = 3,
                 supcon_group: int = 4, supcon_form: str = "supcon") -> None:
        super().__init__()
        if supcon_form not in ("supcon", "snn"):
            raise ValueError(f"objective supcon: supcon_form must be 'supcon' or 'snn', got {supcon_form!r}")
        self.temperature, self.form = float(temperature), supcon_form
        self.window, self.group = supcon_window, supcon_group

    def forward(self, a, b, *, episode=None, time=None, **_):
        self._check_pair(a, b)
        if episode is None or time is None:
            raise ValueError("objective supcon needs each sample's episode and time (a batch drawn in episode "
                             "windows)")
        z = F.normalize(torch.cat([a, b]), dim=1)
        s = z @ z.T / self.temperature
        eye = torch.eye(len(z), dtype=torch.bool, device=z.device)
        pos = window_positives(torch.cat([episode, episode]), torch.cat([time, time]), self.window)
        log_den = torch.logsumexp(s.masked_fill(eye, float("-inf")), dim=1)
        if self.form == "supcon":
            log_ratio = (s - log_den[:, None]).masked_fill(~pos, 0.0)
            per_anchor = -log_ratio.sum(dim=1) / pos.sum(dim=1)
        else:
            per_anchor = log_den - torch.logsumexp(s.masked_fill(~pos, float("-inf")), dim=1)
        return per_anchor.mean(), {"positives": pos.sum(dim=1).float().mean().detach()}


# -- metric learning ----------------------------------------------------------------------
def _distances(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Euclidean distances (B, B) between L2-normalised rows, from the Gram matrix
    (``sqrt(2 - 2 cos)``, clamped away from 0 so the gradient exists at d = 0)."""
    cos = F.normalize(a, dim=1) @ F.normalize(b, dim=1).T
    return torch.sqrt(torch.clamp(2 - 2 * cos, min=1e-12))


def _offdiag(n: int, device) -> torch.Tensor:
    return ~torch.eye(n, dtype=torch.bool, device=device)


class MarginContrastive(Objective):
    """``contrastive``: margin contrastive loss (Chopra et al. 2005) on L2-normalised features:
    ``mean_i d(a_i, b_i)^2 + mean_{i != j} max(0, margin - d(a_i, b_j))^2`` (the positive and
    the negative pairs of the batch, each averaged)."""

    name = "contrastive"

    def __init__(self, feature_dim: int, margin: float = 1.0) -> None:
        super().__init__()
        self.margin = float(margin)

    def forward(self, a, b, **_):
        self._check_pair(a, b)
        d = _distances(a, b)
        off = _offdiag(len(d), d.device)
        pos = torch.diagonal(d).pow(2).mean()
        neg = torch.clamp(self.margin - d[off], min=0).pow(2).mean()
        return pos + neg, {"accuracy": _accuracy(-d, torch.arange(len(d), device=d.device))}


class Triplet(Objective):
    """``triplet``: triplet loss (FaceNet, Schroff et al. 2015) on L2-normalised features,
    anchor a_i, positive b_i, negatives b_j (j != i):
    ``max(0, d(a_i, b_i)^2 - d(a_i, b_j)^2 + margin)``, averaged over every (i, j) (``all``)
    or taken at the closest negative of each anchor (``batch_hard``; each anchor has one
    positive, so it is also the farthest)."""

    name = "triplet"

    def __init__(self, feature_dim: int, margin: float = 0.2, triplet_mining: str = "all") -> None:
        super().__init__()
        if triplet_mining not in ("all", "batch_hard"):
            raise ValueError(f"objective triplet: triplet_mining must be 'all' or 'batch_hard', got {triplet_mining!r}")
        self.margin, self.mining = float(margin), triplet_mining

    def forward(self, a, b, **_):
        self._check_pair(a, b)
        d2 = _distances(a, b).pow(2)
        pos = torch.diagonal(d2)
        off = _offdiag(len(d2), d2.device)
        if self.mining == "batch_hard":
            hardest = d2.masked_fill(~off, float("inf")).min(dim=1).values
            loss = torch.clamp(pos - hardest + self.margin, min=0).mean()
        else:
            loss = torch.clamp(pos[:, None] - d2 + self.margin, min=0)[off].mean()
        return loss, {"accuracy": _accuracy(-d2, torch.arange(len(d2), device=d2.device))}


class NPair(Objective):
    """``npair``: N-pair loss (Sohn 2016): ``log(1 + sum_{j != i} exp(a_i.b_j - a_i.b_i))``,
    the softmax cross-entropy of the dot products a_i.b_j with label i (raw features)."""

    name = "npair"

    def __init__(self, feature_dim: int) -> None:
        super().__init__()

    def forward(self, a, b, **_):
        self._check_pair(a, b)
        logits = a @ b.T
        labels = torch.arange(len(a), device=a.device)
        return F.cross_entropy(logits, labels), {"accuracy": _accuracy(logits, labels)}


class Lifted(Objective):
    """``lifted``: lifted structured loss, smooth form (Song et al. 2016), on the 2B
    L2-normalised views: positive pairs (a_i, b_i); N(x) = the 2B - 2 views of other samples;
    ``J = D(a_i, b_i) + log(sum_{k in N(a_i)} exp(margin - D(a_i, k)) + sum_{l in N(b_i)}
    exp(margin - D(b_i, l)))`` and ``1/(2B) sum_i max(0, J_i)^2`` (each pair once, as |P| = B
    unordered pairs)."""

    name = "lifted"

    def __init__(self, feature_dim: int, margin: float = 1.0) -> None:
        super().__init__()
        self.margin = float(margin)

    def forward(self, a, b, **_):
        self._check_pair(a, b)
        n = len(a)
        z = torch.cat([a, b])
        d = _distances(z, z)                                        # (2B, 2B)
        sample = torch.arange(2 * n, device=z.device) % n
        neg = sample[:, None] != sample[None, :]
        e = (self.margin - d).masked_fill(~neg, float("-inf"))
        i = torch.arange(n, device=z.device)
        j = torch.cat([torch.logsumexp(e[i], dim=1, keepdim=True), torch.logsumexp(e[i + n], dim=1, keepdim=True)], 1)
        big_j = d[i, i + n] + torch.logsumexp(j, dim=1)
        loss = torch.clamp(big_j, min=0).pow(2).sum() / (2 * n)
        return loss, {"accuracy": _accuracy(-d[:n, n:], i)}


class NCE(Objective):
    """``nce``: binary noise-contrastive estimation (Gutmann & Hyvärinen 2010): logistic
    regression of the positive pair against in-batch noise pairs, score ``s_ij = cos(a_i,
    b_j)/t``: ``-mean_i log sigmoid(s_ii) - mean_{i != j} log(1 - sigmoid(s_ij))``."""

    name = "nce"

    def __init__(self, feature_dim: int, temperature: float = 0.1) -> None:
        super().__init__()
        self.temperature = float(temperature)

    def forward(self, a, b, **_):
        self._check_pair(a, b)
        s = F.normalize(a, dim=1) @ F.normalize(b, dim=1).T / self.temperature
        off = _offdiag(len(s), s.device)
        loss = -F.logsigmoid(torch.diagonal(s)).mean() - F.logsigmoid(-s[off]).mean()
        return loss, {"accuracy": _accuracy(s, torch.arange(len(s), device=s.device))}


# -- registry and configuration -----------------------------------------------------------
#: name -> (class, {config key: the objective's default}); the keys are ObjectiveConfig's.
SPECS: dict[str, tuple[type[Objective], dict[str, Any]]] = {
    "curl": (Curl, {}),
    "infonce": (InfoNCE, dict(temperature=0.1, projection_dim=64, projection_hidden=256, tau_plus=None,
                              hard_beta=None)),
    "moco": (MoCo, dict(temperature=0.2, projection_dim=64, projection_hidden=256, queue_size=4096)),
    "byol": (BYOL, dict(projection_dim=64, projection_hidden=256)),
    "barlow_twins": (BarlowTwins, dict(projection_dim=128, projection_hidden=256, barlow_lambda=5e-3)),
    "swav": (SwAV, dict(temperature=0.1, projection_dim=64, projection_hidden=256, prototypes=128,
                        sinkhorn_epsilon=0.05, sinkhorn_iters=3, queue_size=0)),
    "supcon": (SupCon, dict(temperature=0.1, supcon_window=3, supcon_group=4, supcon_form="supcon")),
    "contrastive": (MarginContrastive, dict(margin=1.0)),
    "triplet": (Triplet, dict(margin=0.2, triplet_mining="all")),
    "npair": (NPair, {}),
    "lifted": (Lifted, dict(margin=1.0)),
    "nce": (NCE, dict(temperature=0.1)),
}
assert tuple(SPECS) == OBJECTIVE_NAMES
OBJECTIVE_KEYS = tuple(f.name for f in fields(ObjectiveConfig) if f.name != "objective")


def objective_class(name: str) -> type[Objective]:
    """The class of objective ``name`` (ConfigError with the nearest name if unknown)."""
    if name not in SPECS:
        near = difflib.get_close_matches(str(name), SPECS, n=1)
        hint = f" (did you mean {near[0]!r}?)" if near else ""
        raise ConfigError(f"unknown objective {name!r}{hint}; known: {', '.join(SPECS)}")
    return SPECS[name][0]


def objective_options(cfg: ObjectiveConfig) -> dict[str, Any]:
    """The chosen objective's keys with the config's values, its defaults where unset.

    ConfigError if a key is set (not None) that the objective does not use, naming which
    objectives use it."""
    objective_class(cfg.objective)
    used = SPECS[cfg.objective][1]
    for key in OBJECTIVE_KEYS:
        if getattr(cfg, key) is not None and key not in used:
            users = [n for n, (_, keys) in SPECS.items() if key in keys]
            raise ConfigError(f"config key {key!r} applies to objective={' or '.join(users)}, not "
                              f"objective={cfg.objective}")
    return {key: default if getattr(cfg, key) is None else getattr(cfg, key) for key, default in used.items()}


def check_batch(cfg: ObjectiveConfig, batch_size: int) -> None:
    """ConfigError for objective settings impossible at ``batch_size``: a queue smaller than a
    batch; supcon groups that do not divide the batch."""
    opts = objective_options(cfg)
    queue = opts.get("queue_size", 0)
    if queue and queue < batch_size:
        raise ConfigError(f"config key 'queue_size' ({queue}) must be >= batch_size ({batch_size}) for "
                          f"objective={cfg.objective}: the queue holds whole batches of keys")
    group = opts.get("supcon_group")
    if group is not None and (group > batch_size or batch_size % group):
        raise ConfigError(f"config key 'supcon_group' ({group}) must divide batch_size ({batch_size}): supcon "
                          f"draws the batch as groups of frames of one episode window")


def check_auxiliary(cfg: ObjectiveConfig, curl: bool, batch_size: int) -> None:
    """ConfigError for an agent's auxiliary-objective settings it cannot run: an objective
    other than curl with ``curl`` off, a key of another objective, and (with ``curl`` on) the
    objective's settings impossible at ``batch_size`` (:func:`check_batch`)."""
    if not curl and cfg.objective != "curl":
        raise ConfigError(f"config key 'objective' = {cfg.objective!r} needs curl=true: curl=false turns the "
                          f"auxiliary objective off")
    objective_options(cfg)
    if curl:
        check_batch(cfg, batch_size)


def build_objective(cfg: ObjectiveConfig, feature_dim: int) -> Objective:
    """The objective ``cfg.objective`` on encoder features of size ``feature_dim``."""
    cls = objective_class(cfg.objective)
    return cls(feature_dim, **objective_options(cfg))
