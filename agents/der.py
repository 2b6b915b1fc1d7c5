"""Data-efficient Rainbow (DER, van Hasselt et al. 2019) with CURL's contrastive head.

Read top to bottom: hyperparameters, noisy layers, the network, the C51 projection, the
agent (acting, one update, state). The agent is what CURL's Atari code runs
(aravindsrinivas/curl_rainbow ``agent.py``/``model.py``, built on Kaixhin/Rainbow);
``curl=False`` is plain DER. Pure torch: no env, no replay, no files. Batches come from
:class:`curlrl.per.PrioritizedReplay` (``sample(batch_size, agent.beta)``), and the
priorities an update returns go back with ``update_priorities``.

One update (``k`` counts updates from 0):
    1. fresh factorised noise for the online and the target network;
    2. C51 loss: ``-sum_j m_j log p_j(s, a)`` with ``m`` the projection (:func:`c51_projection`)
       of ``R^(n) + gamma^m z`` under the target network's distribution at
       ``argmax_a' E[Z_online(s', a')]`` (double Q), on the *un-augmented* observations;
    3. CURL (``curl=True``): anchor = online encoder + projection of a shifted obs (replicate
       pad 4, random 84 crop: +-4 px, one shift per stack), key = momentum encoder of an
       independent shift; bilinear logits ``z_a W z_k^T`` minus the row max, times 0.1;
       InfoNCE with the diagonal as labels. Its (batch) loss times ``curl_weight`` is added
       to every sample's C51 loss, then ``mean(IS weight * loss)`` is minimised (Adam, grad
       norm clipped to 10); the per-sample losses are the new priorities (so the CURL term
       is in every priority, as in curl_rainbow);
    4. EMA of the momentum encoder (tau 0.001, every update, after the step);
    5. hard copy online -> target after every ``target_update`` updates.

Where curl_rainbow's code and the CURL paper differ, this follows the code (it produced
the paper's Table 2): the loss weight is 0.01 for pong, boxing, private_eye and freeway
(the paper's App. B says 0.05; :func:`curl_weight_for`), the logits are scaled by 0.1 and
the projection's LayerNorms have no learned affine (curl_rainbow builds them inside
``forward``, so they are never trained). Deliberate departures, each with the same
expectation or the same outputs: the key encoder is an EMA of the encoder and projection
only (curl_rainbow EMAs the whole network, whose Q heads the key path never reads); the
shift is one uniform offset in -4..+4 per axis (curl_rainbow's crop 80 / pad 4 / crop 84
adds two uniform 0..4 offsets and replicates the inner crop's edge); the update draws its own
online noise (Kaixhin reuses the noise drawn for that env step's action); the target copy
counts updates (Kaixhin copies at env steps that are multiples of 2000, so its first copy
comes after 401 updates, then every 2000).
"""
from __future__ import annotations

import copy
import json
import math
import re
from dataclasses import dataclass, fields

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from curlrl.augment import random_shift
from curlrl.contrastive import CurlHead
from curlrl.ema import ema_update
from curlrl.errors import CheckpointError, ConfigError, DivergenceError
from curlrl.objectives import Objective, build_objective, check_auxiliary
from curlrl.options import ObjectiveConfig, option

# curl_rainbow agent.py: ``0.01 if game in ['pong', 'boxing', 'private_eye', 'freeway'] else 1``
SMALL_CURL_WEIGHT_GAMES = ("pong", "boxing", "private_eye", "freeway")


def curl_weight_for(game: str) -> float:
    """CURL's loss weight for an Atari game as curl_rainbow's code sets it: 0.01 for pong,
    boxing, private_eye and freeway, else 1. (The CURL paper, App. B, says "a coefficient of
    0.05" for those four; its published numbers come from the code.) ``game``: a ROM name
    or task (``"private_eye"``, ``"atari-private_eye"``, ``"PrivateEye"``)."""
    key = game.lower().removeprefix("atari-").replace("_", "").replace("-", "")
    return 0.01 if key in {g.replace("_", "") for g in SMALL_CURL_WEIGHT_GAMES} else 1.0


@dataclass
class DerConfig(ObjectiveConfig):
    """Hyperparameters of :class:`DerAgent`; defaults are DER's (CURL Table 4, Kaixhin's
    README) and curl_rainbow's CURL settings. ``DerConfig.for_game(game)`` sets the game's
    CURL loss weight. ``objective`` (and its keys, :class:`curlrl.options.ObjectiveConfig`):
    curl is curl_rainbow's head; any other of :mod:`curlrl.objectives` takes its place on the
    576 conv features, at the same weight."""

    num_atoms: int = option(51, "C51 atoms of the return distribution", check=">= 2")
    v_min: float = option(-10.0, "lowest atom of the support")
    v_max: float = option(10.0, "highest atom of the support")
    hidden_dim: int = option(256, "width of the value and advantage streams", check="> 0")
    noisy_sigma0: float = option(0.1, "sigma_0 of the factorised Gaussian noisy layers (DER 0.1; Rainbow 0.5)",
                                 check=">= 0")
    n_step: int = option(20, "multi-step return horizon n (the replay's; the agent reads the discount the replay "
                             "computed)", check="> 0")
    discount: float = option(0.99, "discount gamma", check="in [0, 1]")
    lr: float = option(1e-4, "Adam learning rate", check="> 0")
    adam_eps: float = option(1.5e-4, "Adam epsilon (CURL Table 4 prints 0.000015; code and DER use 1.5e-4)",
                             check="> 0")
    grad_clip: float = option(10.0, "max L2 norm of the gradient over all trained parameters", check="> 0")
    batch_size: int = option(32, "transitions per update", check="> 0")
    target_update: int = option(2000, "hard copy online -> target network after every N updates", check="> 0")
    learn_start: int = option(1600, "agent steps before the first update (for the training loop)", check=">= 0")
    priority_alpha: float = option(0.5, "priority exponent alpha of the replay", check=">= 0")
    priority_beta: float = option(0.4, "importance-sampling exponent beta at the first update", check="in [0, 1]")
    beta_anneal_updates: int = option(98_400, "updates over which beta grows linearly to 1 (100k steps - "
                                              "learn_start)", check="> 0")
    eval_epsilon: float = option(0.001, "epsilon-greedy in evaluation (noise off)", check="in [0, 1]")
    curl: bool = option(True, "CURL's contrastive head and loss; false: plain DER")
    curl_weight: float = option(1.0, "weight of the CURL loss (curl_rainbow: 0.01 for pong, boxing, private_eye, "
                                     "freeway, else 1; the paper says 0.05; DerConfig.for_game)", check=">= 0")
    curl_logit_scale: float = option(0.1, "CURL logits multiplier after the row-max shift (curl_rainbow's; not "
                                          "in the paper)", check="> 0")
    curl_dim: int = option(128, "size of the contrastive projection (576 -> hidden_dim -> curl_dim)", check="> 0")
    encoder_tau: float = option(0.001, "EMA rate of the momentum key encoder, every update", check="in [0, 1]")
    shift_pad: int = option(4, "CURL view: replicate-pad this many px and random-crop back (+-pad px)",
                            check=">= 0")

    def __post_init__(self) -> None:
        for f in fields(self):
            check, value = f.metadata.get("check"), getattr(self, f.name)
            if check and value is not None and not _holds(check, value):
                raise ConfigError(f"config key {f.name!r} must be {check}, got {value}")
        if not self.v_min < self.v_max:
            raise ConfigError(f"config key 'v_min' ({self.v_min}) must be below 'v_max' ({self.v_max})")
        check_der_objective(self)

    @classmethod
    def for_game(cls, game: str, **overrides) -> DerConfig:
        """The config for an Atari game: the defaults with the game's CURL loss weight
        (:func:`curl_weight_for`), then ``overrides``."""
        return cls(**{"curl_weight": curl_weight_for(game), **overrides})


def check_der_objective(cfg: DerConfig) -> None:
    """ConfigError for an objective setting DER cannot run: an objective with curl=false, a key
    of another objective, a queue smaller than a batch, or supcon (its batches are frames of one
    episode window; DER's are prioritised transitions)."""
    check_auxiliary(cfg, cfg.curl, cfg.batch_size)
    if cfg.curl and cfg.objective == "supcon":
        raise ConfigError("config key 'objective' = 'supcon' needs batches of frames from one episode window; "
                          "DER's replay draws prioritised transitions: choose another objective")


_INTERVAL = re.compile(r"in ([(\[])(\S+), (\S+)([)\]])")


def _holds(check: str, value: float) -> bool:
    """Whether ``value`` meets a declared check ("> 0", ">= 2", "in (0, 1]")."""
    interval = _INTERVAL.fullmatch(check)
    if interval:
        lo_b, lo, hi, hi_b = interval.groups()
        return (value > float(lo) if lo_b == "(" else value >= float(lo)) and \
            (value < float(hi) if hi_b == ")" else value <= float(hi))
    op, _, bound = check.partition(" ")
    return value > float(bound) if op == ">" else value >= float(bound)


# -- noisy layers ------------------------------------------------------------------
class NoisyLinear(nn.Module):
    """Factorised Gaussian noisy linear layer (Fortunato et al. 2018), as Kaixhin's.

    ``y = (mu_W + sigma_W * eps_W) x + mu_b + sigma_b * eps_b`` in train mode, with
    ``eps_W = f(eps_out) f(eps_in)^T``, ``eps_b = f(eps_out)``, ``f(x) = sgn(x) sqrt|x|``
    and standard normal ``eps_in``, ``eps_out``; ``y = mu_W x + mu_b`` in eval mode. The
    noise is a buffer: it changes only when :meth:`reset_noise` draws it. Init: mu uniform
    in +-1/sqrt(in), sigma_W = sigma0/sqrt(in), sigma_b = sigma0/sqrt(out).
    """

    def __init__(self, in_features: int, out_features: int, sigma0: float = 0.1) -> None:
        super().__init__()
        self.in_features, self.out_features, self.sigma0 = in_features, out_features, sigma0
        self.weight_mu = nn.Parameter(torch.empty(out_features, in_features))
        self.weight_sigma = nn.Parameter(torch.empty(out_features, in_features))
        self.bias_mu = nn.Parameter(torch.empty(out_features))
        self.bias_sigma = nn.Parameter(torch.empty(out_features))
        self.register_buffer("weight_epsilon", torch.zeros(out_features, in_features))
        self.register_buffer("bias_epsilon", torch.zeros(out_features))
        bound = 1.0 / math.sqrt(in_features)
        with torch.no_grad():
            self.weight_mu.uniform_(-bound, bound)
            self.bias_mu.uniform_(-bound, bound)
            self.weight_sigma.fill_(sigma0 / math.sqrt(in_features))
            self.bias_sigma.fill_(sigma0 / math.sqrt(out_features))

    @staticmethod
    def _scaled(n: int, generator: torch.Generator | None, device) -> torch.Tensor:
        x = torch.randn(n, generator=generator, device=device)
        return x.sign() * x.abs().sqrt()

    @torch.no_grad()
    def reset_noise(self, generator: torch.Generator | None = None) -> None:
        """Draw new factorised noise (from ``generator`` if given)."""
        dev = self.weight_mu.device
        eps_in = self._scaled(self.in_features, generator, dev)
        eps_out = self._scaled(self.out_features, generator, dev)
        self.weight_epsilon.copy_(torch.outer(eps_out, eps_in))
        self.bias_epsilon.copy_(eps_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            return F.linear(x, self.weight_mu + self.weight_sigma * self.weight_epsilon,
                            self.bias_mu + self.bias_sigma * self.bias_epsilon)
        return F.linear(x, self.weight_mu, self.bias_mu)


# -- the network -------------------------------------------------------------------
class CurlProjection(nn.Module):
    """curl_rainbow's contrastive head on the conv features: ``LN(relu(LN(h W_h + b_h)) W_c + b_c)``.

    W_h, W_c are initialised uniform in [0, 1) (``torch.rand``, as curl_rainbow); the
    LayerNorms have no affine parameters (curl_rainbow creates them in ``forward``).
    """

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int) -> None:
        super().__init__()
        self.W_h = nn.Parameter(torch.rand(in_dim, hidden_dim))
        self.b_h = nn.Parameter(torch.zeros(hidden_dim))
        self.W_c = nn.Parameter(torch.rand(hidden_dim, out_dim))
        self.b_c = nn.Parameter(torch.zeros(out_dim))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        x = F.relu(F.layer_norm(h @ self.W_h + self.b_h, (self.W_h.shape[1],)))
        return F.layer_norm(x @ self.W_c + self.b_c, (self.W_c.shape[1],))


class DerNetwork(nn.Module):
    """DER's data-efficient network: (B, 4, 84, 84) uint8 -> C51 logits (B, A, atoms).

    Encoder: Conv(4->32, 5x5, stride 5), ReLU, Conv(32->64, 5x5, stride 5), ReLU -> 64x3x3 =
    576 features (inputs scaled to [0, 1]). Dueling heads of noisy layers: value
    576 -> hidden -> atoms and advantage 576 -> hidden -> A x atoms, combined per atom as
    ``v + a - mean_a(a)`` before the softmax. With ``curl_dim``: a :class:`CurlProjection`.
    """

    def __init__(self, num_actions: int, num_atoms: int = 51, hidden_dim: int = 256, sigma0: float = 0.1,
                 in_channels: int = 4, curl_dim: int | None = 128) -> None:
        super().__init__()
        self.num_actions, self.num_atoms = num_actions, num_atoms
        self.encoder = nn.Sequential(nn.Conv2d(in_channels, 32, 5, stride=5), nn.ReLU(),
                                     nn.Conv2d(32, 64, 5, stride=5), nn.ReLU(), nn.Flatten())
        self.feature_dim = 576
        self.value_hidden = NoisyLinear(self.feature_dim, hidden_dim, sigma0)
        self.value_out = NoisyLinear(hidden_dim, num_atoms, sigma0)
        self.advantage_hidden = NoisyLinear(self.feature_dim, hidden_dim, sigma0)
        self.advantage_out = NoisyLinear(hidden_dim, num_actions * num_atoms, sigma0)
        self.projection = CurlProjection(self.feature_dim, hidden_dim, curl_dim) if curl_dim else None

    def features(self, obs: torch.Tensor) -> torch.Tensor:
        """(B, C, 84, 84) uint8 (or float in [0, 255]) -> (B, 576)."""
        return self.encoder(obs.float() / 255.0)

    def logits(self, h: torch.Tensor) -> torch.Tensor:
        """(B, 576) features -> (B, A, atoms) logits of the dueling C51 heads."""
        v = self.value_out(F.relu(self.value_hidden(h))).view(-1, 1, self.num_atoms)
        a = self.advantage_out(F.relu(self.advantage_hidden(h))).view(-1, self.num_actions, self.num_atoms)
        return v + a - a.mean(dim=1, keepdim=True)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        """(B, C, 84, 84) -> (B, A, atoms) probabilities."""
        return self.logits(self.features(obs)).softmax(dim=-1)

    def reset_noise(self, generator: torch.Generator | None = None) -> None:
        for layer in (self.value_hidden, self.value_out, self.advantage_hidden, self.advantage_out):
            layer.reset_noise(generator)


# -- the C51 projection --------------------------------------------------------------
def c51_projection(next_probs: torch.Tensor, returns: torch.Tensor, discount: torch.Tensor,
                   support: torch.Tensor) -> torch.Tensor:
    """Project the distribution of ``returns + discount * Z`` onto the fixed ``support``.

    Args:
        next_probs: (B, N) probabilities of Z (the bootstrap action's distribution).
        returns: (B,) n-step returns; discount: (B,) gamma^m, 0 after a termination.
        support: (N,) evenly spaced atoms z_0 < ... < z_{N-1}.

    Returns (B, N): each atom's mass ``p_j`` moves to ``Tz_j = clamp(R + discount * z_j)``,
    split between the neighbouring atoms l = floor(b), u = ceil(b), b = (Tz_j - z_0) / dz,
    in proportions (u - b) and (b - l); when b is an atom (l = u) it all goes there
    (Kaixhin's shift of l or u by one, which keeps that mass from vanishing).
    """
    n = support.numel()
    v_min, v_max = support[0], support[-1]
    dz = (v_max - v_min) / (n - 1)
    tz = (returns[:, None] + discount[:, None] * support[None, :]).clamp(v_min, v_max)
    b = (tz - v_min) / dz
    lo, hi = b.floor().long(), b.ceil().long()
    lo[(hi > 0) & (lo == hi)] -= 1
    hi[(lo < n - 1) & (lo == hi)] += 1
    m = torch.zeros_like(next_probs)
    m.scatter_add_(1, lo, next_probs * (hi.to(b.dtype) - b))
    m.scatter_add_(1, hi, next_probs * (b - lo.to(b.dtype)))
    return m


# -- the agent -----------------------------------------------------------------------
class DerAgent:
    """DER (+ CURL) on (4, 84, 84) uint8 frame stacks with discrete actions.

    Args:
        num_actions: size of the (minimal) action set.
        config: hyperparameters.
        device: torch device of every network.
        seed: seeds the network init (a local generator: torch's global RNG is left alone),
            the noise and shifts (a torch generator on ``device``) and evaluation's epsilon.
        in_channels: frames per observation.
    """

    def __init__(self, num_actions: int, config: DerConfig | None = None, device: str | torch.device = "cpu",
                 seed: int = 0, in_channels: int = 4) -> None:
        if int(num_actions) < 1:
            raise ConfigError(f"DerAgent needs num_actions >= 1, got {num_actions}")
        self.cfg = cfg = config or DerConfig()
        self.device = torch.device(device)
        self.num_actions = int(num_actions)
        curl_rainbow = cfg.curl and cfg.objective == "curl"
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.online = DerNetwork(self.num_actions, cfg.num_atoms, cfg.hidden_dim, cfg.noisy_sigma0,
                                     in_channels, cfg.curl_dim if curl_rainbow else None)
            self.curl_head = CurlHead(cfg.curl_dim) if curl_rainbow else None
            # another objective of curlrl.objectives on the 576 conv features
            self.objective: Objective | None = (build_objective(cfg, self.online.feature_dim)
                                                if cfg.curl and not curl_rainbow else None)
        self.online.to(self.device).train()
        self.target = copy.deepcopy(self.online).requires_grad_(False).train()  # noisy, as Kaixhin's
        self.momentum = None
        if cfg.curl:
            aux = self.curl_head if curl_rainbow else self.objective
            aux.to(self.device)
            self.momentum = copy.deepcopy(self._key_modules(self.online)).requires_grad_(False)
        self.support = torch.linspace(cfg.v_min, cfg.v_max, cfg.num_atoms, device=self.device)
        # foreach: the multi-tensor Adam, bit-identical to the per-tensor one and faster on the CPU
        self.optimizer = torch.optim.Adam(self.parameters(), lr=cfg.lr, eps=cfg.adam_eps, foreach=True)
        self.generator = torch.Generator(self.device).manual_seed(seed)
        self.rng = np.random.default_rng(seed)
        self.online.reset_noise(self.generator)
        self.target.reset_noise(self.generator)
        self.updates = 0

    @staticmethod
    def _key_modules(net: DerNetwork) -> nn.ModuleDict:
        """The modules the contrastive key path reads: the encoder and (CURL's) the projection."""
        mods = {"encoder": net.encoder}
        if net.projection is not None:
            mods["projection"] = net.projection
        return nn.ModuleDict(mods)

    def parameters(self) -> list[nn.Parameter]:
        """The trained parameters, one Adam over them all as in curl_rainbow: the online network
        (+ CURL's W, or the objective's own heads; not its momentum copies)."""
        params = list(self.online.parameters())
        if self.curl_head is not None:
            params += list(self.curl_head.parameters())
        if self.objective is not None:
            params += [p for p in self.objective.parameters() if p.requires_grad]
        return params

    @property
    def beta(self) -> float:
        """The IS exponent for the next update: ``priority_beta`` grown linearly to 1 over
        ``beta_anneal_updates`` (Kaixhin adds one increment before each update)."""
        cfg = self.cfg
        return min(1.0, cfg.priority_beta + (1.0 - cfg.priority_beta) * (self.updates + 1) / cfg.beta_anneal_updates)

    # -- acting --------------------------------------------------------------------
    def _obs(self, obs) -> tuple[torch.Tensor, bool]:
        x = torch.as_tensor(np.asarray(obs), device=self.device)
        if x.dtype != torch.uint8 or x.ndim not in (3, 4) or tuple(x.shape[-2:]) != (84, 84):
            raise ConfigError(f"DerAgent: observations must be uint8 (C, 84, 84) stacks or a batch of them, got "
                              f"{x.dtype} {tuple(x.shape)}")
        return (x[None], True) if x.ndim == 3 else (x, False)

    def q_values(self, obs, noise: bool = False) -> torch.Tensor:
        """Expected returns (B, A) of a batch of observations; ``noise=False``: mean weights."""
        x, _ = self._obs(obs)
        self.online.train(noise)
        try:
            with torch.no_grad():
                return (self.online(x) * self.support).sum(-1)
        finally:
            self.online.train()

    def act(self, obs, eval: bool = False, rng: np.random.Generator | None = None):
        """A greedy action for one (4, 84, 84) uint8 observation (an int), or for a batch (an array).

        ``eval=False`` (training): fresh noise for the online network, then greedy on the
        noisy Q (DER explores by its noise alone). ``eval=True``: no noise (mean weights) and
        epsilon-greedy with ``eval_epsilon`` (0.001), its draws from ``rng`` (default the
        agent's own: an evaluation that passes its own leaves the agent's stream as it was).
        """
        x, single = self._obs(obs)
        if not eval:
            self.online.reset_noise(self.generator)
        actions = self.q_values(x, noise=not eval).argmax(dim=1).cpu().numpy()
        if eval:
            rng = self.rng if rng is None else rng
            explore = rng.random(len(actions)) < self.cfg.eval_epsilon
            if explore.any():
                actions[explore] = rng.integers(0, self.num_actions, int(explore.sum()))
        return int(actions[0]) if single else actions

    # -- learning ------------------------------------------------------------------
    def project(self, next_probs: torch.Tensor, returns: torch.Tensor, discount: torch.Tensor) -> torch.Tensor:
        """The C51 target distribution (:func:`c51_projection` on this agent's support)."""
        return c51_projection(next_probs, returns, discount, self.support)

    def _batch(self, batch: dict) -> dict[str, torch.Tensor]:
        missing = [k for k in ("obs", "action", "returns", "discount", "next_obs", "weight") if k not in batch]
        if missing:
            raise ConfigError(f"DerAgent.update: the batch has no {', '.join(missing)} (PrioritizedReplay.sample "
                              f"makes them)")
        b = {k: torch.as_tensor(np.asarray(batch[k]) if not torch.is_tensor(batch[k]) else batch[k]).to(self.device)
             for k in ("obs", "action", "returns", "discount", "next_obs", "weight")}
        size = len(b["obs"])
        for key in ("obs", "next_obs"):
            if b[key].dtype != torch.uint8 or b[key].ndim != 4 or tuple(b[key].shape[2:]) != (84, 84):
                raise ConfigError(f"DerAgent.update: batch {key!r} must be uint8 (B, C, 84, 84), got "
                                  f"{b[key].dtype} {tuple(b[key].shape)}")
        for key in ("action", "returns", "discount", "weight"):
            if tuple(b[key].shape) != (size,):
                raise ConfigError(f"DerAgent.update: batch {key!r} must have shape ({size},), got "
                                  f"{tuple(b[key].shape)}")
        if b["action"].min() < 0 or b["action"].max() >= self.num_actions:
            raise ConfigError(f"DerAgent.update: actions must be in [0, {self.num_actions})")
        b["action"] = b["action"].long()
        for key in ("returns", "discount", "weight"):
            b[key] = b[key].float()
        return b

    def update(self, batch: dict) -> dict:
        """One DER (+ CURL) update on a replay batch; returns its metrics.

        ``batch``: ``obs``, ``next_obs`` (B, 4, 84, 84) uint8, ``action`` (B,), ``returns``
        (B,), ``discount`` (B,) and ``weight`` (B,) (numpy arrays or tensors), as
        :meth:`curlrl.per.PrioritizedReplay.sample` returns them.

        Metrics: ``loss`` (the IS-weighted mean that was minimised), ``c51_loss`` (mean
        cross-entropy), ``curl_loss`` (with CURL), ``q_mean`` (mean expected Q of the taken
        actions), ``grad_norm`` (before clipping): detached 0-dim tensors; and
        ``priorities``: (B,) float64 numpy array of the per-sample losses, for
        ``replay.update_priorities(batch["index"], ...)``.
        """
        cfg, b = self.cfg, self._batch(batch)
        size = len(b["obs"])
        rows = torch.arange(size, device=self.device)
        self.online.reset_noise(self.generator)
        self.target.reset_noise(self.generator)
        obj = self.objective
        online_b = obj is not None and (obj.keys == "online" or obj.symmetric)  # view b through the online encoder
        if cfg.curl:
            anchor = random_shift(b["obs"], cfg.shift_pad, self.generator)
            key = random_shift(b["obs"], cfg.shift_pad, self.generator)
            if online_b:
                h, h_anchor, h_key = self.online.features(torch.cat([b["obs"], anchor, key])).split(size)
            else:
                h, h_anchor = self.online.features(torch.cat([b["obs"], anchor])).split(size)
        else:
            h = self.online.features(b["obs"])
        log_p = self.online.logits(h).log_softmax(dim=-1)[rows, b["action"]]  # (B, atoms)

        with torch.no_grad():
            next_q = (self.online(b["next_obs"]) * self.support).sum(-1)        # online argmax (double Q)
            next_probs = self.target(b["next_obs"])[rows, next_q.argmax(dim=1)]
            m = self.project(next_probs, b["returns"], b["discount"])
        c51 = -(m * log_p).sum(dim=1)
        per_sample = c51
        metrics: dict = {}
        if cfg.curl and obj is None:  # curl_rainbow's head
            z_anchor = self.online.projection(h_anchor)
            with torch.no_grad():
                z_key = self.momentum["projection"](self.momentum["encoder"](key.float() / 255.0))
            logits = self.curl_head.logits(z_anchor, z_key) * cfg.curl_logit_scale
            curl_loss = F.cross_entropy(logits, rows)
            per_sample = c51 + cfg.curl_weight * curl_loss
            metrics["curl_loss"] = curl_loss.detach()
        elif cfg.curl:  # another objective on the conv features (view a online, view b by obj.keys)
            kwargs = {}
            with torch.no_grad():
                if obj.keys == "momentum" or obj.symmetric:
                    views = torch.cat([key, anchor]) if obj.symmetric else key
                    keyed = self.momentum["encoder"](views.float() / 255.0)
                    b_key, a_key = keyed.split(size) if obj.symmetric else (keyed, None)
            if obj.symmetric:
                kwargs = dict(a_key=a_key, b_online=h_key)
            aux_loss, aux_metrics = obj(h_anchor, b_key if obj.keys == "momentum" else h_key, **kwargs)
            per_sample = c51 + cfg.curl_weight * aux_loss
            metrics["curl_loss"] = aux_loss.detach()
            metrics.update({f"aux_{k}": v for k, v in aux_metrics.items()})
        loss = (b["weight"] * per_sample).mean()
        if not torch.isfinite(loss):
            raise DivergenceError(f"DER update {self.updates}: the loss is not finite ({loss.item()})")
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = nn.utils.clip_grad_norm_(self.parameters(), cfg.grad_clip)
        self.optimizer.step()
        if cfg.curl:
            ema_update(self.momentum, self._key_modules(self.online), cfg.encoder_tau)
            if obj is not None:
                obj.momentum_update(cfg.encoder_tau)
        self.updates += 1
        if self.updates % cfg.target_update == 0:
            self.update_target()
        with torch.no_grad():
            q_taken = (log_p.exp() * self.support).sum(-1).mean()
        metrics.update(loss=loss.detach(), c51_loss=c51.detach().mean(), q_mean=q_taken, grad_norm=grad_norm.detach(),
                       priorities=per_sample.detach().double().cpu().numpy())
        return metrics

    @torch.no_grad()
    def update_target(self) -> None:
        """Hard copy of the online network's parameters into the target network."""
        for t, o in zip(self.target.parameters(), self.online.parameters()):
            t.copy_(o)

    # -- state ---------------------------------------------------------------------
    def modules(self) -> dict[str, nn.Module]:
        """Every network by name."""
        mods = {"online": self.online, "target": self.target}
        if self.curl_head is not None:
            mods.update(curl_head=self.curl_head, momentum=self.momentum)
        elif self.objective is not None:
            mods.update(objective=self.objective, momentum=self.momentum)
        return mods

    def state_dict(self) -> dict:
        """Networks (noise buffers included), optimizer, RNGs and the update count: tensors,
        ints and strings only (``torch.load(weights_only=True)`` reads it)."""
        return {"modules": {name: m.state_dict() for name, m in self.modules().items()},
                "optimizer": self.optimizer.state_dict(),
                "generator": self.generator.get_state(),
                "rng": json.dumps(self.rng.bit_generator.state),
                "updates": self.updates}

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict` output; CheckpointError if it is of another agent."""
        try:
            for name, module in self.modules().items():
                module.load_state_dict(state["modules"][name])
            self.optimizer.load_state_dict(state["optimizer"])
            self.generator.set_state(state["generator"].cpu())  # a CUDA generator's state is a CPU tensor too
            self.rng.bit_generator.state = json.loads(state["rng"])
            self.updates = int(state["updates"])
        except (KeyError, RuntimeError, ValueError, TypeError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise CheckpointError(f"DER agent state does not fit this agent ({first})") from None
