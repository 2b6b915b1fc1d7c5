"""CURL: SAC from pixels whose encoder is also trained by a contrastive loss.

Read top to bottom: hyperparameters, networks, acting, one update, state.

Parameter ownership (each loss's gradient reaches a parameter through one optimizer):
    encoder      -> critic encoder (conv trunk + Linear/LayerNorm head); with
                    encoder_adam="shared" it takes the critic's and the CURL gradients
    encoder_curl -> the same encoder parameters, CURL gradients only (encoder_adam="per_loss")
    critic       -> twin Q MLPs
    actor        -> actor's own Linear/LayerNorm head + policy MLP (conv tied to the critic's)
    alpha        -> log temperature
    curl         -> bilinear W of the CURL head
The critic-target encoder (EMA of the critic encoder) is the CURL momentum key encoder.

Encoder Adam state. On the encoder the critic-loss gradient is ~7x larger than the
CURL gradient at 20k env steps and ~30x at 100k (benchmarks/grad_scale.py, cartpole
runs). With one shared Adam ("shared", the default) the CURL step is divided by the
critic's second moment and rides the critic's momentum, so it moves the encoder ~1/7 to
~1/30 as far as the critic step.
"per_loss" keeps one Adam state per loss as the reference code does (its critic
optimizer includes the encoder; its CURL step uses separate optimizers), without the
reference's duplicated CURL step. It needs update_mode="exact" (fused has one gradient).

Update modes:
    exact (default): the reference's sequence (critic step; actor/alpha step; CURL step
        on a fresh anchor pass with the updated encoder), so the encoder optimizer steps
        twice per update, once per loss. Redundant passes are shared: the actor phase and
        the CURL anchor use one conv pass, and target and key encoder passes run as one
        batch, which is why the momentum update comes last (after the CURL step).
    fused: the CURL loss uses the critic pass's anchor features and is summed with the
        critic loss into one backward; every parameter is stepped once per update. 1.4x
        fewer FLOPs, but the encoder takes one Adam step per update instead of two (about
        half the distance), and it learned more slowly per env step in our cartpole runs
        (benchmarks/README.md), so it is the opt-in fast mode.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from curlrl.agents.networks import Actor, TwinQ
from curlrl.augment import center_crop, random_crop
from curlrl.contrastive import CurlHead
from curlrl.ema import ema_update
from curlrl.encoder import EncoderHead, PixelEncoder


@dataclass
class AgentConfig:
    """Hyperparameters of :class:`CurlSacAgent`; defaults are CURL's (paper Table 3)."""

    crop_size: int = 84              # random crop (train) / centre crop (act) of the rendered frames
    feature_dim: int = 50            # encoder output size
    num_layers: int = 4              # conv layers, first stride 2
    num_filters: int = 32            # channels per conv layer
    encoder_tanh: bool = False       # tanh after LayerNorm (paper text) vs none (reference code)
    hidden_dim: int = 1024           # actor and Q MLP width
    discount: float = 0.99           # gamma
    init_temperature: float = 0.1    # initial SAC alpha
    alpha_lr: float = 1e-4           # temperature learning rate
    alpha_beta: float = 0.5          # Adam beta1 for the temperature
    actor_lr: float = 1e-3           # 2e-4 for cheetah-run
    actor_beta: float = 0.9          # Adam beta1, actor
    critic_lr: float = 1e-3          # Q MLPs; 2e-4 for cheetah-run
    critic_beta: float = 0.9         # Adam beta1, critic and encoder
    encoder_lr: float = 1e-3         # critic encoder (critic and CURL gradients); 2e-4 for cheetah-run
    curl_lr: float = 1e-3            # bilinear W (the reference used encoder_lr)
    critic_tau: float = 0.01         # EMA rate of the target Q MLPs
    encoder_tau: float = 0.05        # EMA rate of the target / momentum key encoder
    actor_update_every: int = 2      # actor and alpha step every N updates
    target_update_every: int = 2     # EMA target update every N updates
    log_std_min: float = -10.0       # actor log-std range
    log_std_max: float = 2.0
    curl: bool = True                # contrastive auxiliary loss; false = pixel SAC + crop (RAD-like)
    update_mode: str = "exact"       # "exact" (reference math) or "fused" (1.4x faster), see the module docstring
    encoder_adam: str = "shared"     # "shared": one Adam state for critic + CURL gradients on the
                                     # encoder; "per_loss": one per loss, as the reference (exact only)
    channels_last: bool = True       # NHWC conv memory layout (faster on CPU)
    amp: str = "off"                 # "bf16": conv trunks under bfloat16 autocast (for GPUs; the rest
                                     # stays float32); "off": float32 throughout


class CurlSacAgent:
    """SAC + CURL on uint8 frame stacks.

    Args:
        obs_shape: (3k, H, W) of the uncropped observations (e.g. (9, 100, 100)).
        action_dim: action size; actions are in [-1, 1].
        config: hyperparameters.
        device: torch device for every network and the crop.
        seed: seeds the crop generator (network init uses torch's global RNG).
    """

    def __init__(self, obs_shape: tuple[int, int, int], action_dim: int, config: AgentConfig | None = None,
                 device: str | torch.device = "cpu", seed: int = 0) -> None:
        self.cfg = cfg = config or AgentConfig()
        if cfg.update_mode not in ("fused", "exact"):
            raise ValueError(f"update_mode must be 'fused' or 'exact', got {cfg.update_mode!r}")
        if cfg.encoder_adam not in ("shared", "per_loss"):
            raise ValueError(f"encoder_adam must be 'shared' or 'per_loss', got {cfg.encoder_adam!r}")
        if cfg.amp not in ("off", "bf16"):
            raise ValueError(f"amp must be 'off' or 'bf16', got {cfg.amp!r}")
        if cfg.encoder_adam == "per_loss" and cfg.update_mode != "exact":
            raise ValueError("encoder_adam='per_loss' needs update_mode='exact' (fused sums both losses "
                             "into one gradient)")
        self.device = torch.device(device)
        self.obs_shape, self.action_dim = tuple(obs_shape), action_dim
        crop_shape = (obs_shape[0], cfg.crop_size, cfg.crop_size)

        self.encoder = PixelEncoder(crop_shape, cfg.feature_dim, cfg.num_layers, cfg.num_filters,
                                    cfg.encoder_tanh).to(self.device)
        # The actor sees the critic's conv features (tied weights, detached) through its own head.
        self.actor_head = EncoderHead(self.encoder.conv_dim, cfg.feature_dim, cfg.encoder_tanh).to(self.device)
        self.actor = Actor(cfg.feature_dim, action_dim, cfg.hidden_dim, cfg.log_std_min, cfg.log_std_max).to(self.device)
        self.q = TwinQ(cfg.feature_dim, action_dim, cfg.hidden_dim).to(self.device)
        self.encoder_target = copy.deepcopy(self.encoder).requires_grad_(False)
        self.q_target = copy.deepcopy(self.q).requires_grad_(False)
        self.curl_head = CurlHead(cfg.feature_dim).to(self.device) if cfg.curl else None
        self.log_alpha = torch.tensor(math.log(cfg.init_temperature), device=self.device, requires_grad=True)
        self.target_entropy = -float(action_dim)
        if cfg.channels_last:
            for enc in (self.encoder, self.encoder_target):
                enc.conv.channels_last = True
                enc.conv.to(memory_format=torch.channels_last)
        if cfg.amp == "bf16":
            for enc in (self.encoder, self.encoder_target):
                enc.conv.amp_dtype = torch.bfloat16

        adam = torch.optim.Adam
        self.optimizers = {
            "encoder": self._encoder_optimizer(),
            "critic": adam(self.q.parameters(), lr=cfg.critic_lr, betas=(cfg.critic_beta, 0.999)),
            "actor": adam([*self.actor_head.parameters(), *self.actor.parameters()], lr=cfg.actor_lr,
                          betas=(cfg.actor_beta, 0.999)),
            "alpha": adam([self.log_alpha], lr=cfg.alpha_lr, betas=(cfg.alpha_beta, 0.999)),
        }
        if self.curl_head is not None:
            self.optimizers["curl"] = adam(self.curl_head.parameters(), lr=cfg.curl_lr)
            if cfg.encoder_adam == "per_loss":
                self.optimizers["encoder_curl"] = self._encoder_optimizer()
        self.generator = torch.Generator(self.device).manual_seed(seed)
        self.updates = 0

    def _encoder_optimizer(self) -> torch.optim.Optimizer:
        # Frozen parameters (freeze_conv) are left out: no optimizer state, no weight change.
        params = [p for p in self.encoder.parameters() if p.requires_grad]
        return torch.optim.Adam(params, lr=self.cfg.encoder_lr, betas=(self.cfg.critic_beta, 0.999))

    def init_encoder(self, state: dict[str, torch.Tensor] | None, freeze_conv: bool = False) -> None:
        """Start from pretrained encoder weights, before the first update.

        ``state`` (a :class:`PixelEncoder` state dict, or None to keep the random init)
        goes into the critic encoder, its EMA/key copy and so the tied actor conv.
        ``freeze_conv`` fixes the conv trunk: it leaves the encoder optimizer, which is
        rebuilt; the Linear+LayerNorm heads, MLPs and W still learn.
        """
        if state is not None:
            self.encoder.load_state_dict(state)
            self.encoder_target.load_state_dict(state)
        self.encoder.conv.requires_grad_(not freeze_conv)
        for name in ("encoder", "encoder_curl"):
            if name in self.optimizers:
                self.optimizers[name] = self._encoder_optimizer()

    @property
    def alpha(self) -> torch.Tensor:
        return self.log_alpha.exp()

    def modules(self) -> dict[str, torch.nn.Module]:
        """Every network by name (targets included)."""
        mods = dict(encoder=self.encoder, actor_head=self.actor_head, actor=self.actor, q=self.q,
                    encoder_target=self.encoder_target, q_target=self.q_target)
        if self.curl_head is not None:
            mods["curl_head"] = self.curl_head
        return mods

    # -- acting --------------------------------------------------------------------
    @torch.no_grad()
    def act(self, obs: np.ndarray, sample: bool = False) -> np.ndarray:
        """Action in [-1, 1] for one (3k, H, W) uint8 observation (or a batch of them).

        ``sample=False`` gives the mean action (evaluation); ``sample=True`` draws from
        the policy (exploration). The observation is centre-cropped to ``crop_size``.
        """
        x = torch.as_tensor(np.asarray(obs), device=self.device)
        single = x.ndim == 3
        x = center_crop(x[None] if single else x, self.cfg.crop_size)
        mu, pi, _, _ = self.actor(self.actor_head(self.encoder.conv(x)), sample=sample)
        action = (pi if sample else mu).cpu().numpy()
        return action[0] if single else action

    # -- learning ------------------------------------------------------------------
    def _to_device(self, batch: dict) -> dict[str, torch.Tensor]:
        return {k: torch.as_tensor(v).to(self.device, non_blocking=True) for k, v in batch.items()}

    def update(self, batch: dict) -> dict[str, torch.Tensor]:
        """One SAC (+ CURL) update on an uncropped replay batch; returns its metrics.

        ``batch``: ``obs``/``next_obs`` (B, 3k, H, W) uint8, ``action`` (B, A),
        ``reward`` (B, 1), ``not_done`` (B, 1) — numpy arrays or tensors. The crops are
        drawn here, on the agent's device: obs (also the CURL anchor), an independent
        crop of obs (the CURL positive) and a crop of next_obs.

        The metrics (critic_loss, q_mean, curl_loss, alpha; actor_loss, alpha_loss,
        entropy on actor steps) are detached 0-dim tensors on the agent's device, so an
        update never waits for a GPU; ``float(m["critic_loss"])`` reads one (and waits).
        Training reads them once per episode.
        """
        cfg, b = self.cfg, self._to_device(batch)
        self.updates += 1
        obs, target_q, z_key = self.crops_and_targets(b)
        metrics: dict[str, torch.Tensor] = {}

        h = self.encoder.conv(obs)
        z = self.encoder.head(h)
        q1, q2 = self.q(z, b["action"].float())
        critic_loss = F.mse_loss(q1, target_q) + F.mse_loss(q2, target_q)
        metrics.update(critic_loss=critic_loss.detach(), q_mean=q1.detach().mean())
        fused = cfg.update_mode == "fused" and self.curl_head is not None
        if fused:
            curl_loss = self.curl_head.loss(z, z_key)
            self._step(["encoder", "critic", "curl"], critic_loss + curl_loss)
            metrics["curl_loss"] = curl_loss.detach()
        else:
            self._step(["encoder", "critic"], critic_loss)
            # Same (updated) conv weights, same input: one pass serves the actor and the anchor.
            if self.curl_head is not None or self.updates % cfg.actor_update_every == 0:
                with torch.set_grad_enabled(self.curl_head is not None):
                    h = self.encoder.conv(obs)

        if self.updates % cfg.actor_update_every == 0:
            metrics.update(self._update_actor_and_alpha(h.detach()))

        if self.curl_head is not None and not fused:
            curl_loss = self.curl_head.loss(self.encoder.head(h), z_key)
            self._step([self.curl_encoder_optimizer, "curl"], curl_loss)
            metrics["curl_loss"] = curl_loss.detach()

        if self.updates % cfg.target_update_every == 0:
            ema_update(self.q_target, self.q, cfg.critic_tau)
            ema_update(self.encoder_target, self.encoder, cfg.encoder_tau)
        metrics["alpha"] = self.alpha.detach()
        return metrics

    @torch.no_grad()
    def crops_and_targets(self, b: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Draw the crops of a device batch and compute what needs no gradient.

        Returns the obs crop (critic input and CURL anchor), the critic target
        ``r + not_done * gamma * (min Q_target(s', a') - alpha log pi(a'|s'))`` (B, 1) and
        the momentum key encoder's features of an independent crop of obs (None without CURL).
        """
        cfg = self.cfg
        obs = random_crop(b["obs"], cfg.crop_size, self.generator)
        next_obs = random_crop(b["next_obs"], cfg.crop_size, self.generator)
        _, next_pi, next_log_pi, _ = self.actor(self.actor_head(self.encoder.conv(next_obs)))
        z_key = None
        if self.curl_head is not None:
            # target encoder = momentum key encoder: one batched pass for both uses
            positive = random_crop(b["obs"], cfg.crop_size, self.generator)
            h_target, h_key = self.encoder_target.conv(torch.cat([next_obs, positive])).chunk(2)
            z_key = self.encoder_target.head(h_key)
        else:
            h_target = self.encoder_target.conv(next_obs)
        target_q1, target_q2 = self.q_target(self.encoder_target.head(h_target), next_pi)
        target_v = torch.min(target_q1, target_q2) - self.alpha * next_log_pi
        return obs, b["reward"].float() + b["not_done"].float() * cfg.discount * target_v, z_key

    @property
    def curl_encoder_optimizer(self) -> str:
        """Name of the optimizer that applies the CURL gradient to the encoder."""
        return "encoder_curl" if "encoder_curl" in self.optimizers else "encoder"

    def _step(self, names: list[str], loss: torch.Tensor) -> None:
        for name in names:
            self.optimizers[name].zero_grad(set_to_none=True)
        loss.backward()
        for name in names:
            self.optimizers[name].step()

    def _update_actor_and_alpha(self, h: torch.Tensor) -> dict[str, torch.Tensor]:
        """Actor and temperature step on detached conv features ``h`` of the obs crop."""
        _, pi, log_pi, _ = self.actor(self.actor_head(h))
        with torch.no_grad():
            z_critic = self.encoder.head(h)
        self.q.requires_grad_(False)  # gradients reach the actor through Q; Q is not stepped here
        q1, q2 = self.q(z_critic, pi)
        self.q.requires_grad_(True)
        actor_loss = (self.alpha.detach() * log_pi - torch.min(q1, q2)).mean()
        self._step(["actor"], actor_loss)
        alpha_loss = (self.alpha * (-log_pi - self.target_entropy).detach()).mean()
        self._step(["alpha"], alpha_loss)
        return dict(actor_loss=actor_loss.detach(), alpha_loss=alpha_loss.detach(), entropy=-log_pi.detach().mean())

    # -- state ---------------------------------------------------------------------
    def state_dict(self) -> dict:
        """Networks, targets, temperature, optimizers, crop RNG and update count (tensors only)."""
        return {
            "modules": {name: m.state_dict() for name, m in self.modules().items()},
            "log_alpha": self.log_alpha.detach().clone(),
            "optimizers": {name: opt.state_dict() for name, opt in self.optimizers.items()},
            "generator": self.generator.get_state(),
            "updates": self.updates,
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict` output (raises KeyError/RuntimeError on a mismatch)."""
        for name, module in self.modules().items():
            module.load_state_dict(state["modules"][name])
        with torch.no_grad():
            self.log_alpha.copy_(state["log_alpha"])
        for name, opt in self.optimizers.items():
            opt.load_state_dict(state["optimizers"][name])
        self.generator.set_state(state["generator"].cpu() if self.device.type == "cpu" else state["generator"])
        self.updates = int(state["updates"])
