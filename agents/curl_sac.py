"""CURL: SAC from pixels whose encoder is also trained by a contrastive loss.

Read top to bottom: hyperparameters, networks, acting, one update, state.

The default agent is the update behind CURL's published numbers (MishaLaskin/curl,
``curl_sac.py``), step for step; ``agents/plain.py`` writes that update out with the
reference's own optimizers and ``tests/test_agent.py`` checks the two agree.

One update (``k`` counts updates from 0):
    1. critic step: twin-Q loss against the target ``r + γ (min Q̄(s', a') − α log π(a'|s'))``,
       gradient into the Q MLPs and the critic encoder;
    2. if k % actor_update_every == 0: actor step on detached conv features, then α step;
    3. if k % target_update_every == 0: EMA of the target Q (critic_tau) and of the target
       encoder (encoder_tau), which is also CURL's momentum key encoder;
    4. CURL step: anchors from the critic encoder, keys from the key encoder *after* step 3.
The reference's first update comes at agent step 1000 (even), so it steps the actor and
the targets; here update k=0 does too.

Objectives (``objective=``, :mod:`curlrl.objectives`): step 4 is the chosen objective's
step in the same place, with the same optimizer layout (its encoder gradient through the
CURL Adam state below; its own parameters, if any, in their own Adam at curl_lr). View a
is the obs crop through the critic encoder; view b, an independent crop of obs, goes
through the key encoder (curl, moco, byol: ``keys="momentum"``; BYOL also takes the online
features of b and the key features of a) or through the critic encoder with gradient (the
siamese objectives). Objectives with momentum heads EMA them at step 3, at encoder_tau.
supcon's batches are drawn in episode windows (:meth:`curlrl.replay.BaseReplayBuffer.sample_windows`).

Encoder optimizer state (``encoder_adam``):
    reference (default): the critic optimizer covers Q + encoder (critic_lr, critic_beta), so
        the critic gradient reaches the encoder through an Adam state that sees only critic
        gradients. The reference steps the CURL gradient through *two* Adams over the
        encoder (its ``encoder_optimizer`` and ``cpc_optimizer``), zeroed, fed the same
        gradient and stepped together with the same lr and betas (0.9, 0.999): their
        moments are identical at every step, so together they move each weight by
        2·lr·m̂/(√v̂+ε), which is exactly one Adam state at 2 × encoder_lr. Here that is
        the ``encoder_curl`` optimizer at 2 × encoder_lr: the same step, half the work.
        W has its own Adam at curl_lr (the reference: encoder_lr, one step).
    per_loss (variant): as reference, but the CURL state steps at 1 × encoder_lr (half the
        reference's CURL step) and the critic's encoder state at encoder_lr.
    shared (variant): one Adam state on the encoder for both gradients. The critic gradient
        on the encoder is several to tens of times the CURL gradient (benchmarks/grad_scale.py;
        figures in benchmarks/README.md), so the CURL step is divided by the critic's second
        moment and moves the encoder that much less far than the critic's step.

Update modes:
    exact (default): the sequence above with redundant passes shared where the math is
        unchanged: the actor phase and the CURL anchor use one conv pass of the updated
        encoder; the target-Q pass and the key pass run as one batch on updates without
        an EMA step (on EMA updates the keys need the moved key encoder, a second pass of
        the same size: no extra FLOPs).
    fused (variant, needs encoder_adam=shared): the CURL loss uses the critic pass's anchor
        features and keys from before the EMA, and is summed with the critic loss into one
        backward; every parameter is stepped once per update. Fewer FLOPs, but the
        encoder takes one Adam step per update instead of two, and it learned more slowly
        per env step in our cartpole runs (benchmarks/README.md).
"""
from __future__ import annotations

import copy
import functools
import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from curlrl.agents.networks import Actor, TwinQ
from curlrl.augment import center_crop, make_views
from curlrl.ema import ema_update
from curlrl.encoder import EncoderHead, ForeignEncoder, ForeignPixelEncoder, PixelEncoder, orthogonal_init
from curlrl.objectives import Curl, Objective, build_objective
from curlrl.options import EncoderConfig, option

ENCODER_ADAM = ("reference", "per_loss", "shared")  # layouts of the encoder's Adam states
CAPTURE = ("off", "compile", "cudagraphs")          # how the networks run: eager or compiled


@dataclass
class AgentConfig(EncoderConfig):
    """Hyperparameters of :class:`CurlSacAgent`; defaults are CURL's (paper Table 3).

    The encoder and CURL fields (crop_size ... target_update_every) are
    :class:`curlrl.options.EncoderConfig`'s, shared with offline pretraining."""

    hidden_dim: int = option(1024, "width of the actor and Q MLPs", check="> 0")
    discount: float = option(0.99, "discount gamma", check="in [0, 1)")
    init_temperature: float = option(0.1, "initial SAC temperature alpha", check="> 0")
    alpha_lr: float = option(1e-4, "Adam learning rate of the temperature", check="> 0")
    alpha_beta: float = option(0.5, "Adam beta1 of the temperature", check="in [0, 1)")
    actor_lr: float = option(1e-3, "Adam learning rate of the actor (CURL: 2e-4 for cheetah-run)", check="> 0")
    actor_beta: float = option(0.9, "Adam beta1 of the actor", check="in [0, 1)")
    critic_lr: float = option(1e-3, "Adam learning rate of the Q MLPs, and of the critic gradient on the encoder "
                                    "with encoder_adam=reference (CURL: 2e-4 for cheetah-run)", check="> 0")
    critic_beta: float = option(0.9, "Adam beta1 of the critic and of the encoder", check="in [0, 1)")
    critic_tau: float = option(0.01, "EMA rate of the target Q MLPs", check="in (0, 1]")
    actor_update_every: int = option(2, "actor and temperature step every N updates", check="> 0")
    log_std_min: float = option(-10.0, "lower bound of the actor's log standard deviation")
    log_std_max: float = option(2.0, "upper bound of the actor's log standard deviation")
    curl: bool = option(True, "the auxiliary objective (objective=, CURL's by default); false: pixel SAC + "
                              "random crop (RAD-like), no auxiliary loss. Reports "
                              "name the algorithm by it (curl, pixel_sac_crop) rather than compare it with the "
                              "paper", compare=False)
    update_mode: str = option("exact", "exact: the reference's update; fused: a faster variant that sums the "
                                       "critic and CURL losses (needs encoder_adam=shared; agents/curl_sac.py)",
                              choices=("fused", "exact"))
    encoder_adam: str = option("reference", "Adam states on the encoder: reference (the default, CURL's), per_loss "
                                            "or shared (variants; agents/curl_sac.py)", choices=ENCODER_ADAM)
    channels_last: bool = option(True, "NHWC conv memory layout (faster on CPU); same math", operational=True)
    amp: str = option("off", "bf16: conv trunks under bfloat16 autocast (for GPUs; the rest stays float32); "
                             "off: float32 throughout", choices=("off", "bf16"))
    capture: str = option("off", "how the networks run: off (eager), compile (torch.compile every network: fewer, "
                                 "fused kernels) or cudagraphs (compile + CUDA graphs, mode reduce-overhead; CUDA "
                                 "only). Same math as eager (tested on the CPU)", choices=CAPTURE, operational=True)


class CurlSacAgent:
    """SAC + CURL on uint8 frame stacks.

    Args:
        obs_shape: (3k, H, W) of the uncropped observations (e.g. (9, 100, 100)).
        action_dim: action size; actions are in [-1, 1].
        config: hyperparameters.
        device: torch device for every network and the crop.
        seed: seeds the crop generator (network init uses torch's global RNG).
        trunk: a bring-your-own :class:`~curlrl.encoder.ForeignEncoder` used instead of
            the conv stack (:class:`~curlrl.encoder.ForeignPixelEncoder`; num_layers and
            num_filters then go unused). Its ``obs_shape`` must be (3k, crop_size, crop_size).
            It keeps its weights and always runs in eval mode; ``init_encoder(None,
            freeze_conv=True)`` freezes it. ``channels_last`` leaves its memory layout
            alone, and ``amp='bf16'`` does not apply to it (ValueError).
    """

    def __init__(self, obs_shape: tuple[int, int, int], action_dim: int, config: AgentConfig | None = None,
                 device: str | torch.device = "cpu", seed: int = 0, trunk: ForeignEncoder | None = None) -> None:
        self.cfg = cfg = config or AgentConfig()
        if cfg.update_mode not in ("fused", "exact"):
            raise ValueError(f"update_mode must be 'fused' or 'exact', got {cfg.update_mode!r}")
        if cfg.encoder_adam not in ENCODER_ADAM:
            raise ValueError(f"encoder_adam must be one of {', '.join(ENCODER_ADAM)}, got {cfg.encoder_adam!r}")
        if cfg.amp not in ("off", "bf16"):
            raise ValueError(f"amp must be 'off' or 'bf16', got {cfg.amp!r}")
        if cfg.capture not in CAPTURE:
            raise ValueError(f"capture must be one of {', '.join(CAPTURE)}, got {cfg.capture!r}")
        if cfg.capture == "cudagraphs" and torch.device(device).type != "cuda":
            raise ValueError(f"capture='cudagraphs' needs a CUDA device, got {device}")
        if not cfg.curl and cfg.objective != "curl":
            raise ValueError(f"objective={cfg.objective} needs curl=true: curl=false turns the auxiliary objective off")
        if cfg.update_mode == "fused" and cfg.curl and cfg.objective != "curl":
            raise ValueError(f"update_mode='fused' sums CURL's loss into the critic's; it does not apply to "
                             f"objective={cfg.objective}")
        if cfg.update_mode == "fused" and cfg.curl and cfg.encoder_adam != "shared":
            raise ValueError(f"update_mode='fused' needs encoder_adam='shared' (it sums the critic and CURL "
                             f"losses into one gradient), got encoder_adam={cfg.encoder_adam!r}")
        self.device = torch.device(device)
        self.obs_shape, self.action_dim = tuple(obs_shape), action_dim
        crop_shape = (obs_shape[0], cfg.crop_size, cfg.crop_size)

        if trunk is None:
            self.encoder = PixelEncoder(crop_shape, cfg.feature_dim, cfg.num_layers, cfg.num_filters,
                                        cfg.encoder_tanh).to(self.device)
        else:
            if tuple(trunk.obs_shape) != crop_shape:
                raise ValueError(f"the encoder trunk takes obs_shape {tuple(trunk.obs_shape)}, but the agent feeds "
                                 f"{crop_shape} (channels of the observations, crop_size, crop_size)")
            if cfg.amp == "bf16":
                raise ValueError("amp='bf16' applies to curlrl's conv stack, not to a bring-your-own trunk")
            self.encoder = ForeignPixelEncoder(trunk, cfg.feature_dim, cfg.encoder_tanh).to(self.device)
        # The actor sees the critic's conv features (tied weights, detached) through its own head.
        self.actor_head = EncoderHead(self.encoder.conv_dim, cfg.feature_dim, cfg.encoder_tanh).to(self.device)
        self.actor_head.apply(orthogonal_init)  # as the reference initialises its whole actor
        self.actor = Actor(cfg.feature_dim, action_dim, cfg.hidden_dim, cfg.log_std_min,
                           cfg.log_std_max).to(self.device)
        self.q = TwinQ(cfg.feature_dim, action_dim, cfg.hidden_dim).to(self.device)
        self.encoder_target = copy.deepcopy(self.encoder).requires_grad_(False)
        self.q_target = copy.deepcopy(self.q).requires_grad_(False)
        self.objective: Objective | None = build_objective(cfg, cfg.feature_dim).to(self.device) if cfg.curl else None
        self.log_alpha = torch.tensor(math.log(cfg.init_temperature), device=self.device, requires_grad=True)
        self.target_entropy = -float(action_dim)
        if cfg.channels_last and trunk is None:  # a foreign trunk keeps its own memory layout
            for enc in (self.encoder, self.encoder_target):
                enc.conv.channels_last = True
                enc.conv.to(memory_format=torch.channels_last)
        if cfg.amp == "bf16":
            for enc in (self.encoder, self.encoder_target):
                enc.conv.amp_dtype = torch.bfloat16

        self.optimizers = self._build_optimizers()
        self.generator = torch.Generator(self.device).manual_seed(seed)
        self.view = make_views(cfg.augment, cfg.crop_size)  # "crop": random_crop itself
        self.updates = 0
        if cfg.capture != "off":
            # nn.Module.compile keeps parameter names, so state dicts and checkpoints are unchanged.
            for net in (self.encoder.conv, self.encoder.head, self.encoder_target.conv, self.encoder_target.head,
                        self.actor_head, self.actor, self.q, self.q_target):
                net.compile(**self.compile_options())

    def compile_options(self) -> dict:
        """Keyword arguments of ``torch.compile`` for ``capture`` (inductor; CUDA graphs if asked)."""
        return {"mode": "reduce-overhead"} if self.cfg.capture == "cudagraphs" else {}

    def _build_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        """One Adam per loss and parameter set, laid out by ``encoder_adam`` (module docstring).

        On CUDA each optimizer is the fused implementation (one kernel per step; same math).
        """
        cfg = self.cfg
        adam = functools.partial(torch.optim.Adam, fused=True) if self.device.type == "cuda" else torch.optim.Adam
        # Frozen parameters (freeze_conv) are left out: no optimizer state, no weight change.
        encoder = [p for p in self.encoder.parameters() if p.requires_grad]
        critic = [*self.q.parameters(), *encoder] if cfg.encoder_adam == "reference" else list(self.q.parameters())
        optimizers = {
            "critic": adam(critic, lr=cfg.critic_lr, betas=(cfg.critic_beta, 0.999)),
            "actor": adam([*self.actor_head.parameters(), *self.actor.parameters()], lr=cfg.actor_lr,
                          betas=(cfg.actor_beta, 0.999)),
            "alpha": adam([self.log_alpha], lr=cfg.alpha_lr, betas=(cfg.alpha_beta, 0.999)),
        }
        if cfg.encoder_adam != "reference":
            optimizers["encoder"] = adam(encoder, lr=cfg.encoder_lr, betas=(cfg.critic_beta, 0.999))
        if self.objective is not None:
            curl_lr = cfg.encoder_lr if cfg.curl_lr is None else cfg.curl_lr
            own = [p for p in self.objective.parameters() if p.requires_grad]  # not momentum heads
            if own:  # the metric-learning losses have no parameters of their own
                optimizers[self.objective_optimizer] = adam(own, lr=curl_lr)
            if cfg.encoder_adam == "reference":  # = the reference's two identical Adams (docstring)
                optimizers["encoder_curl"] = adam(encoder, lr=2 * cfg.encoder_lr)
            elif cfg.encoder_adam == "per_loss":
                optimizers["encoder_curl"] = adam(encoder, lr=cfg.encoder_lr, betas=(cfg.critic_beta, 0.999))
        return optimizers

    def init_encoder(self, state: dict[str, torch.Tensor] | None, freeze_conv: bool = False) -> None:
        """Start from pretrained encoder weights, before the first update.

        ``state`` (a :class:`PixelEncoder` state dict, or None to keep the random init)
        goes into the critic encoder, its EMA/key copy and so the tied actor conv.
        ``freeze_conv`` fixes the conv trunk: it leaves every optimizer, which are
        rebuilt; the Linear+LayerNorm heads, MLPs and W still learn.
        """
        if state is not None:
            self.encoder.load_state_dict(state)
            self.encoder_target.load_state_dict(state)
        self.encoder.conv.requires_grad_(not freeze_conv)
        self.optimizers = self._build_optimizers()

    @property
    def alpha(self) -> torch.Tensor:
        return self.log_alpha.exp()

    @property
    def curl_head(self) -> Curl | None:
        """CURL's bilinear head when ``objective=curl`` (the default), else None."""
        return self.objective if isinstance(self.objective, Curl) else None

    @property
    def objective_module(self) -> str:
        """The objective's name in :meth:`modules` and checkpoints: ``curl_head`` (CURL's, as
        before there were others) or ``objective``."""
        return "curl_head" if self.cfg.objective == "curl" else "objective"

    @property
    def objective_optimizer(self) -> str:
        """The name of the Adam over the objective's own parameters: ``curl`` or ``objective``."""
        return "curl" if self.cfg.objective == "curl" else "objective"

    def modules(self) -> dict[str, torch.nn.Module]:
        """Every network by name (targets included)."""
        mods = dict(encoder=self.encoder, actor_head=self.actor_head, actor=self.actor, q=self.q,
                    encoder_target=self.encoder_target, q_target=self.q_target)
        if self.objective is not None:
            mods[self.objective_module] = self.objective
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
        noise = self._noise(len(x)) if sample else None
        mu, pi, _, _ = self.actor(self.actor_head(self.encoder.conv(x)), sample=sample, noise=noise)
        action = (pi if sample else mu).cpu().numpy()
        return action[0] if single else action

    # -- learning ------------------------------------------------------------------
    def _to_device(self, batch: dict) -> dict[str, torch.Tensor]:
        return {k: torch.as_tensor(v).to(self.device, non_blocking=True) for k, v in batch.items()}

    def update(self, batch: dict) -> dict[str, torch.Tensor]:
        """One SAC (+ CURL) update on an uncropped replay batch; returns its metrics.

        ``batch``: ``obs``/``next_obs`` (B, 3k, H, W) uint8, ``action`` (B, A),
        ``reward`` (B, 1), ``not_done`` (B, 1) — numpy arrays or tensors. The crops are
        drawn here, on the agent's device: obs (also the CURL anchor), next_obs, and an
        independent crop of obs (the CURL positive), in that order.

        The metrics (critic_loss, q_mean, curl_loss: the objective's loss, alpha; actor_loss,
        alpha_loss, entropy on actor steps; the objective's own as ``aux_<name>``) are
        detached 0-dim tensors on the agent's device, so an
        update never waits for a GPU; ``float(m["critic_loss"])`` reads one (and waits).
        Training reads them once per episode.
        """
        cfg, b = self.cfg, self._to_device(batch)
        if cfg.capture == "cudagraphs":
            torch.compiler.cudagraph_mark_step_begin()  # the last update's graph outputs may be reused
        k = self.updates
        self.updates += 1
        actor_step, target_step = k % cfg.actor_update_every == 0, k % cfg.target_update_every == 0
        objective = self.objective
        curl = objective is not None
        fused = curl and cfg.update_mode == "fused"
        # Keys from the key encoder as it is now are exact unless the EMA moves it before the CURL step.
        keys = curl and objective.keys == "momentum" and (fused or not target_step)
        obs, positive, target_q, z_key = self.crops_and_targets(b, keys=keys)
        metrics: dict[str, torch.Tensor] = {}

        h = self.encoder.conv(obs)
        z = self.encoder.head(h)
        q1, q2 = self.q(z, b["action"].float())
        critic_loss = F.mse_loss(q1, target_q) + F.mse_loss(q2, target_q)
        metrics.update(critic_loss=critic_loss.detach(), q_mean=q1.detach().mean())
        critic_optimizers = ["critic"] if "encoder" not in self.optimizers else ["encoder", "critic"]
        if fused:
            curl_loss = objective.loss(z, z_key)
            self._step([*critic_optimizers, "curl"], critic_loss + curl_loss)
            metrics["curl_loss"] = curl_loss.detach()
        else:
            self._step(critic_optimizers, critic_loss)
            # Same (updated) conv weights, same input: one pass serves the actor and the anchor.
            if curl or actor_step:
                with torch.set_grad_enabled(curl):
                    h = self.encoder.conv(obs)

        if actor_step:
            metrics.update(self._update_actor_and_alpha(h.detach()))
        if target_step:
            ema_update(self.q_target, self.q, cfg.critic_tau)
            ema_update(self.encoder_target, self.encoder, cfg.encoder_tau)
            if curl:
                objective.momentum_update(cfg.encoder_tau)

        if curl and not fused:
            curl_loss, aux = self._objective_loss(self.encoder.head(h), obs, positive, z_key, b)
            names = [self.curl_encoder_optimizer]
            if self.objective_optimizer in self.optimizers:
                names.append(self.objective_optimizer)
            self._step(names, curl_loss)
            metrics["curl_loss"] = curl_loss.detach()
            metrics.update({f"aux_{k}": v for k, v in aux.items()})
        metrics["alpha"] = self.alpha.detach()
        return metrics

    def _objective_loss(self, a: torch.Tensor, obs: torch.Tensor, positive: torch.Tensor,
                        z_key: torch.Tensor | None, b: dict[str, torch.Tensor]):
        """The objective's (loss, metrics) for anchor features ``a`` of the obs crop and the
        positive crop (module docstring: where view b's features come from)."""
        objective, extra = self.objective, {}
        if objective.keys == "momentum":
            with torch.no_grad():
                key = self.encoder_target(positive) if z_key is None else z_key
                if objective.symmetric:
                    extra["a_key"] = self.encoder_target(obs)
            if objective.symmetric:
                extra["b_online"] = self.encoder(positive)
        else:
            key = self.encoder(positive)
        if objective.needs_groups:
            if "episode" not in b:
                raise ValueError(f"objective {objective.name} needs batches drawn in episode windows "
                                 f"(replay.sample_windows): the batch has no 'episode' and 'time'")
            extra.update(episode=b["episode"], time=b["time"])
        return objective(a, key, **extra)

    def sample(self, replay, batch_size: int) -> dict:
        """A replay batch as this agent's objective needs it: uniform, or in episode windows
        for supcon (``supcon_group`` transitions within ``supcon_window`` steps)."""
        if self.objective is not None and self.objective.needs_groups:
            return replay.sample_windows(batch_size, self.objective.group, self.objective.window)
        return replay.sample(batch_size)

    @torch.no_grad()
    def crops_and_targets(self, b: dict[str, torch.Tensor], keys: bool = True
                          ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor, torch.Tensor | None]:
        """Draw the crops of a device batch and compute what needs no gradient.

        Returns the obs crop (critic input and CURL anchor), the positive crop (an
        independent crop of obs; None without CURL), the critic target
        ``r + not_done * gamma * (min Q_target(s', a') - alpha log pi(a'|s'))`` (B, 1) and,
        if ``keys``, the momentum key encoder's features of the positive (else None).
        """
        cfg = self.cfg
        obs = self.view(b["obs"], self.generator)
        next_obs = self.view(b["next_obs"], self.generator)
        _, next_pi, next_log_pi, _ = self.actor(self.actor_head(self.encoder.conv(next_obs)),
                                                noise=self._noise(len(next_obs)))
        positive = z_key = None
        if self.objective is not None:
            positive = self.view(b["obs"], self.generator)
        if keys and positive is not None:
            # target encoder = momentum key encoder: one batched pass for both uses
            h_target, h_key = self.encoder_target.conv(torch.cat([next_obs, positive])).chunk(2)
            z_key = self.encoder_target.head(h_key)
        else:
            h_target = self.encoder_target.conv(next_obs)
        target_q1, target_q2 = self.q_target(self.encoder_target.head(h_target), next_pi)
        target_v = torch.min(target_q1, target_q2) - self.alpha * next_log_pi
        target_q = b["reward"].float() + b["not_done"].float() * cfg.discount * target_v
        return obs, positive, target_q, z_key

    def _noise(self, batch_size: int) -> torch.Tensor:
        """Policy noise drawn outside the (possibly compiled) actor, from torch's global RNG."""
        return torch.randn(batch_size, self.action_dim, device=self.device)

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
        _, pi, log_pi, _ = self.actor(self.actor_head(h), noise=self._noise(len(h)))
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
